CREATE TABLE users (
    id                uuid PRIMARY KEY,
    -- Stored lower-cased (the application normalizes), which makes the plain unique index case-insensitive.
    email             text NOT NULL CHECK (email = lower(email)),
    username          text,
    password_hash     text NOT NULL,
    first_name        text NOT NULL DEFAULT '',
    last_name         text NOT NULL DEFAULT '',
    phone_number      text NOT NULL DEFAULT '',
    address           text NOT NULL DEFAULT '',
    bio               text,
    image             text,
    terms_accepted_at timestamptz,
    verified          boolean NOT NULL DEFAULT false,
    active            boolean NOT NULL DEFAULT true,
    is_staff          boolean NOT NULL DEFAULT false,
    is_superuser      boolean NOT NULL DEFAULT false,
    -- Bumped by logout-all, password reset and deactivation; access tokens carry the value they
    -- were issued under and stop working once it moves.
    token_version     integer NOT NULL DEFAULT 0,
    last_login        timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX users_email_key ON users (email);
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
