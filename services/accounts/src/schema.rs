// Mirrors migrations/accounts; keep the two in step.

diesel::table! {
    users (id) {
        id -> Uuid,
        email -> Text,
        username -> Nullable<Text>,
        username_skeleton -> Nullable<Text>,
        password_hash -> Nullable<Text>,
        first_name -> Text,
        last_name -> Text,
        phone_number -> Text,
        address -> Text,
        bio -> Nullable<Text>,
        image -> Nullable<Text>,
        terms_accepted_at -> Nullable<Timestamptz>,
        verified -> Bool,
        active -> Bool,
        is_staff -> Bool,
        is_superuser -> Bool,
        token_version -> Int4,
        last_login -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        locale -> Text,
        email_epoch -> Int4,
        mfa_failures_mailed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    outbox (id) {
        id -> Int8,
        event_id -> Uuid,
        event_type -> Text,
        envelope -> Jsonb,
        created_at -> Timestamptz,
        published_at -> Nullable<Timestamptz>,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        last_error -> Nullable<Text>,
    }
}

diesel::table! {
    refresh_tokens (id) {
        id -> Uuid,
        family_id -> Uuid,
        user_id -> Uuid,
        token_hash -> Bytea,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        family_expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
        sealed -> Nullable<Bytea>,
    }
}

diesel::table! {
    login_attempts (id) {
        id -> Int8,
        account -> Text,
        client -> Text,
        started_at -> Timestamptz,
        outcome -> Text,
    }
}

diesel::table! {
    login_delays (account) {
        account -> Text,
        failures -> Int4,
        last_attempt_at -> Timestamptz,
    }
}

diesel::table! {
    login_lockouts (scope, key) {
        scope -> Text,
        key -> Text,
        until -> Timestamptz,
    }
}

diesel::table! {
    rate_limit_hits (id) {
        id -> Int8,
        bucket -> Text,
        key -> Text,
        hit_at -> Timestamptz,
    }
}

diesel::table! {
    sessions (id) {
        id -> Uuid,
        user_id -> Uuid,
        created_at -> Timestamptz,
        last_used_at -> Timestamptz,
        auth_time -> Timestamptz,
        expires_at -> Timestamptz,
        ended_at -> Nullable<Timestamptz>,
        user_agent -> Text,
        ip -> Text,
        amr -> Array<Text>,
    }
}

diesel::table! {
    known_devices (user_id, device) {
        user_id -> Uuid,
        device -> Text,
        last_seen_at -> Timestamptz,
    }
}

diesel::table! {
    used_links (jti) {
        jti -> Uuid,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    roles (name) {
        name -> Text,
        description -> Text,
        built_in -> Bool,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    role_permissions (role, permission) {
        role -> Text,
        permission -> Text,
    }
}

diesel::table! {
    user_roles (user_id, role) {
        user_id -> Uuid,
        role -> Text,
        granted_at -> Timestamptz,
    }
}

diesel::table! {
    audit_log (id) {
        id -> Int8,
        at -> Timestamptz,
        actor_id -> Nullable<Uuid>,
        action -> Text,
        target_id -> Nullable<Uuid>,
        client_ip -> Text,
        request_id -> Text,
        details -> Jsonb,
    }
}

diesel::table! {
    email_changes (id) {
        id -> Uuid,
        seq -> Int8,
        user_id -> Uuid,
        old_email -> Text,
        new_email -> Text,
        changed_at -> Timestamptz,
        revert_expires_at -> Timestamptz,
        reserves -> Bool,
        settled_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    totp_authenticators (user_id) {
        user_id -> Uuid,
        secret -> Nullable<Bytea>,
        pending_secret -> Nullable<Bytea>,
        pending_session -> Nullable<Uuid>,
        enabled_at -> Nullable<Timestamptz>,
        last_step -> Int8,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    recovery_codes (user_id, digest) {
        user_id -> Uuid,
        digest -> Bytea,
        created_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    mfa_challenges (digest) {
        digest -> Bytea,
        user_id -> Uuid,
        token_version -> Int4,
        email_epoch -> Int4,
        amr -> Array<Text>,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        spent_at -> Nullable<Timestamptz>,
        passkey_ceremony -> Nullable<Uuid>,
    }
}

diesel::table! {
    mfa_failures (id) {
        id -> Int8,
        user_id -> Uuid,
        client -> Text,
        failed_at -> Timestamptz,
    }
}

diesel::table! {
    encryption_key_check (id) {
        id -> Bool,
        sealed -> Bytea,
    }
}

diesel::table! {
    identities (id) {
        id -> Uuid,
        user_id -> Uuid,
        provider -> Text,
        issuer -> Text,
        subject -> Text,
        email -> Nullable<Text>,
        created_at -> Timestamptz,
        last_used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    social_link_tickets (digest) {
        digest -> Bytea,
        user_id -> Uuid,
        session_id -> Uuid,
        provider -> Text,
        token_version -> Int4,
        email_epoch -> Int4,
        redirect_to -> Text,
        app_state -> Nullable<Text>,
        code_challenge -> Text,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    social_states (digest) {
        digest -> Bytea,
        provider -> Text,
        browser -> Bytea,
        nonce -> Text,
        pkce_verifier -> Text,
        redirect_to -> Text,
        app_state -> Nullable<Text>,
        code_challenge -> Text,
        reauth -> Bool,
        link_user_id -> Nullable<Uuid>,
        link_session_id -> Nullable<Uuid>,
        token_version -> Nullable<Int4>,
        email_epoch -> Nullable<Int4>,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    social_codes (digest) {
        digest -> Bytea,
        user_id -> Uuid,
        provider -> Text,
        code_challenge -> Text,
        token_version -> Int4,
        email_epoch -> Int4,
        auth_time -> Timestamptz,
        link_session_id -> Nullable<Uuid>,
        link_issuer -> Nullable<Text>,
        link_subject -> Nullable<Text>,
        link_email -> Nullable<Text>,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    passkeys (id) {
        id -> Uuid,
        user_id -> Uuid,
        credential_id -> Bytea,
        name -> Text,
        passkey -> Jsonb,
        created_at -> Timestamptz,
        last_used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    webauthn_ceremonies (id) {
        id -> Uuid,
        kind -> Text,
        user_id -> Nullable<Uuid>,
        session_id -> Nullable<Uuid>,
        token_version -> Nullable<Int4>,
        email_epoch -> Nullable<Int4>,
        state -> Jsonb,
        expires_at -> Timestamptz,
    }
}

diesel::joinable!(refresh_tokens -> users (user_id));
diesel::joinable!(email_changes -> users (user_id));
diesel::joinable!(user_roles -> users (user_id));
diesel::joinable!(user_roles -> roles (role));
diesel::joinable!(role_permissions -> roles (role));
diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(refresh_tokens -> sessions (family_id));
diesel::joinable!(known_devices -> users (user_id));
diesel::joinable!(totp_authenticators -> users (user_id));
diesel::joinable!(recovery_codes -> users (user_id));
diesel::joinable!(mfa_challenges -> users (user_id));
diesel::joinable!(mfa_failures -> users (user_id));
diesel::joinable!(identities -> users (user_id));
diesel::joinable!(passkeys -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(
    users,
    refresh_tokens,
    sessions,
    known_devices,
    roles,
    role_permissions,
    user_roles,
    audit_log,
    email_changes,
    totp_authenticators,
    recovery_codes,
    mfa_challenges,
    mfa_failures,
    identities,
    passkeys
);
