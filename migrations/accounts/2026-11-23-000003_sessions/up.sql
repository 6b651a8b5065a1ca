-- One row per issued refresh token. Tokens of one login share a family; reusing a rotated token
-- revokes the family.
CREATE TABLE refresh_tokens (
    id                uuid PRIMARY KEY,
    family_id         uuid NOT NULL,
    user_id           uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash        bytea NOT NULL UNIQUE,
    created_at        timestamptz NOT NULL DEFAULT now(),
    expires_at        timestamptz NOT NULL,
    family_expires_at timestamptz NOT NULL,
    used_at           timestamptz,
    revoked_at        timestamptz
);

CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

-- Failed logins, shared by every replica. Keyed by (email, ip) for the lockout and by ip for spraying.
CREATE TABLE login_failures (
    id         bigserial PRIMARY KEY,
    email      text NOT NULL,
    ip         text NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX login_failures_email_ip ON login_failures (email, ip, failed_at);
CREATE INDEX login_failures_ip ON login_failures (ip, failed_at);

-- Requests that send mail (resend confirmation, forgot password), limited per address.
CREATE TABLE mail_requests (
    id           bigserial PRIMARY KEY,
    kind         text NOT NULL,
    email        text NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX mail_requests_kind_email ON mail_requests (kind, email, requested_at);
