CREATE TABLE login_failures (
    id         bigserial PRIMARY KEY,
    email      text NOT NULL,
    ip         text NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX login_failures_email_ip ON login_failures (email, ip, failed_at);
CREATE INDEX login_failures_ip ON login_failures (ip, failed_at);

CREATE TABLE mail_requests (
    id           bigserial PRIMARY KEY,
    kind         text NOT NULL,
    email        text NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX mail_requests_kind_email ON mail_requests (kind, email, requested_at);

DROP TABLE rate_limit_hits;
DROP TABLE login_delays;
DROP TABLE login_attempts;
