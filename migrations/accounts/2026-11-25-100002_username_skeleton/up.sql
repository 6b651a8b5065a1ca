-- What a username looks like: NFKC, case-folded, then the Unicode TR 39 confusable skeleton.
-- Computed by the application (on insert and update, and at startup for rows older than this
-- column). Usernames are unique by it, which also makes them unique case-insensitively, so the
-- index keeps the old name and callers keep recognizing its violations.
ALTER TABLE users ADD COLUMN username_skeleton text;

DROP INDEX users_username_key;
CREATE UNIQUE INDEX users_username_key ON users (username_skeleton);
