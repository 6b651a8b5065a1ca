-- Every password check, written before bcrypt runs (as 'pending', which counts as a failure until
-- it is settled), so parallel guesses see each other and cannot slip past a limit. Shared by
-- every replica. `account` is the normalized email as typed, known or not; `client` the client's
-- throttle key (an IPv4 address or an IPv6 /64).
CREATE TABLE login_attempts (
    id         bigserial PRIMARY KEY,
    account    text NOT NULL,
    client     text NOT NULL,
    started_at timestamptz NOT NULL,
    outcome    text NOT NULL DEFAULT 'pending' CHECK (outcome IN ('pending', 'failed', 'succeeded'))
);

CREATE INDEX login_attempts_account ON login_attempts (account, started_at);
CREATE INDEX login_attempts_client ON login_attempts (client, started_at);
CREATE INDEX login_attempts_started ON login_attempts (started_at);

-- An account under the per-account delay: one attempt per delay, doubling with every failure
-- since the delay began; a success deletes the row.
CREATE TABLE login_delays (
    account         text PRIMARY KEY,
    failures        integer NOT NULL,
    last_attempt_at timestamptz NOT NULL
);

-- Hourly limits on registrations and mail-sending requests, by bucket (what is limited and by
-- what: 'register:client', 'mail:client', 'confirm:address', ...) and key.
CREATE TABLE rate_limit_hits (
    id     bigserial PRIMARY KEY,
    bucket text NOT NULL,
    key    text NOT NULL,
    hit_at timestamptz NOT NULL
);

CREATE INDEX rate_limit_hits_bucket_key ON rate_limit_hits (bucket, key, hit_at);
CREATE INDEX rate_limit_hits_hit_at ON rate_limit_hits (hit_at);

-- Replaced by the tables above; their rows only ever mattered for an hour or a lockout period.
DROP TABLE login_failures;
DROP TABLE mail_requests;
