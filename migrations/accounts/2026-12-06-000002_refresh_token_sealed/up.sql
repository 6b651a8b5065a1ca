-- A family's current refresh token, sealed (AES-256-GCM under ACCOUNTS_ENCRYPTION_KEY_FILE, bound to
-- the family), kept only for the grace window of its predecessor: a replay of that predecessor is
-- answered with this token, so a family never has more than one live refresh token.
ALTER TABLE refresh_tokens ADD COLUMN sealed bytea;

CREATE INDEX refresh_tokens_sealed ON refresh_tokens (created_at) WHERE sealed IS NOT NULL;
