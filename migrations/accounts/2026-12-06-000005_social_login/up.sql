-- A provider account linked to a user: `(issuer, subject)` names it (for GitHub, the API URL and
-- the numeric id), so re-pointing a provider at another issuer maps no stranger onto a link. One
-- provider account belongs to one user, and a user links at most one account per provider.
CREATE TABLE identities (
    id UUID PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    email TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at TIMESTAMPTZ,
    UNIQUE (issuer, subject),
    UNIQUE (user_id, provider)
);

-- A signed-in user's one-time ticket to link a provider (`GET .../authorize?link=`): the client
-- holds it, only its SHA-256 is stored; it dies when the token version or email epoch moves.
CREATE TABLE social_link_tickets (
    digest BYTEA PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id UUID NOT NULL,
    provider TEXT NOT NULL,
    token_version INT NOT NULL,
    email_epoch INT NOT NULL,
    redirect_to TEXT NOT NULL,
    app_state TEXT,
    code_challenge TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX social_link_tickets_expiry ON social_link_tickets (expires_at);

-- A flow towards a provider: our `state` (its SHA-256), the nonce and PKCE verifier sent with it,
-- the browser it is bound to (the SHA-256 of its cookie), where the app wants the answer, and, for
-- a link, whose account it links. Single use; 10 minutes.
CREATE TABLE social_states (
    digest BYTEA PRIMARY KEY,
    provider TEXT NOT NULL,
    browser BYTEA NOT NULL,
    nonce TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    redirect_to TEXT NOT NULL,
    app_state TEXT,
    code_challenge TEXT NOT NULL,
    -- The app asked for a fresh sign-in at the provider (prompt=login, max_age=0): the ID token's
    -- auth_time must be no older than the flow.
    reauth BOOLEAN NOT NULL DEFAULT false,
    link_user_id UUID REFERENCES users (id) ON DELETE CASCADE,
    link_session_id UUID,
    token_version INT,
    email_epoch INT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX social_states_expiry ON social_states (expires_at);

-- Our one-time code for the app (`POST /api/auth/token`): its SHA-256, the app's S256 challenge,
-- the account as it was (a reset, a revert or a reject in between voids it), when the user signed
-- in at the provider, and for a link the provider account to link: a link is made only when the
-- app that asked for it redeems the code with its verifier. 60 seconds; spent by its first
-- redemption, right or wrong.
CREATE TABLE social_codes (
    digest BYTEA PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    token_version INT NOT NULL,
    email_epoch INT NOT NULL,
    auth_time TIMESTAMPTZ NOT NULL,
    link_session_id UUID,
    link_issuer TEXT,
    link_subject TEXT,
    link_email TEXT,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX social_codes_expiry ON social_codes (expires_at);
