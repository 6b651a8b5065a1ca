DROP TABLE email_changes;
-- An account left without a usable password keeps one that no password matches.
UPDATE users SET password_hash = '!' WHERE password_hash IS NULL;
ALTER TABLE users ALTER COLUMN password_hash SET NOT NULL;
ALTER TABLE users DROP COLUMN email_epoch;
