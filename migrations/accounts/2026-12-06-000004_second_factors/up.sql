-- How each session began (RFC 8176 `amr` values, kept by refresh); its assurance level follows:
-- aal2 exactly when `mfa` is among them.
ALTER TABLE sessions ADD COLUMN amr TEXT[] NOT NULL DEFAULT '{pwd}';

-- A TOTP authenticator. `secret` is the confirmed one, `pending_secret` one being enrolled (both
-- AES-256-GCM sealed under ACCOUNTS_ENCRYPTION_KEY_FILE, bound to the user) by the session
-- `pending_session`, the only one that may confirm it. `last_step` is the newest time step
-- accepted: a code is accepted only for a later step (compare-and-set).
CREATE TABLE totp_authenticators (
    user_id UUID PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret BYTEA,
    pending_secret BYTEA,
    pending_session UUID,
    enabled_at TIMESTAMPTZ,
    last_step BIGINT NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((secret IS NULL) = (enabled_at IS NULL))
);

-- Recovery codes: HMAC-SHA-256 over user id and code, keyed from the encryption key.
CREATE TABLE recovery_codes (
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    digest BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    used_at TIMESTAMPTZ,
    PRIMARY KEY (user_id, digest)
);

-- A password login waiting for its second factor. The client holds the challenge; only its
-- SHA-256 is stored. It is void when the user's token version or email epoch moved since.
CREATE TABLE mfa_challenges (
    digest BYTEA PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_version INT NOT NULL,
    email_epoch INT NOT NULL,
    amr TEXT[] NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    spent_at TIMESTAMPTZ
);
CREATE INDEX mfa_challenges_expiry ON mfa_challenges (expires_at);

-- Failed second-factor codes, for the guessing limits (per user and client, per user).
CREATE TABLE mfa_failures (
    id BIGSERIAL PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client TEXT NOT NULL,
    failed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX mfa_failures_user ON mfa_failures (user_id, failed_at);

ALTER TABLE users ADD COLUMN mfa_failures_mailed_at TIMESTAMPTZ;

-- One sealed sample value: startup opens it to prove ACCOUNTS_ENCRYPTION_KEY_FILE is the key the
-- stored secrets were sealed with.
CREATE TABLE encryption_key_check (
    id BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
    sealed BYTEA NOT NULL
);
