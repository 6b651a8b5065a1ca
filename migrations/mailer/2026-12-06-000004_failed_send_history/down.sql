ALTER TABLE failed_sends DROP COLUMN history;
