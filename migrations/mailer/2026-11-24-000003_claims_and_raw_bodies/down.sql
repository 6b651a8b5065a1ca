DROP INDEX failed_sends_one_unresolved_per_event;
UPDATE failed_sends SET payload = jsonb_build_object('raw', encode(body, 'escape')) WHERE payload IS NULL;
ALTER TABLE failed_sends ALTER COLUMN payload SET NOT NULL;
ALTER TABLE failed_sends DROP COLUMN body;
ALTER TABLE deliveries DROP COLUMN claim_token;
