//! Publishes outbox rows to RabbitMQ.
//!
//! Any number of relays (one per replica) can run: each claims a batch with
//! `FOR UPDATE SKIP LOCKED`, publishes it with confirms, and marks rows published only after the
//! broker's ack, all inside one transaction. A row whose publish failed gets a later
//! `next_attempt_at`. Rows are selected by state, never by a high-water mark on ids, because ids
//! commit out of order. The relay wakes on `NOTIFY outbox` and polls as a fallback.
//!
//! A message the broker returns (no queue bound for its type, as when accounts ships a new event
//! before the mailer binds it) is never marked published: the publisher matches a batch's returns
//! to rows by `message_id`, and those rows wait in the outbox with their own backoff. Waiting for
//! confirms is bounded (a broker under a resource alarm blocks without closing the connection).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use amqp::{Backoff, PublishError, Publisher};
use chrono::Utc;
use diesel::{
    prelude::*,
    sql_types::{Array, BigInt, Text},
};
use diesel_async::{AsyncConnection, RunQueryDsl};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{db::Pool, schema::outbox};

const BATCH: i64 = 500;
/// Batches in flight at once, each on its own channel: while one waits for the broker's confirms,
/// another is claimed and published. Each lane's confirms and returns stay on its channel, so a
/// batch never mistakes another's returned message for its own.
pub const LANES: usize = 2;
/// The longest wait for a batch's publisher confirms. A broker under a resource alarm blocks
/// publishers without closing the connection; past this the unconfirmed rows are rescheduled and the
/// relay reconnects, so it never hangs past SIGTERM.
const CONFIRM_TIMEOUT: Duration = amqp::DEFAULT_CONFIRM_TIMEOUT;
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(60);
/// The backlog gauges are refreshed at most this often, not on every wake.
const BACKLOG_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("database: {0}")]
    Database(#[from] diesel::result::Error),
    #[error("database pool: {0}")]
    Pool(#[from] crate::db::PoolError),
    #[error("broker: {0}")]
    Broker(PublishError),
}

pub struct OutboxRelay {
    pub pool: Pool,
    pub database_url: SecretString,
    pub amqp_url: SecretString,
    pub poll_interval: Duration,
    pub retention: Duration,
}

impl OutboxRelay {
    /// Runs until `shutdown` fires, finishing the batches in flight first (a diesel-async
    /// transaction must not be dropped half-way).
    pub async fn run(self, shutdown: CancellationToken) {
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(database::listen(
            self.database_url.expose_secret().to_string(),
            database::ConnectionLimits::default(),
            "outbox",
            wake.clone(),
            shutdown.clone(),
        ));
        let mut reconnect = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        while !shutdown.is_cancelled() {
            let (connection, publishers) = match self.connect().await {
                Ok(connected) => {
                    reconnect.reset();
                    self.set_connected(true);
                    tracing::info!("outbox relay connected to the broker");
                    connected
                }
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay cannot reach the broker; events wait in the outbox");
                    tokio::select! {
                        () = reconnect.wait() => continue,
                        () = shutdown.cancelled() => break,
                    }
                }
            };
            // Set by the first lane that loses the broker; the others finish their batch and stop.
            let lost = CancellationToken::new();
            let stopping = CancellationToken::new();
            let stop_lanes = async {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = lost.cancelled() => {}
                }
                stopping.cancel();
            };
            let lanes = publishers
                .iter()
                .enumerate()
                .map(|(n, publisher)| self.lane(n == 0, publisher, &wake, &stopping, &lost));
            tokio::join!(stop_lanes, futures_util::future::join_all(lanes));
            if shutdown.is_cancelled() {
                break;
            }
            self.set_connected(false);
            abandon(connection).await;
            tokio::select! {
                () = reconnect.wait() => {}
                () = shutdown.cancelled() => break,
            }
        }
        self.set_connected(false);
        listener.abort();
        tracing::info!("outbox relay stopped");
    }

    fn set_connected(&self, connected: bool) {
        metrics::gauge!("accounts_amqp_connected").set(if connected { 1.0 } else { 0.0 });
    }

    /// One lane: claims and publishes batches on its own channel until `stopping` fires. A full
    /// batch means more may wait, so it goes on at once and wakes another lane to help; otherwise
    /// it sleeps until `NOTIFY outbox` or the poll interval. A lost broker fires `lost`. The
    /// `first` lane also keeps the outbox (retention, backlog gauges).
    async fn lane(
        &self,
        first: bool,
        publisher: &Publisher,
        wake: &Notify,
        stopping: &CancellationToken,
        lost: &CancellationToken,
    ) {
        let mut database_backoff =
            Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut last_housekeeping: Option<Instant> = None;
        let mut last_backlog: Option<Instant> = None;
        while !stopping.is_cancelled() {
            match self.publish_batch(publisher).await {
                Ok(count) => {
                    database_backoff.reset();
                    if count == BATCH as usize {
                        wake.notify_one();
                        continue;
                    }
                }
                Err(RelayError::Broker(e)) => {
                    tracing::warn!(error = %e, "lost the broker; reconnecting");
                    lost.cancel();
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay database error; retrying");
                    tokio::select! {
                        () = database_backoff.wait() => continue,
                        () = stopping.cancelled() => return,
                    }
                }
            }
            if first {
                if last_housekeeping.is_none_or(|at| at.elapsed() >= HOUSEKEEPING_EVERY) {
                    if let Err(e) = self.housekeeping().await {
                        tracing::warn!(error = %e, "outbox housekeeping failed");
                    }
                    last_housekeeping = Some(Instant::now());
                }
                if last_backlog.is_none_or(|at| at.elapsed() >= BACKLOG_EVERY) {
                    if let Err(e) = self.record_backlog().await {
                        tracing::debug!(error = %e, "could not measure the outbox backlog");
                    }
                    last_backlog = Some(Instant::now());
                }
            }
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(self.poll_interval) => {}
                () = stopping.cancelled() => return,
            }
        }
    }

    async fn connect(&self) -> Result<(lapin::Connection, Vec<Publisher>), lapin::Error> {
        let connection = amqp::connect(self.amqp_url.expose_secret(), "accounts-relay").await?;
        let mut publishers = Vec::with_capacity(LANES);
        for _ in 0..LANES {
            publishers.push(
                Publisher::open(&connection)
                    .await?
                    .with_confirm_timeout(CONFIRM_TIMEOUT),
            );
        }
        Ok((connection, publishers))
    }

    /// Claims, publishes and settles one batch. Returns how many rows it claimed.
    async fn publish_batch(&self, publisher: &Publisher) -> Result<usize, RelayError> {
        let mut conn = self.pool.get().await?;
        // A broker failure half-way still commits: acked rows stay published, the rest are
        // rescheduled, and the error is reported after the commit.
        let (claimed, broker_error) = conn
            .transaction::<_, RelayError, _>(async move |conn| {
                // The envelope as Postgres prints it: no parse into a `Value` and back.
                let rows: Vec<(i64, Uuid, String, String, i32)> = outbox::table
                    .filter(outbox::published_at.is_null())
                    .filter(outbox::next_attempt_at.le(Utc::now()))
                    .order(outbox::id)
                    .limit(BATCH)
                    .for_update()
                    .skip_locked()
                    .select((
                        outbox::id,
                        outbox::event_id,
                        outbox::event_type,
                        diesel::dsl::sql::<diesel::sql_types::Text>("envelope::text"),
                        outbox::attempts,
                    ))
                    .load(conn)
                    .await?;
                if rows.is_empty() {
                    return Ok((0, None));
                }
                let ids: Vec<String> = rows.iter().map(|(_, id, ..)| id.to_string()).collect();
                let messages: Vec<(&str, &str, &[u8])> = rows
                    .iter()
                    .zip(&ids)
                    .map(|((_, _, kind, envelope, _), id)| (kind.as_str(), id.as_str(), envelope.as_bytes()))
                    .collect();
                let results = publisher.publish_batch(&messages).await;

                let mut published = Vec::new();
                let (mut failed, mut errors) = (Vec::new(), Vec::new());
                let mut broker_error = None;
                let mut unroutable = 0usize;
                for ((id, event_id, kind, _, _), result) in rows.iter().zip(results) {
                    match result {
                        Ok(()) => published.push(*id),
                        Err(error) => {
                            failed.push(*id);
                            errors.push(error.to_string());
                            if matches!(error, PublishError::Unroutable(_)) {
                                // Expected while a new type waits for its consumer; summarised below.
                                unroutable += 1;
                                tracing::debug!(%event_id, event_type = %kind, "event returned unroutable; will retry");
                            } else {
                                tracing::warn!(%event_id, event_type = %kind, error = %error, "event not published; will retry");
                            }
                            if error.is_connection_failure() {
                                broker_error.get_or_insert(error);
                            }
                        }
                    }
                }
                if unroutable > 0 {
                    tracing::warn!(unroutable, "events returned by the broker (no queue bound for their type); they stay in the outbox and are retried with backoff");
                }
                diesel::update(outbox::table.filter(outbox::id.eq_any(&published)))
                    .set(outbox::published_at.eq(Utc::now()))
                    .execute(conn)
                    .await?;
                reschedule(conn, &failed, &errors).await?;
                metrics::counter!("accounts_outbox_published_total").increment(published.len() as u64);
                Ok((rows.len(), broker_error))
            })
        .await?;
        match broker_error {
            Some(e) => Err(RelayError::Broker(e)),
            None => Ok(claimed),
        }
    }

    async fn housekeeping(&self) -> Result<(), RelayError> {
        let mut conn = self.pool.get().await?;
        let cutoff = Utc::now() - chrono::Duration::from_std(self.retention).unwrap_or_default();
        let deleted = diesel::delete(
            outbox::table
                .filter(outbox::published_at.is_not_null())
                .filter(outbox::published_at.lt(cutoff)),
        )
        .execute(&mut conn)
        .await?;
        if deleted > 0 {
            tracing::info!(deleted, "removed published outbox rows past retention");
        }
        Ok(())
    }

    async fn record_backlog(&self) -> Result<(), RelayError> {
        let mut conn = self.pool.get().await?;
        let (count, oldest): (i64, Option<chrono::DateTime<Utc>>) = outbox::table
            .filter(outbox::published_at.is_null())
            .select((
                diesel::dsl::count_star(),
                diesel::dsl::min(outbox::created_at),
            ))
            .first(&mut conn)
            .await?;
        let age = oldest.map_or(0.0, |at| {
            (Utc::now() - at).num_milliseconds() as f64 / 1000.0
        });
        metrics::gauge!("accounts_outbox_backlog").set(count as f64);
        metrics::gauge!("accounts_outbox_oldest_age_seconds").set(age.max(0.0));
        Ok(())
    }
}

/// Closes a connection the relay gives up on, without waiting long for a broker that may be stuck.
async fn abandon(connection: lapin::Connection) {
    let closing = connection.close(200, "outbox relay reconnecting".into());
    if tokio::time::timeout(Duration::from_secs(1), closing)
        .await
        .is_err()
    {
        tracing::debug!("the broker did not acknowledge closing the relay's connection");
    }
}

/// Puts back rows the broker did not take, each with its error, one more attempt and its own
/// delay (1 s, 2 s, 4 s ... capped at 256 s), in one statement.
async fn reschedule(
    conn: &mut diesel_async::AsyncPgConnection,
    ids: &[i64],
    errors: &[String],
) -> QueryResult<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    diesel::sql_query(
        "UPDATE outbox o \
         SET attempts = o.attempts + 1, last_error = f.error, \
             next_attempt_at = now() + make_interval(secs => power(2, least(greatest(o.attempts, 0), 8))) \
         FROM unnest($1, $2) AS f(id, error) \
         WHERE o.id = f.id",
    )
    .bind::<Array<BigInt>, _>(ids)
    .bind::<Array<Text>, _>(errors)
    .execute(conn)
    .await
}
