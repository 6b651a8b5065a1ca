DROP TABLE encryption_key_check;
ALTER TABLE users DROP COLUMN mfa_failures_mailed_at;
DROP TABLE mfa_failures;
DROP TABLE mfa_challenges;
DROP TABLE recovery_codes;
DROP TABLE totp_authenticators;
ALTER TABLE sessions DROP COLUMN amr;
