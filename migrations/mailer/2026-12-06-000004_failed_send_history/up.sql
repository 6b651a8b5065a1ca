-- What happened to a failed send, oldest first: each failure (`what: failed`, with its error and
-- attempts) and each operator retry (`what: retried`, with who). A newer failure of the same event
-- updates the row (and reopens it after a retry) instead of hiding behind it, and the history keeps
-- the earlier causes.
ALTER TABLE failed_sends ADD COLUMN history jsonb NOT NULL DEFAULT '[]';
UPDATE failed_sends SET history = jsonb_build_array(jsonb_build_object(
    'at', created_at, 'what', 'failed', 'error', error, 'attempts', attempts));
UPDATE failed_sends SET history = history || jsonb_build_array(jsonb_build_object(
    'at', resolved_at, 'what', 'retried', 'by', 'before history was kept'))
WHERE resolved_at IS NOT NULL;
