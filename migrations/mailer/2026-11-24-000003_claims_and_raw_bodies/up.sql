-- Settling a send is conditional on the sender's claim: each claim writes a fresh token, and
-- sent / rescheduled / failed are only written by the holder of the current token.
ALTER TABLE deliveries ADD COLUMN claim_token uuid;

-- Raw message bodies are bytes: jsonb rejects \u0000, and a poison message must always be
-- recordable. `payload` keeps the parsed envelope when there is one (for queries and display).
ALTER TABLE failed_sends ADD COLUMN body bytea;
UPDATE failed_sends SET body = convert_to(coalesce(payload->>'raw', payload::text), 'UTF8');
ALTER TABLE failed_sends ALTER COLUMN body SET NOT NULL;
ALTER TABLE failed_sends ALTER COLUMN payload DROP NOT NULL;
UPDATE failed_sends SET payload = NULL WHERE payload ? 'raw' AND NOT payload ? 'id';

-- At most one unresolved failed send per event (older duplicates count as resolved).
UPDATE failed_sends f SET resolved_at = now(), updated_at = now()
WHERE f.resolved_at IS NULL AND f.event_id IS NOT NULL AND EXISTS (
    SELECT 1 FROM failed_sends g
    WHERE g.event_id = f.event_id AND g.resolved_at IS NULL AND g.id > f.id);
CREATE UNIQUE INDEX failed_sends_one_unresolved_per_event ON failed_sends (event_id)
    WHERE resolved_at IS NULL;
