-- One row per event the mailer accepted: the idempotency record (keyed by event id) and the
-- durable retry schedule. The consumer inserts; senders claim due rows with SKIP LOCKED.
CREATE TABLE deliveries (
    event_id        uuid PRIMARY KEY,
    event_type      text NOT NULL,
    recipient       text NOT NULL,
    envelope        jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    message_id      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);

CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';

CREATE FUNCTION deliveries_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('mailer_deliveries', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER deliveries_notify AFTER INSERT ON deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION deliveries_notify();
