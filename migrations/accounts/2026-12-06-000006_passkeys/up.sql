-- A passkey (WebAuthn credential) of a user. The credential id belongs to one account; `passkey`
-- is webauthn-rs's record of it (public key, sign counter, backup flags), read back to verify.
CREATE TABLE passkeys (
    id UUID PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id BYTEA NOT NULL UNIQUE,
    name TEXT NOT NULL,
    passkey JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at TIMESTAMPTZ
);
CREATE INDEX passkeys_user ON passkeys (user_id);

-- A WebAuthn ceremony in progress: webauthn-rs's state, kept here and never sent to the client
-- (5 minutes, single use). A registration records whose account and session it is and the
-- account's token version and email epoch; a second-factor ceremony belongs to its mfa challenge.
CREATE TABLE webauthn_ceremonies (
    id UUID PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('register', 'login', 'second_factor')),
    user_id UUID REFERENCES users (id) ON DELETE CASCADE,
    session_id UUID,
    token_version INT,
    email_epoch INT,
    state JSONB NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX webauthn_ceremonies_expiry ON webauthn_ceremonies (expires_at);

ALTER TABLE mfa_challenges ADD COLUMN passkey_ceremony UUID;
