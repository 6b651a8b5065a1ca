//! The `deliveries` table: one row per accepted event. Its primary key (the event id) makes the
//! mailer idempotent, and its `next_attempt_at` is the retry schedule that survives restarts.
//!
//! Query functions take a connection; callers own transactions.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use events::Envelope;
use uuid::Uuid;

use crate::schema::deliveries;

pub const PENDING: &str = "pending";
pub const SENT: &str = "sent";
pub const FAILED: &str = "failed";

/// A due delivery a sender has claimed for the duration of its lease.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = deliveries)]
pub struct ClaimedDelivery {
    pub event_id: Uuid,
    pub event_type: String,
    pub recipient: String,
    pub envelope: serde_json::Value,
    pub attempts: i32,
}

/// Records an accepted event. Returns false when the event id is already known (a redelivery or
/// a duplicate publish), in which case nothing changes.
pub async fn record(conn: &mut AsyncPgConnection, envelope: &Envelope) -> QueryResult<bool> {
    let json = serde_json::to_value(envelope).expect("an envelope always serializes");
    let inserted = diesel::insert_into(deliveries::table)
        .values((
            deliveries::event_id.eq(envelope.id),
            deliveries::event_type.eq(envelope.kind()),
            deliveries::recipient.eq(envelope.event.recipient()),
            deliveries::envelope.eq(json),
        ))
        .on_conflict(deliveries::event_id)
        .do_nothing()
        .execute(conn)
        .await?;
    Ok(inserted == 1)
}

/// Claims up to `limit` due deliveries by pushing their `next_attempt_at` past `lease`, so no
/// other sender takes them while this one works, and a crashed sender's rows come back later.
pub async fn claim_due(
    conn: &mut AsyncPgConnection,
    limit: i64,
    lease: chrono::Duration,
) -> QueryResult<Vec<ClaimedDelivery>> {
    conn.transaction::<_, diesel::result::Error, _>(async move |conn| {
        let rows: Vec<ClaimedDelivery> = deliveries::table
            .filter(deliveries::status.eq(PENDING))
            .filter(deliveries::next_attempt_at.le(Utc::now()))
            .order(deliveries::next_attempt_at)
            .limit(limit)
            .for_update()
            .skip_locked()
            .select(ClaimedDelivery::as_select())
            .load(conn)
            .await?;
        if !rows.is_empty() {
            let ids: Vec<Uuid> = rows.iter().map(|r| r.event_id).collect();
            diesel::update(deliveries::table.filter(deliveries::event_id.eq_any(ids)))
                .set(deliveries::next_attempt_at.eq(Utc::now() + lease))
                .execute(conn)
                .await?;
        }
        Ok(rows)
    })
    .await
}

pub async fn mark_sent(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    attempts: i32,
    message_id: &str,
) -> QueryResult<()> {
    let now = Utc::now();
    diesel::update(deliveries::table.find(event_id))
        .set((
            deliveries::status.eq(SENT),
            deliveries::attempts.eq(attempts),
            deliveries::message_id.eq(message_id),
            deliveries::sent_at.eq(now),
            deliveries::updated_at.eq(now),
        ))
        .execute(conn)
        .await
        .map(drop)
}

pub async fn reschedule(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
    error: &str,
) -> QueryResult<()> {
    diesel::update(deliveries::table.find(event_id))
        .set((
            deliveries::attempts.eq(attempts),
            deliveries::next_attempt_at.eq(next_attempt_at),
            deliveries::last_error.eq(error),
            deliveries::updated_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await
        .map(drop)
}

/// Marks the delivery failed; pair it with a `failed_sends` row in the same transaction.
pub async fn mark_failed(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    attempts: i32,
    error: &str,
) -> QueryResult<()> {
    diesel::update(deliveries::table.find(event_id))
        .set((
            deliveries::status.eq(FAILED),
            deliveries::attempts.eq(attempts),
            deliveries::last_error.eq(error),
            deliveries::updated_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await
        .map(drop)
}

/// When the earliest pending delivery falls due, if any is pending.
pub async fn next_due(conn: &mut AsyncPgConnection) -> QueryResult<Option<DateTime<Utc>>> {
    deliveries::table
        .filter(deliveries::status.eq(PENDING))
        .select(diesel::dsl::min(deliveries::next_attempt_at))
        .first(conn)
        .await
}

/// How many deliveries wait to be sent (including scheduled retries).
pub async fn backlog(conn: &mut AsyncPgConnection) -> QueryResult<i64> {
    deliveries::table
        .filter(deliveries::status.eq(PENDING))
        .count()
        .get_result(conn)
        .await
}
