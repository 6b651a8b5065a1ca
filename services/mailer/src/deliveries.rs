//! The `deliveries` table: one row per accepted event. Its primary key (the event id) makes the
//! mailer idempotent, and its `next_attempt_at` is the retry schedule that survives restarts.
//!
//! Query functions take a connection; callers own transactions.

use std::{collections::HashSet, time::Duration};

use chrono::{DateTime, Utc};
use diesel::{
    dsl::now,
    prelude::*,
    sql_types::{self, Array, BigInt, Double, Integer, Text},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use events::Envelope;
use uuid::Uuid;

use crate::{
    failed_sends::{self, NewFailedSend},
    schema::deliveries,
};

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

/// Records accepted events in one statement, and returns the ids it inserted: an event already
/// known (a redelivery, a duplicate publish, or its twin earlier in `envelopes`) is left as it was.
pub async fn record(
    conn: &mut AsyncPgConnection,
    envelopes: &[&Envelope],
) -> QueryResult<HashSet<Uuid>> {
    let rows = envelopes
        .iter()
        .map(|envelope| {
            Ok((
                deliveries::event_id.eq(envelope.id),
                deliveries::event_type.eq(envelope.kind()),
                deliveries::recipient.eq(envelope.event.recipient()),
                deliveries::envelope.eq(serde_json::to_value(envelope)?),
            ))
        })
        .collect::<Result<Vec<_>, serde_json::Error>>()
        .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
    let inserted: Vec<Uuid> = diesel::insert_into(deliveries::table)
        .values(rows)
        .on_conflict(deliveries::event_id)
        .do_nothing()
        .returning(deliveries::event_id)
        .get_results(conn)
        .await?;
    Ok(inserted.into_iter().collect())
}

/// Claims up to `limit` due deliveries: pushes their `next_attempt_at` past `lease` (on the
/// database's clock, so replicas with skewed clocks agree) and gives them a fresh claim token. No
/// other sender takes them while this one works, and a crashed sender's rows come back later.
pub async fn claim_due(
    conn: &mut AsyncPgConnection,
    limit: i64,
    lease: Duration,
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

/// How a claimed send ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Sent {
        message_id: String,
    },
    /// Try again after `delay`.
    Retry {
        delay: Duration,
        error: String,
    },
    /// Given up: the delivery fails and a `failed_sends` row keeps it for an operator.
    Failed {
        error: String,
    },
}

/// A send's outcome to write to its claimed delivery, as its `attempts`-th attempt.
#[derive(Debug, Clone, Copy)]
pub struct Settle<'a> {
    pub claim: &'a ClaimedDelivery,
    pub attempts: i32,
    pub outcome: &'a Outcome,
}

/// Writes a batch of outcomes in one transaction, one statement per kind of outcome, and returns
/// the event ids it settled. Each write is conditional on its claim: a delivery whose claim is no
/// longer current (its lease expired and another sender took it, an operator moved it, or it was
/// settled already) is left as it is, and missing from the result. A failure is written with its
/// `failed_sends` row, or not at all.
pub async fn settle(
    conn: &mut AsyncPgConnection,
    batch: &[Settle<'_>],
) -> QueryResult<HashSet<Uuid>> {
    conn.transaction(async |conn| {
        let mut settled = mark_sent(conn, batch).await?;
        settled.extend(reschedule(conn, batch).await?);
        for settle in batch {
            if let Outcome::Failed { error } = settle.outcome
                && mark_failed(conn, settle, error).await?
            {
                settled.insert(settle.claim.event_id);
            }
        }
        Ok(settled)
    })
    .await
}

#[derive(QueryableByName)]
struct Settled {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    event_id: Uuid,
}

/// The columns of `batch`'s claims, for `unnest`.
fn claims<'a>(batch: impl Iterator<Item = &'a Settle<'a>>) -> (Vec<Uuid>, Vec<Uuid>, Vec<i32>) {
    let mut columns = (Vec::new(), Vec::new(), Vec::new());
    for settle in batch {
        columns.0.push(settle.claim.event_id);
        columns.1.push(settle.claim.claim_token);
        columns.2.push(settle.attempts);
    }
    columns
}

async fn mark_sent(
    conn: &mut AsyncPgConnection,
    batch: &[Settle<'_>],
) -> QueryResult<HashSet<Uuid>> {
    let sent: Vec<(&Settle, &str)> = batch
        .iter()
        .filter_map(|settle| match settle.outcome {
            Outcome::Sent { message_id } => Some((settle, message_id.as_str())),
            _ => None,
        })
        .collect();
    if sent.is_empty() {
        return Ok(HashSet::new());
    }
    let (ids, tokens, attempts) = claims(sent.iter().map(|(settle, _)| *settle));
    let message_ids: Vec<&str> = sent.iter().map(|(_, id)| *id).collect();
    let settled: Vec<Settled> = diesel::sql_query(
        "UPDATE deliveries d \
         SET status = 'sent', attempts = v.attempts, message_id = v.message_id, sent_at = now(), \
             updated_at = now(), claim_token = NULL \
         FROM unnest($1, $2, $3, $4) AS v(event_id, claim_token, attempts, message_id) \
         WHERE d.event_id = v.event_id AND d.claim_token = v.claim_token AND d.status = 'pending' \
         RETURNING d.event_id",
    )
    .bind::<Array<sql_types::Uuid>, _>(ids)
    .bind::<Array<sql_types::Uuid>, _>(tokens)
    .bind::<Array<Integer>, _>(attempts)
    .bind::<Array<Text>, _>(message_ids)
    .load(conn)
    .await?;
    Ok(settled.into_iter().map(|s| s.event_id).collect())
}

async fn reschedule(
    conn: &mut AsyncPgConnection,
    batch: &[Settle<'_>],
) -> QueryResult<HashSet<Uuid>> {
    let retries: Vec<(&Settle, f64, &str)> = batch
        .iter()
        .filter_map(|settle| match settle.outcome {
            Outcome::Retry { delay, error } => Some((settle, delay.as_secs_f64(), error.as_str())),
            _ => None,
        })
        .collect();
    if retries.is_empty() {
        return Ok(HashSet::new());
    }
    let (ids, tokens, attempts) = claims(retries.iter().map(|(settle, _, _)| *settle));
    let delays: Vec<f64> = retries.iter().map(|(_, delay, _)| *delay).collect();
    let errors: Vec<String> = retries
        .iter()
        .map(|(_, _, error)| storable(error))
        .collect();
    let settled: Vec<Settled> = diesel::sql_query(
        "UPDATE deliveries d \
         SET attempts = v.attempts, next_attempt_at = now() + make_interval(secs => v.delay), \
             last_error = v.error, updated_at = now(), claim_token = NULL \
         FROM unnest($1, $2, $3, $4, $5) AS v(event_id, claim_token, attempts, delay, error) \
         WHERE d.event_id = v.event_id AND d.claim_token = v.claim_token AND d.status = 'pending' \
         RETURNING d.event_id",
    )
    .bind::<Array<sql_types::Uuid>, _>(ids)
    .bind::<Array<sql_types::Uuid>, _>(tokens)
    .bind::<Array<Integer>, _>(attempts)
    .bind::<Array<Double>, _>(delays)
    .bind::<Array<Text>, _>(errors)
    .load(conn)
    .await?;
    Ok(settled.into_iter().map(|s| s.event_id).collect())
}

/// Error text as Postgres can store it: a server's reply may carry a NUL byte, which `text` refuses.
fn storable(error: &str) -> String {
    error.replace('\0', "\u{FFFD}")
}

/// Marks one delivery failed and writes its `failed_sends` row, if its claim is still current.
async fn mark_failed(
    conn: &mut AsyncPgConnection,
    settle: &Settle<'_>,
    error: &str,
) -> QueryResult<bool> {
    let claim = settle.claim;
    let error = &*storable(error);
    let failed = diesel::update(
        deliveries::table
            .filter(deliveries::event_id.eq(claim.event_id))
            .filter(deliveries::claim_token.eq(claim.claim_token))
            .filter(deliveries::status.eq(PENDING)),
    )
    .set((
        deliveries::status.eq(FAILED),
        deliveries::attempts.eq(settle.attempts),
        deliveries::last_error.eq(error),
        deliveries::updated_at.eq(now),
        deliveries::claim_token.eq(None::<Uuid>),
    ))
    .execute(conn)
    .await?;
    if failed == 0 {
        return Ok(false);
    }
    let body = claim.envelope.to_string().into_bytes();
    failed_sends::record(
        conn,
        &NewFailedSend {
            event_id: Some(claim.event_id),
            event_type: Some(&claim.event_type),
            recipient: Some(&claim.recipient),
            template: Some(&claim.event_type),
            payload: Some(&claim.envelope),
            body: &body,
            error,
            attempts: settle.attempts,
        },
    )
    .await?;
    Ok(true)
}

/// The operator's retry of a failed send: in one conditional statement, the delivery goes back to
/// pending with a fresh schedule (attempts reset, due now, unclaimed) and the failed send is
/// resolved, its history noting the retry and `by` whom, only if both are still failed and
/// unresolved. Two operators retrying at once: one gets `Some(event_id)`, the other `None`. The
/// sender then sends it under its own lease, as any other delivery, with the usual backoff; if it
/// fails for good again, the same row reopens with the new cause.
pub async fn requeue_failed_send(
    conn: &mut AsyncPgConnection,
    failed_send_id: i64,
    by: &str,
) -> QueryResult<Option<Uuid>> {
    #[derive(QueryableByName)]
    struct Requeued {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        event_id: Uuid,
    }
    let requeued: Option<Requeued> = diesel::sql_query(
        "WITH moved AS ( \
             UPDATE deliveries d \
             SET status = 'pending', attempts = 0, next_attempt_at = now(), claim_token = NULL, \
                 updated_at = now() \
             FROM failed_sends f \
             WHERE f.id = $1 AND f.resolved_at IS NULL AND d.event_id = f.event_id AND d.status = 'failed' \
             RETURNING d.event_id) \
         UPDATE failed_sends SET resolved_at = now(), updated_at = now(), \
             history = history || jsonb_build_array(jsonb_build_object( \
                 'at', now(), 'what', 'retried', 'by', $2::text)) \
         FROM moved WHERE failed_sends.id = $1 AND failed_sends.event_id = moved.event_id \
         RETURNING moved.event_id",
    )
    .bind::<BigInt, _>(failed_send_id)
    .bind::<Text, _>(by)
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
