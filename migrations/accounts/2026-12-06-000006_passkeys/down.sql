ALTER TABLE mfa_challenges DROP COLUMN passkey_ceremony;
DROP TABLE webauthn_ceremonies;
DROP TABLE passkeys;
