-- Mail that could not be sent (the seed's FailedEmailTasks), kept for an operator to inspect and
-- retry with `mailer failed`. event_id and recipient are NULL when the message was unreadable.
CREATE TABLE failed_sends (
    id          bigserial PRIMARY KEY,
    event_id    uuid,
    event_type  text,
    recipient   text,
    template    text,
    payload     jsonb NOT NULL,
    error       text NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz
);

CREATE INDEX failed_sends_unresolved ON failed_sends (id) WHERE resolved_at IS NULL;
CREATE INDEX failed_sends_event ON failed_sends (event_id);
