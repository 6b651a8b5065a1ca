-- Recovery that an intruder cannot undo.
--
-- The email epoch moves with every email change and revert; confirmation and reset links carry the
-- epoch they were mailed under and die when it moves.
ALTER TABLE users ADD COLUMN email_epoch integer NOT NULL DEFAULT 0;

-- No usable password: after a revert or a rejected sign-in, until the mailed reset is completed.
ALTER TABLE users ALTER COLUMN password_hash DROP NOT NULL;

-- Every email change, with its revert link's life. Reverting a change restores its old address and
-- settles it and every later change of the account (their links die); earlier ones stay open. An
-- open change of a verified old address reserves that address to the account until its link
-- expires (an unverified one was never proven the account's, so it reserves nothing).
CREATE TABLE email_changes (
    id                uuid PRIMARY KEY,
    seq               bigserial NOT NULL UNIQUE,
    user_id           uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    old_email         text NOT NULL,
    new_email         text NOT NULL,
    changed_at        timestamptz NOT NULL DEFAULT now(),
    revert_expires_at timestamptz NOT NULL,
    reserves          boolean NOT NULL,
    settled_at        timestamptz
);

CREATE INDEX email_changes_user ON email_changes (user_id, seq);
CREATE INDEX email_changes_reserved ON email_changes (old_email, revert_expires_at) WHERE settled_at IS NULL AND reserves;
CREATE INDEX email_changes_expiry ON email_changes (revert_expires_at);
