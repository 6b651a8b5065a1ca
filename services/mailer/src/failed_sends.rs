//! The `failed_sends` table (the seed's FailedEmailTasks): mail the mailer gave up on, kept for an
//! operator to inspect and resend with `mailer failed`.
//!
//! At most one unresolved row exists per event (a partial unique index). A newer failure of the
//! same event updates that row (or reopens the one an operator retried), so the operator always
//! sees the latest cause; the row's `history` keeps every failure and retry before it.

use chrono::{DateTime, Utc};
use diesel::{
    prelude::*,
    sql_types::{Bool, Bytea, Integer, Jsonb, Nullable, Text},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use crate::{redact, schema::failed_sends};

/// A failed send as stored. It holds live links (the payload, the raw body, sometimes the error):
/// an operator only ever sees [`FailedSend::for_operator`], so it is not `Serialize`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = failed_sends)]
pub struct FailedSend {
    pub id: i64,
    pub event_id: Option<Uuid>,
    pub event_type: Option<String>,
    pub recipient: Option<String>,
    pub template: Option<String>,
    /// The envelope, when it was readable JSON.
    pub payload: Option<serde_json::Value>,
    pub error: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Set when an operator handed it back to the sender (`mailer failed retry`).
    pub resolved_at: Option<DateTime<Utc>>,
    /// The message body exactly as received (any bytes; links with tokens: never log it).
    pub body: Vec<u8>,
    /// Every failure (`what: failed`, `error`, `attempts`) and retry (`what: retried`, `by`), oldest first.
    pub history: serde_json::Value,
}

/// A failed send as an operator sees it (the admin API and the CLI): every link's token, and any
/// other secret meant for the user, redacted (see [`redact`]).
#[derive(Debug, Clone, Serialize)]
pub struct OperatorView {
    pub id: i64,
    pub event_id: Option<Uuid>,
    pub event_type: Option<String>,
    pub recipient: Option<String>,
    pub template: Option<String>,
    pub payload: Option<serde_json::Value>,
    pub error: String,
    pub attempts: i32,
    pub history: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

impl FailedSend {
    pub fn for_operator(&self) -> OperatorView {
        OperatorView {
            id: self.id,
            event_id: self.event_id,
            event_type: self.event_type.clone(),
            recipient: self.recipient.clone(),
            template: self.template.clone(),
            payload: self.payload.as_ref().map(redact::json),
            error: redact::links(&self.error),
            attempts: self.attempts,
            history: redact::json(&self.history),
            created_at: self.created_at,
            updated_at: self.updated_at,
            resolved_at: self.resolved_at,
        }
    }

    /// What an operator learns of a body the mailer could not read: its size, never its bytes. A
    /// link's token hides in them behind bytes no redaction reads as a link (not UTF-8, a NUL,
    /// JSON's `\u003d` or `\/`); whoever holds the database reads `failed_sends.body` there.
    pub fn body_for_operator(&self) -> String {
        format!(
            "{} bytes, not a readable event (the bytes are in failed_sends.body)",
            self.body.len()
        )
    }
}

#[derive(Debug)]
pub struct NewFailedSend<'a> {
    pub event_id: Option<Uuid>,
    pub event_type: Option<&'a str>,
    pub recipient: Option<&'a str>,
    pub template: Option<&'a str>,
    pub payload: Option<&'a serde_json::Value>,
    pub body: &'a [u8],
    pub error: &'a str,
    pub attempts: i32,
}

/// The history entry of a failure, in SQL (binds: `$error`, `$attempts` at the given positions).
fn failure_entry(error: usize, attempts: usize) -> String {
    format!(
        "jsonb_build_array(jsonb_build_object('at', now(), 'what', 'failed', 'error', ${error}::text, 'attempts', ${attempts}::integer))"
    )
}

/// Records a failure and returns its row's id. A failure of an event that already has a row
/// updates that row (its newest, reopened if an operator had retried it): the error, the attempts
/// and the history always; what the row shows of the mail (payload, body, recipient) only when
/// this failure comes from a readable event or the row had none, so an unreadable copy of an event
/// never hides the real one. Run it in a transaction when other writes depend on it.
pub async fn record(conn: &mut AsyncPgConnection, new: &NewFailedSend<'_>) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    let readable = new.recipient.is_some();
    // Twice at most: an insert that lost the race to another failure of the event updates it.
    for _ in 0..2 {
        if let Some(event_id) = new.event_id {
            // $9: this failure comes from a readable event; the row then shows it.
            let shown = |column: &str, bind: usize| {
                format!(
                    "{column} = CASE WHEN $9 OR f.recipient IS NULL THEN ${bind} ELSE f.{column} END"
                )
            };
            let updated: Option<Row> = diesel::sql_query(format!(
                "WITH latest AS ( \
                     SELECT id FROM failed_sends WHERE event_id = $1 \
                     ORDER BY resolved_at IS NULL DESC, id DESC LIMIT 1 FOR UPDATE) \
                 UPDATE failed_sends f SET {}, {}, {}, {}, {}, \
                     error = $7, attempts = $8, resolved_at = NULL, updated_at = now(), \
                     history = f.history || {} \
                 FROM latest WHERE f.id = latest.id RETURNING f.id",
                shown("event_type", 2),
                shown("recipient", 3),
                shown("template", 4),
                shown("payload", 5),
                shown("body", 6),
                failure_entry(7, 8)
            ))
            .bind::<diesel::sql_types::Uuid, _>(event_id)
            .bind::<Nullable<Text>, _>(new.event_type)
            .bind::<Nullable<Text>, _>(new.recipient)
            .bind::<Nullable<Text>, _>(new.template)
            .bind::<Nullable<Jsonb>, _>(new.payload)
            .bind::<Bytea, _>(new.body)
            .bind::<Text, _>(new.error)
            .bind::<Integer, _>(new.attempts)
            .bind::<Bool, _>(readable)
            .get_result(conn)
            .await
            .optional()?;
            if let Some(row) = updated {
                return Ok(row.id);
            }
        }
        let inserted: Option<Row> = diesel::sql_query(format!(
            "INSERT INTO failed_sends \
                 (event_id, event_type, recipient, template, payload, body, error, attempts, history) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, {}) \
             ON CONFLICT (event_id) WHERE resolved_at IS NULL DO NOTHING RETURNING id",
            failure_entry(7, 8)
        ))
        .bind::<Nullable<diesel::sql_types::Uuid>, _>(new.event_id)
        .bind::<Nullable<Text>, _>(new.event_type)
        .bind::<Nullable<Text>, _>(new.recipient)
        .bind::<Nullable<Text>, _>(new.template)
        .bind::<Nullable<Jsonb>, _>(new.payload)
        .bind::<Bytea, _>(new.body)
        .bind::<Text, _>(new.error)
        .bind::<Integer, _>(new.attempts)
        .get_result(conn)
        .await
        .optional()?;
        if let Some(row) = inserted {
            return Ok(row.id);
        }
    }
    Err(diesel::result::Error::NotFound)
}

/// Failed sends, oldest first; resolved ones only when asked for.
pub async fn list(
    conn: &mut AsyncPgConnection,
    include_resolved: bool,
) -> QueryResult<Vec<FailedSend>> {
    let mut query = failed_sends::table
        .select(FailedSend::as_select())
        .order(failed_sends::id)
        .into_boxed();
    if !include_resolved {
        query = query.filter(failed_sends::resolved_at.is_null());
    }
    query.load(conn).await
}

pub async fn find(conn: &mut AsyncPgConnection, id: i64) -> QueryResult<Option<FailedSend>> {
    failed_sends::table
        .find(id)
        .select(FailedSend::as_select())
        .first(conn)
        .await
        .optional()
}
