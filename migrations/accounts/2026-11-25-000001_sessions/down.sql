ALTER TABLE users DROP COLUMN locale;
DROP TABLE used_links;
DROP TABLE known_devices;
ALTER TABLE refresh_tokens DROP CONSTRAINT refresh_tokens_session;
DROP TABLE sessions;
