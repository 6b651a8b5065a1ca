-- Seed 002's authorization model: roles (Django's groups) carry named permissions; superusers
-- (users.is_superuser) hold them all.
CREATE TABLE roles (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    description text NOT NULL DEFAULT '',
    built_in    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE role_permissions (
    role       text NOT NULL REFERENCES roles (name) ON DELETE CASCADE,
    permission text NOT NULL CHECK (permission IN ('users.read', 'users.write', 'users.deactivate',
        'sessions.revoke', 'roles.manage', 'audit.read', 'mail.read', 'mail.retry')),
    PRIMARY KEY (role, permission)
);

CREATE TABLE user_roles (
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       text NOT NULL REFERENCES roles (name) ON DELETE CASCADE,
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, role)
);

CREATE INDEX user_roles_role ON user_roles (role);

INSERT INTO roles (name, description, built_in) VALUES
    ('admin', 'Every permission', true),
    ('support', 'Reads users, ends sessions, reads and retries failed mail', true);

INSERT INTO role_permissions (role, permission) VALUES
    ('admin', 'users.read'), ('admin', 'users.write'), ('admin', 'users.deactivate'),
    ('admin', 'sessions.revoke'), ('admin', 'roles.manage'), ('admin', 'audit.read'),
    ('admin', 'mail.read'), ('admin', 'mail.retry'),
    ('support', 'users.read'), ('support', 'sessions.revoke'), ('support', 'mail.read'),
    ('support', 'mail.retry');

-- Who did what: every admin action and every security event. Rows are written in the transaction of
-- the action they record, never changed, and deleted only by retention (ACCOUNTS_AUDIT_RETENTION_DAYS).
CREATE TABLE audit_log (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor_id   uuid,
    action     text NOT NULL,
    target_id  uuid,
    client_ip  text NOT NULL DEFAULT '',
    request_id text NOT NULL DEFAULT '',
    details    jsonb NOT NULL DEFAULT '{}'
);

CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_actor ON audit_log (actor_id, id);
CREATE INDEX audit_log_target ON audit_log (target_id, id);
CREATE INDEX audit_log_action ON audit_log (action, id);

CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

-- Searching users by email or username, case-insensitively.
CREATE INDEX users_email_lower ON users (lower(email) text_pattern_ops);
