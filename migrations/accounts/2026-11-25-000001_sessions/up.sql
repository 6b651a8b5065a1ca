-- A session is a refresh-token family: what a user sees as "a signed-in device". Access tokens carry
-- its id as `sid`; ending the row stops those tokens at once.
CREATE TABLE sessions (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz NOT NULL DEFAULT now(),
    -- When the password that began the session was entered; a refresh keeps it.
    auth_time    timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    ended_at     timestamptz,
    user_agent   text NOT NULL DEFAULT '',
    ip           text NOT NULL DEFAULT ''
);

CREATE INDEX sessions_user_live ON sessions (user_id, created_at DESC) WHERE ended_at IS NULL;

-- Every family that exists becomes a session (ended when its tokens were revoked).
INSERT INTO sessions (id, user_id, created_at, last_used_at, auth_time, expires_at, ended_at)
SELECT family_id, min(user_id::text)::uuid, min(created_at), max(created_at), min(created_at),
       max(family_expires_at),
       CASE WHEN bool_and(revoked_at IS NOT NULL) THEN max(revoked_at) END
FROM refresh_tokens
GROUP BY family_id;

ALTER TABLE refresh_tokens
    ADD CONSTRAINT refresh_tokens_session FOREIGN KEY (family_id) REFERENCES sessions (id) ON DELETE CASCADE;

-- Devices a user signed in from (user-agent family + client /24 or /64), for the new sign-in notice.
CREATE TABLE known_devices (
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device       text NOT NULL,
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, device)
);

-- Single-use signed links (email revert, sign-in reject): a link's jti is recorded when used.
CREATE TABLE used_links (
    jti        uuid PRIMARY KEY,
    expires_at timestamptz NOT NULL
);

CREATE INDEX used_links_expiry ON used_links (expires_at);

-- The language of the user's mail (BCP 47).
ALTER TABLE users ADD COLUMN locale text NOT NULL DEFAULT 'en';
