-- The lockouts the login guard has announced: one row per limit and key (a pair, a client or an
-- account), holding the end of the window it last audited, so a lockout is audited once per window
-- however many requests it refuses and whichever replica refuses them.
CREATE TABLE login_lockouts (
    scope text NOT NULL CHECK (scope IN ('pair', 'client', 'account')),
    key   text NOT NULL,
    until timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE INDEX login_lockouts_until ON login_lockouts (until);
