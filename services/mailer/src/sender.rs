//! The sender: claims due deliveries, renders and sends them with bounded concurrency, and settles
//! each one (sent, rescheduled with backoff, or failed into `failed_sends`). Every settle is
//! conditional on the claim's token and retried within the lease, so a sender whose lease ran out
//! never overwrites the outcome of the sender that took the row over.
//!
//! Any number of senders (one per replica) can run: rows are claimed with `FOR UPDATE SKIP LOCKED`
//! and a lease. The sender wakes on `NOTIFY mailer_deliveries`, on its own consumer's inserts, and
//! when the earliest scheduled retry falls due, with polling as a fallback.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use amqp::Backoff;
use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use events::Envelope;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::{
    sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use crate::{
    db::{self, Pool},
    deliveries::{self, ClaimedDelivery, Outcome, Settle},
    redact,
    smtp::{Connection, Failure, SendError, SmtpSender},
    templates::Templates,
};
use telemetry::{mask_address, mask_addresses};

/// The Postgres channel the `deliveries` insert trigger notifies.
pub const CHANNEL: &str = "mailer_deliveries";

/// How long a sender keeps retrying to settle a send (the database restarting, a broken pooled
/// connection) before it gives up and leaves the row to its lease.
pub const SETTLE_WINDOW: Duration = Duration::from_secs(10);

/// What the lease adds to the send deadline and the settle window, so that the claim outlives
/// everything its holder may still do with it.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// How long a claim keeps other senders away: longer than a whole send plus its settle, so only a
/// crashed sender's rows come back, and soon (a kill -9 delays its mail by about a lease). A send
/// (a first one, or one on a fresh connection after a pooled one turned out closed) starts only
/// while the lease still covers a whole send deadline, so no mail is on the wire once the row may
/// belong to another sender.
pub fn lease_for(send_deadline: Duration) -> Duration {
    send_deadline + SETTLE_WINDOW + LEASE_MARGIN
}

/// Rows claimed per round trip at most.
const MAX_BATCH: usize = 64;
/// Outcomes written per transaction at most.
const SETTLE_BATCH: usize = 256;

/// Renders and sends the mail for `envelope` within the claim's lease, and returns its
/// Message-ID. Each send on one connection is bounded by the send deadline; a pooled connection
/// that the server turns out to have closed is replaced by a fresh one once, at no attempt's
/// cost, when the lease still covers a whole send deadline.
async fn deliver(
    context: &SendContext,
    pending: &Pending,
    envelope: &Envelope,
) -> Result<String, SendError> {
    let mail = context
        .templates
        .render(&envelope.event)
        .map_err(|e| SendError::Permanent(e.to_string()))?;
    let message = context
        .smtp
        .compose(envelope.id, envelope.event.recipient(), &mail)?;
    let message_id = message
        .headers()
        .get_raw("Message-ID")
        .unwrap_or_default()
        .to_string();
    let mut connection = Connection::Pooled;
    loop {
        let sent = tokio::time::timeout(
            context.send_deadline,
            context.smtp.send(&message, connection),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Failure::Send(SendError::Transient(format!(
                "the send took longer than {} s",
                context.send_deadline.as_secs()
            ))))
        });
        match sent {
            Ok(()) => return Ok(message_id),
            Err(Failure::Stale(error))
                if connection == Connection::Pooled && pending.may_send(context.send_deadline) =>
            {
                tracing::info!(event_id = %envelope.id, error = %loggable(&error.to_string()), "the SMTP server had closed the pooled connection; sending on a fresh one");
                connection = Connection::Fresh;
            }
            Err(failure) => return Err(failure.into_error()),
        }
    }
}

/// The retry schedule: `base * 2^(attempts-1)`, capped, with jitter in the upper half so that
/// mail that failed together does not retry together.
pub fn retry_delay(base: Duration, cap: Duration, attempts: u32) -> Duration {
    let ceiling = base
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
        .min(cap);
    let half = ceiling / 2;
    half + half.mul_f64(rand::random::<f64>())
}

/// What a sender needs to process deliveries; cheap to clone into each send task.
#[derive(Clone)]
pub struct SendContext {
    pub pool: Pool,
    pub templates: Arc<Templates>,
    pub smtp: SmtpSender,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// A whole send (connect, every command, the data) gives up after this, as a transient failure.
    pub send_deadline: Duration,
    /// The longest wait for the database's answer to one statement or transaction; a connection
    /// that overruns it is closed (see [`database::within`]).
    pub database_deadline: Duration,
}

impl SendContext {
    pub fn lease(&self) -> Duration {
        lease_for(self.send_deadline)
    }
}

pub struct DeliveryWorker {
    pub context: SendContext,
    pub database_url: SecretString,
    /// The limits every connection of the mailer carries, the listener's too.
    pub database_limits: database::ConnectionLimits,
    pub concurrency: usize,
    pub poll_interval: Duration,
    /// Woken by the consumer after it records an event, and by settled retries.
    pub wake: Arc<Notify>,
}

impl DeliveryWorker {
    /// Runs until `shutdown` fires, then waits for the sends in flight to finish and settle.
    pub async fn run(self, shutdown: CancellationToken) {
        let listener = tokio::spawn(database::listen(
            self.database_url.expose_secret().to_string(),
            self.database_limits,
            CHANNEL,
            self.wake.clone(),
            shutdown.clone(),
        ));
        let permits = Arc::new(Semaphore::new(self.concurrency));
        // Sends hand their outcomes to one settler, which writes whatever has gathered in one
        // transaction. Each outcome keeps its send's permit until it is written, so outcomes that
        // cannot be written (the database is away) hold back new claims.
        let (outcomes, gathered) = mpsc::unbounded_channel();
        let settler = tokio::spawn(settle_outcomes(
            self.context.pool.clone(),
            self.context.database_deadline,
            gathered,
            self.wake.clone(),
        ));
        let mut in_flight = JoinSet::new();
        let mut database_backoff =
            Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            while in_flight.try_join_next().is_some() {}
            let first = tokio::select! {
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                () = shutdown.cancelled() => break,
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match permits.clone().try_acquire_owned() {
                    Ok(permit) => batch.push(permit),
                    Err(_) => break,
                }
            }
            // Measured before the claim, so the local view of the lease never outlasts the database's.
            let lease_ends = Instant::now() + self.context.lease();
            match self.claim(batch.len()).await {
                Ok(rows) if !rows.is_empty() => {
                    database_backoff.reset();
                    for (row, permit) in rows.into_iter().zip(batch) {
                        let pending = Pending {
                            row,
                            _permit: permit,
                            lease_ends,
                        };
                        in_flight.spawn(process(self.context.clone(), pending, outcomes.clone()));
                    }
                }
                Ok(_) => {
                    drop(batch);
                    let idle = self.idle_for().await;
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(idle) => {}
                        () = shutdown.cancelled() => break,
                    }
                }
                Err(e) => {
                    drop(batch);
                    tracing::warn!(error = %e, "the sender cannot claim deliveries; retrying");
                    tokio::select! {
                        () = database_backoff.wait() => {}
                        () = shutdown.cancelled() => break,
                    }
                }
            }
        }
        let remaining = in_flight.len();
        if remaining > 0 {
            tracing::info!(remaining, "waiting for mail in flight");
        }
        while in_flight.join_next().await.is_some() {}
        drop(outcomes);
        if let Err(e) = settler.await {
            tracing::error!(error = %e, "the settler failed");
        }
        listener.abort();
        tracing::info!("sender stopped");
    }

    async fn claim(&self, limit: usize) -> anyhow::Result<Vec<ClaimedDelivery>> {
        let lease = self.context.lease();
        db::within(
            &self.context.pool,
            self.context.database_deadline,
            async |conn| deliveries::claim_due(conn, limit as i64, lease).await,
        )
        .await
        .map_err(db::into_anyhow)
    }

    /// How long to sleep when nothing is due: until the earliest scheduled retry, at most the
    /// poll interval.
    async fn idle_for(&self) -> Duration {
        let next = db::within(
            &self.context.pool,
            self.context.database_deadline,
            async |conn| deliveries::next_due(conn).await,
        )
        .await
        .ok()
        .flatten();
        next.and_then(|at| (at - Utc::now()).to_std().ok())
            .map_or(self.poll_interval, |until| {
                until.min(self.poll_interval) + Duration::from_millis(5)
            })
    }
}

/// A claimed delivery on its way through a send and its settle.
struct Pending {
    row: ClaimedDelivery,
    /// One of the sender's `concurrency` slots, held until the outcome is written.
    _permit: OwnedSemaphorePermit,
    /// When the claim's lease ends, on the local clock (measured before the claim).
    lease_ends: Instant,
}

impl Pending {
    /// Leave a little of the lease unused: a settle that lands after it could race the next claim.
    fn give_up_at(&self) -> Instant {
        self.lease_ends
            .checked_sub(LEASE_MARGIN)
            .unwrap_or(self.lease_ends)
    }

    /// Whether a send started now ends within the lease (its settle then has what is left of the
    /// settle window). A send that cannot is never started: once the lease is over, another sender
    /// may claim the row and send it too.
    fn may_send(&self, send_deadline: Duration) -> bool {
        Instant::now() + send_deadline <= self.give_up_at()
    }
}

/// A send's outcome, waiting for the settler.
struct Finished {
    pending: Pending,
    attempts: i32,
    outcome: Outcome,
}

/// Sends one claimed delivery and hands its outcome to the settler.
async fn process(
    context: SendContext,
    pending: Pending,
    outcomes: mpsc::UnboundedSender<Finished>,
) {
    let row = &pending.row;
    let attempts = row.attempts + 1;
    // The accounts request that caused this mail, to follow one flow across both services' logs.
    let request_id = request_id(row);
    if !pending.may_send(context.send_deadline) {
        // The claim came back too late (the database held it): the row is due again, and
        // another claim (maybe this sender's next) sends it. No attempt is charged.
        metrics::counter!("mailer_late_claims_total").increment(1);
        tracing::warn!(event_id = %row.event_id, request_id, "this claim came back too late to send within its lease; the row is left to the next claim");
        return;
    }
    let result = match Envelope::deserialize(&row.envelope) {
        Ok(envelope) => deliver(&context, &pending, &envelope).await,
        Err(e) => Err(SendError::Permanent(format!(
            "the stored event is unreadable: {e}"
        ))),
    };
    let recipient = mask_address(&row.recipient);
    let outcome = match result {
        Ok(message_id) => {
            metrics::counter!("mailer_sent_total", "type" => row.event_type.clone()).increment(1);
            tracing::info!(event_id = %row.event_id, request_id, event_type = %row.event_type, %recipient, attempts, "mail sent");
            Outcome::Sent { message_id }
        }
        Err(SendError::Transient(error)) if (attempts as u32) < context.max_attempts => {
            let delay = retry_delay(context.retry_base, context.retry_cap, attempts as u32);
            metrics::counter!("mailer_retried_total", "type" => row.event_type.clone())
                .increment(1);
            tracing::warn!(
                event_id = %row.event_id, request_id, event_type = %row.event_type, %recipient, attempts,
                retry_in_ms = delay.as_millis() as u64, error = %loggable(&error),
                "mail not sent; will retry"
            );
            Outcome::Retry { delay, error }
        }
        Err(error) => {
            let reason = if error.is_permanent() {
                "permanent"
            } else {
                "attempts exhausted"
            };
            metrics::counter!("mailer_failed_total", "type" => row.event_type.clone(), "reason" => reason)
                .increment(1);
            tracing::error!(
                event_id = %row.event_id, request_id, event_type = %row.event_type, %recipient, attempts,
                error = %loggable(&error.to_string()), reason, "mail not sent; recording it in failed_sends"
            );
            Outcome::Failed {
                error: error.to_string(),
            }
        }
    };
    // The settler outlives every send; if it is gone, the lease brings the row back.
    let _ = outcomes.send(Finished {
        pending,
        attempts,
        outcome,
    });
}

/// A send's error as a log line may carry it: servers repeat the recipient's address in their
/// replies, and content filters quote the link they blocked.
fn loggable(error: &str) -> String {
    redact::links(&mask_addresses(error))
}

fn request_id(row: &ClaimedDelivery) -> &str {
    row.envelope["correlation_id"].as_str().unwrap_or("-")
}

/// Writes outcomes as they come, whatever has gathered meanwhile in one transaction, until every
/// sender of outcomes is gone.
async fn settle_outcomes(
    pool: Pool,
    deadline: Duration,
    mut outcomes: mpsc::UnboundedReceiver<Finished>,
    wake: Arc<Notify>,
) {
    let mut batch = Vec::new();
    while outcomes.recv_many(&mut batch, SETTLE_BATCH).await > 0 {
        settle_batch(&pool, deadline, std::mem::take(&mut batch), &wake).await;
    }
}

/// Writes one batch of outcomes, retrying while the database is away. An outcome whose lease is
/// about to end is given up on (the lease brings its row back to be sent again); the others are
/// retried together. A batch the database refuses is written one outcome at a time, so one outcome
/// it cannot store never holds back the others.
async fn settle_batch(pool: &Pool, deadline: Duration, mut batch: Vec<Finished>, wake: &Notify) {
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .without_max_times()
        .build();
    loop {
        batch.retain(|finished| {
            let row = &finished.pending.row;
            let keep = Instant::now() < finished.pending.give_up_at();
            if !keep {
                tracing::error!(event_id = %row.event_id, request_id = request_id(row), "could not record the outcome of a send; the lease brings it back");
            }
            keep
        });
        if batch.is_empty() {
            return;
        }
        match write(pool, deadline, &batch).await {
            Ok(settled) => {
                report(&batch, &settled, wake);
                return;
            }
            Err(e) if refused(&e) && batch.len() > 1 => {
                tracing::warn!(outcomes = batch.len(), error = %e, "the database refused a batch of outcomes; writing them one at a time");
                for finished in batch {
                    Box::pin(settle_batch(pool, deadline, vec![finished], wake)).await;
                }
                return;
            }
            Err(e) if refused(&e) => {
                let row = &batch[0].pending.row;
                tracing::error!(event_id = %row.event_id, request_id = request_id(row), error = %e, "the database refused this send's outcome; the lease brings it back");
                return;
            }
            Err(e) => {
                let wait = delays.next().unwrap_or(Duration::from_secs(2));
                tracing::warn!(outcomes = batch.len(), error = %e, retry_in_ms = wait.as_millis() as u64, "settling sends failed; retrying within their leases");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Whether the database refused the statement itself (as opposed to being unreachable or losing a
/// race), so that trying the same batch again cannot help.
fn refused(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<diesel::result::Error>()
        .is_some_and(|e| !crate::db::is_transient(e))
}

async fn write(
    pool: &Pool,
    deadline: Duration,
    batch: &[Finished],
) -> anyhow::Result<HashSet<uuid::Uuid>> {
    let settles: Vec<Settle> = batch
        .iter()
        .map(|finished| Settle {
            claim: &finished.pending.row,
            attempts: finished.attempts,
            outcome: &finished.outcome,
        })
        .collect();
    db::within(pool, deadline, async |conn| {
        deliveries::settle(conn, &settles).await
    })
    .await
    .map_err(db::into_anyhow)
}

fn report(batch: &[Finished], settled: &HashSet<uuid::Uuid>, wake: &Notify) {
    let mut rescheduled = false;
    for finished in batch {
        let row = &finished.pending.row;
        if settled.contains(&row.event_id) {
            rescheduled |= matches!(finished.outcome, Outcome::Retry { .. });
        } else {
            metrics::counter!("mailer_stale_settles_total").increment(1);
            tracing::warn!(event_id = %row.event_id, request_id = request_id(row), attempts = finished.attempts, "this send's claim is no longer current (its lease expired or an operator moved it); its outcome was not recorded");
        }
    }
    if rescheduled {
        // The sender may be sleeping on an older "next due" time.
        wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_and_is_capped() {
        let base = Duration::from_millis(1000);
        let cap = Duration::from_millis(5000);
        let first = retry_delay(base, cap, 1);
        assert!(
            first >= Duration::from_millis(500) && first <= base,
            "{first:?}"
        );
        let third = retry_delay(base, cap, 3);
        assert!(third >= Duration::from_millis(2000), "{third:?}");
        assert!(retry_delay(base, cap, 30) <= cap);
    }
}
