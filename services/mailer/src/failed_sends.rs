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
    /// The envelope, when it was readable JSON.
    pub payload: Option<serde_json::Value>,
    pub error: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Set when an operator handed it back to the sender (`mailer failed retry`).
    pub resolved_at: Option<DateTime<Utc>>,
    /// The message body exactly as received (any bytes; links with tokens: never log it).
    #[serde(skip)]
    pub body: Vec<u8>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = failed_sends)]
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

/// Records a failed send. Returns `None` when the event already has an unresolved one (at most one
/// exists per event, by a partial unique index), which is then left as it is.
pub async fn insert(
    conn: &mut AsyncPgConnection,
    new: &NewFailedSend<'_>,
) -> QueryResult<Option<i64>> {
    diesel::insert_into(failed_sends::table)
        .values(new)
        .on_conflict_do_nothing()
        .returning(failed_sends::id)
        .get_result(conn)
        .await
        .optional()
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
