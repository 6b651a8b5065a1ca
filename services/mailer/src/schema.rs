// Mirrors migrations/mailer; keep in step with them.

diesel::table! {
    deliveries (event_id) {
        event_id -> Uuid,
        event_type -> Text,
        recipient -> Text,
        envelope -> Jsonb,
        status -> Text,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        last_error -> Nullable<Text>,
        message_id -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        sent_at -> Nullable<Timestamptz>,
        claim_token -> Nullable<Uuid>,
    }
}

diesel::table! {
    failed_sends (id) {
        id -> Int8,
        event_id -> Nullable<Uuid>,
        event_type -> Nullable<Text>,
        recipient -> Nullable<Text>,
        template -> Nullable<Text>,
        payload -> Nullable<Jsonb>,
        error -> Text,
        attempts -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        resolved_at -> Nullable<Timestamptz>,
        body -> Bytea,
        history -> Jsonb,
    }
}

diesel::allow_tables_to_appear_in_same_query!(deliveries, failed_sends);
