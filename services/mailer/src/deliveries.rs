//! The `deliveries` table: one row per accepted event. Its primary key (the event id) makes the
//! mailer idempotent, and its `next_attempt_at` is the retry schedule that survives restarts.
//!
//! Query functions take a connection; callers own transactions.

use chrono::{DateTime, Utc};
use diesel::{
    dsl::now,
    pg::expression::extensions::IntervalDsl,
    prelude::*,
    sql_types::{BigInt, Double, Timestamptz},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use events::Envelope;
use uuid::Uuid;

use crate::schema::deliveries;

pub const PENDING: &str = "pending";
pub const SENT: &str = "sent";
pub const FAILED: &str = "failed";

/// A due delivery a sender has claimed for the duration of its lease.
#[derive(Debug, Clone, QueryableByName)]
#[diesel(table_name = deliveries)]
pub struct ClaimedDelivery {
    pub event_id: Uuid,
    pub event_type: String,
    pub recipient: String,
    pub envelope: serde_json::Value,
    pub attempts: i32,
    /// Written by this claim; every settle is conditional on it.
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub claim_token: Uuid,
}

/// Records an accepted event. Returns false when the event id is already known (a redelivery or
/// a duplicate publish), in which case nothing changes.
pub async fn record(conn: &mut AsyncPgConnection, envelope: &Envelope) -> QueryResult<bool> {
    let json = serde_json::to_value(envelope)
        .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
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

/// Claims up to `limit` due deliveries: pushes their `next_attempt_at` past `lease` (on the
/// database's clock, so replicas with skewed clocks agree) and gives them a fresh claim token. No
/// other sender takes them while this one works, and a crashed sender's rows come back later.
pub async fn claim_due(
    conn: &mut AsyncPgConnection,
    limit: i64,
    lease: std::time::Duration,
) -> QueryResult<Vec<ClaimedDelivery>> {
    diesel::sql_query(
        "WITH due AS ( \
             SELECT event_id FROM deliveries \
             WHERE status = 'pending' AND next_attempt_at <= now() \
             ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
         UPDATE deliveries d \
         SET next_attempt_at = now() + make_interval(secs => $2), claim_token = $3 \
         FROM due WHERE d.event_id = due.event_id \
         RETURNING d.event_id, d.event_type, d.recipient, d.envelope, d.attempts, d.claim_token",
    )
    .bind::<BigInt, _>(limit)
    .bind::<Double, _>(lease.as_secs_f64())
    .bind::<diesel::sql_types::Uuid, _>(Uuid::new_v4())
    .load(conn)
    .await
}

/// The rows a settle may touch: this claim's, still pending. A stale sender (its lease expired and
/// another sender claimed the row, or an operator moved it) matches nothing.
macro_rules! claimed {
    ($claim:expr) => {
        deliveries::table
            .filter(deliveries::event_id.eq($claim.event_id))
            .filter(deliveries::claim_token.eq($claim.claim_token))
            .filter(deliveries::status.eq(PENDING))
    };
}

/// Settles a claim as sent. Returns false (and changes nothing) when the claim is no longer current.
pub async fn mark_sent(
    conn: &mut AsyncPgConnection,
    claim: &ClaimedDelivery,
    attempts: i32,
    message_id: &str,
) -> QueryResult<bool> {
    diesel::update(claimed!(claim))
        .set((
            deliveries::status.eq(SENT),
            deliveries::attempts.eq(attempts),
            deliveries::message_id.eq(message_id),
            deliveries::sent_at.eq(now),
            deliveries::updated_at.eq(now),
            deliveries::claim_token.eq(None::<Uuid>),
        ))
        .execute(conn)
        .await
        .map(|n| n == 1)
}

/// Settles a claim as "try again in `delay`". Returns false when the claim is no longer current.
pub async fn reschedule(
    conn: &mut AsyncPgConnection,
    claim: &ClaimedDelivery,
    attempts: i32,
    delay: std::time::Duration,
    error: &str,
) -> QueryResult<bool> {
    let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 1000);
    diesel::update(claimed!(claim))
        .set((
            deliveries::attempts.eq(attempts),
            deliveries::next_attempt_at.eq(now.into_sql::<Timestamptz>() + delay_ms.milliseconds()),
            deliveries::last_error.eq(error),
            deliveries::updated_at.eq(now),
            deliveries::claim_token.eq(None::<Uuid>),
        ))
        .execute(conn)
        .await
        .map(|n| n == 1)
}

/// Settles a claim as failed. Returns false when the claim is no longer current; pair it with a
/// `failed_sends` row in the same transaction only when it returns true.
pub async fn mark_failed(
    conn: &mut AsyncPgConnection,
    claim: &ClaimedDelivery,
    attempts: i32,
    error: &str,
) -> QueryResult<bool> {
    diesel::update(claimed!(claim))
        .set((
            deliveries::status.eq(FAILED),
            deliveries::attempts.eq(attempts),
            deliveries::last_error.eq(error),
            deliveries::updated_at.eq(now),
            deliveries::claim_token.eq(None::<Uuid>),
        ))
        .execute(conn)
        .await
        .map(|n| n == 1)
}

/// The operator's retry of a failed send: in one conditional statement, the delivery goes back to
/// pending (due now, unclaimed) and the failed send is resolved, only if both are still failed
/// and unresolved. Two operators retrying at once: one gets `Some(event_id)`, the other `None`.
/// The sender then sends it under its own lease, as any other delivery.
pub async fn requeue_failed_send(
    conn: &mut AsyncPgConnection,
    failed_send_id: i64,
) -> QueryResult<Option<Uuid>> {
    #[derive(QueryableByName)]
    struct Requeued {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        event_id: Uuid,
    }
    let requeued: Option<Requeued> = diesel::sql_query(
        "WITH moved AS ( \
             UPDATE deliveries d \
             SET status = 'pending', next_attempt_at = now(), claim_token = NULL, updated_at = now() \
             FROM failed_sends f \
             WHERE f.id = $1 AND f.resolved_at IS NULL AND d.event_id = f.event_id AND d.status = 'failed' \
             RETURNING d.event_id) \
         UPDATE failed_sends SET resolved_at = now(), updated_at = now() \
         FROM moved WHERE failed_sends.id = $1 AND failed_sends.event_id = moved.event_id \
         RETURNING moved.event_id",
    )
    .bind::<BigInt, _>(failed_send_id)
    .get_result(conn)
    .await
    .optional()?;
    Ok(requeued.map(|r| r.event_id))
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
