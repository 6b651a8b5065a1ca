//! The `failed_sends` table (the seed's FailedEmailTasks): mail the mailer gave up on, kept for an
//! operator to inspect and resend with `mailer failed`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use crate::schema::failed_sends;

#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = failed_sends)]
pub struct FailedSend {
    pub id: i64,
    pub event_id: Option<Uuid>,
    pub event_type: Option<String>,
    pub recipient: Option<String>,
    pub template: Option<String>,
    /// The envelope as received (or `{"raw": ...}` when it was not JSON).
    pub payload: serde_json::Value,
    pub error: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = failed_sends)]
pub struct NewFailedSend<'a> {
    pub event_id: Option<Uuid>,
    pub event_type: Option<&'a str>,
    pub recipient: Option<&'a str>,
    pub template: Option<&'a str>,
    pub payload: &'a serde_json::Value,
    pub error: &'a str,
    pub attempts: i32,
}

pub async fn insert(conn: &mut AsyncPgConnection, new: &NewFailedSend<'_>) -> QueryResult<i64> {
    diesel::insert_into(failed_sends::table)
        .values(new)
        .returning(failed_sends::id)
        .get_result(conn)
        .await
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

/// Records a successful resend.
pub async fn mark_resolved(
    conn: &mut AsyncPgConnection,
    id: i64,
    attempts: i32,
) -> QueryResult<()> {
    let now = Utc::now();
    diesel::update(failed_sends::table.find(id))
        .set((
            failed_sends::resolved_at.eq(now),
            failed_sends::attempts.eq(attempts),
            failed_sends::updated_at.eq(now),
        ))
        .execute(conn)
        .await
        .map(drop)
}

/// Records a resend that failed again.
pub async fn record_failure(
    conn: &mut AsyncPgConnection,
    id: i64,
    attempts: i32,
    error: &str,
) -> QueryResult<()> {
    diesel::update(failed_sends::table.find(id))
        .set((
            failed_sends::error.eq(error),
            failed_sends::attempts.eq(attempts),
            failed_sends::updated_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await
        .map(drop)
}
