//! The AMQP consumer: records each event in `deliveries` (idempotently, by event id) and acks only
//! after the commit. Unreadable messages go to `failed_sends` and are rejected into the dead-letter
//! exchange, so the raw bytes stay inspectable in `mailer.dead`.
//!
//! A supervisor loop reconnects with capped backoff and re-declares the topology every time.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use amqp::Backoff;
use events::{Envelope, Event};
use futures_util::StreamExt;
use lapin::{
    Channel, ExchangeKind,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions,
        BasicRejectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    db::{self, Pool},
    deliveries,
    failed_sends::{self, NewFailedSend},
};
use telemetry::mask_address;

/// The mailer's work queue, bound to every event type.
pub const QUEUE: &str = "mailer";
/// Where rejected (poison) messages go.
pub const DEAD_LETTER_EXCHANGE: &str = "mailer.dlx";
pub const DEAD_LETTER_QUEUE: &str = "mailer.dead";
/// Deliveries of one message before the broker dead-letters it (`x-delivery-limit`).
pub const DELIVERY_LIMIT: i32 = 20;
/// Messages recorded per statement at most (Postgres takes at most 65,535 parameters).
const MAX_BATCH: usize = 1000;

#[derive(Debug, thiserror::Error)]
enum ConsumeError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("database: {0}")]
    Database(#[from] diesel::result::Error),
    #[error("database pool: {0}")]
    Pool(#[from] crate::db::PoolError),
    #[error("the database did not answer within {} s", .0.as_secs_f32())]
    Stalled(Duration),
    #[error("the broker ended the consumer")]
    Ended,
}

pub struct Consumer {
    pub pool: Pool,
    pub amqp_url: SecretString,
    pub prefetch: u16,
    /// True while a consumer is registered with the broker (readiness).
    pub connected: Arc<AtomicBool>,
    /// Wakes the sender after an event is recorded.
    pub wake: Arc<Notify>,
    /// The longest wait for the database's answer (see [`db::within`]).
    pub database_deadline: Duration,
}

impl From<db::WithinError<diesel::result::Error>> for ConsumeError {
    fn from(error: db::WithinError<diesel::result::Error>) -> Self {
        match error {
            db::WithinError::Pool(e) => ConsumeError::Pool(e),
            db::WithinError::Stalled(after) => ConsumeError::Stalled(after),
            db::WithinError::Query(e) => ConsumeError::Database(e),
        }
    }
}

impl Consumer {
    /// Consumes until `shutdown` fires, reconnecting after any failure. The message in hand is
    /// always finished (recorded and acked) before stopping.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        while !shutdown.is_cancelled() {
            let started = std::time::Instant::now();
            match self.consume(&shutdown, &mut backoff).await {
                Ok(()) => break,
                Err(e) => {
                    self.set_connected(false);
                    // Each reconnect redelivers what was in hand and counts toward the queue's
                    // delivery limit: don't consume again until the database answers.
                    if matches!(
                        e,
                        ConsumeError::Database(_)
                            | ConsumeError::Pool(_)
                            | ConsumeError::Stalled(_)
                    ) {
                        tracing::warn!(error = %e, "the consumer lost the database; waiting for it before consuming again");
                        if !self.wait_for_database(&shutdown).await {
                            break;
                        }
                    }
                    // A connection that held for a while was healthy: start the backoff over.
                    if started.elapsed() > Duration::from_secs(30) {
                        backoff.reset();
                    }
                    tracing::warn!(error = %e, "the consumer stopped; reconnecting");
                }
            }
            tokio::select! {
                () = backoff.wait() => {}
                () = shutdown.cancelled() => break,
            }
        }
        self.set_connected(false);
        tracing::info!("consumer stopped");
    }

    /// Waits until a pooled connection answers; false if `shutdown` fired first.
    async fn wait_for_database(&self, shutdown: &CancellationToken) -> bool {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let answered = db::within(&self.pool, self.database_deadline, async |conn| {
                diesel_async::RunQueryDsl::execute(diesel::sql_query("SELECT 1"), conn).await
            })
            .await;
            if answered.is_ok() {
                return true;
            }
            tokio::select! {
                () = backoff.wait() => {}
                () = shutdown.cancelled() => return false,
            }
        }
    }

    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
        metrics::gauge!("mailer_amqp_connected").set(if connected { 1.0 } else { 0.0 });
    }

    async fn consume(
        &self,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<(), ConsumeError> {
        let connection = amqp::connect(self.amqp_url.expose_secret(), "mailer").await?;
        let channel = connection.create_channel().await?;
        declare_topology(&channel).await?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let deliveries = channel
            .basic_consume(
                QUEUE.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.set_connected(true);
        tracing::info!("consuming from the {QUEUE} queue");
        let tag = deliveries.tag();
        // Whatever the broker has delivered by the time the previous batch is done, recorded in
        // one statement and acked in one frame.
        let mut batches = deliveries.ready_chunks(usize::from(self.prefetch).min(MAX_BATCH));
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                next = batches.next() => match next {
                    Some(batch) => {
                        self.handle_batch(batch).await?;
                        // Only a handled message proves the database is there too.
                        backoff.reset();
                    }
                    None => return Err(ConsumeError::Ended),
                },
            }
        }
        self.set_connected(false);
        // Messages prefetched but not handled go back to the queue when the channel closes.
        let closed = async {
            channel
                .basic_cancel(tag, BasicCancelOptions::default())
                .await?;
            channel.close(200, "mailer stopping".into()).await?;
            connection.close(200, "mailer stopping".into()).await
        };
        if let Err(e) = closed.await {
            tracing::debug!(error = %e, "closing the broker connection");
        }
        Ok(())
    }

    /// Records a batch of messages in one statement and acks them with one frame (`multiple`, up
    /// to the batch's last). Unreadable messages are dead-lettered first, one by one; if the
    /// database refuses the statement, the batch is taken one message at a time, so only the row
    /// it refuses is dead-lettered.
    async fn handle_batch(
        &self,
        batch: Vec<Result<Delivery, lapin::Error>>,
    ) -> Result<(), ConsumeError> {
        let mut readable = Vec::with_capacity(batch.len());
        for delivery in batch {
            let delivery = delivery?;
            match parse(&delivery.data) {
                Ok(envelope) => readable.push((delivery, envelope)),
                Err(reason) => self.dead_letter(&delivery, &reason).await?,
            }
        }
        let Some((last, _)) = readable.last() else {
            return Ok(());
        };
        let envelopes: Vec<&Envelope> = readable.iter().map(|(_, envelope)| envelope).collect();
        let recorded = db::within(&self.pool, self.database_deadline, async |conn| {
            deliveries::record(conn, &envelopes).await
        })
        .await;
        match recorded {
            Ok(mut recorded) => {
                for envelope in envelopes {
                    self.announce(envelope, recorded.remove(&envelope.id));
                }
                last.ack(BasicAckOptions { multiple: true }).await?;
                Ok(())
            }
            Err(db::WithinError::Query(e)) if !db::is_transient(&e) => {
                for (delivery, _) in readable {
                    self.handle(delivery).await?;
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn handle(&self, delivery: Delivery) -> Result<(), ConsumeError> {
        match self.accept(&delivery).await {
            Ok(()) => {
                delivery.ack(BasicAckOptions::default()).await?;
            }
            Err(Refused::Connectivity(e)) => return Err(e),
            Err(Refused::Poison(reason)) => {
                self.dead_letter(&delivery, &reason).await?;
            }
        }
        Ok(())
    }

    /// Records the event in `deliveries`. Anything wrong with the message itself (not JSON, not
    /// UTF-8, a NUL byte, an unknown type or major version, a row the database refuses) is
    /// [`Refused::Poison`]; only a database that cannot be reached is [`Refused::Connectivity`].
    async fn accept(&self, delivery: &Delivery) -> Result<(), Refused> {
        let envelope = parse(&delivery.data).map_err(Refused::Poison)?;
        let recorded = db::within(&self.pool, self.database_deadline, async |conn| {
            deliveries::record(conn, &[&envelope]).await
        })
        .await;
        let recorded = match recorded {
            Ok(recorded) => !recorded.is_empty(),
            Err(db::WithinError::Query(e)) if !db::is_transient(&e) => {
                return Err(Refused::Poison(format!(
                    "the event cannot be recorded: {e}"
                )));
            }
            Err(e) => return Err(Refused::Connectivity(e.into())),
        };
        self.announce(&envelope, recorded);
        Ok(())
    }

    /// Logs an event the consumer took, and wakes the sender when it is new.
    fn announce(&self, envelope: &Envelope, recorded: bool) {
        let recipient = mask_address(envelope.event.recipient());
        if recorded {
            tracing::info!(event_id = %envelope.id, event_type = envelope.kind(), %recipient, "event accepted");
            self.wake.notify_one();
        } else {
            metrics::counter!("mailer_duplicates_total").increment(1);
            tracing::info!(event_id = %envelope.id, event_type = envelope.kind(), %recipient, "duplicate event ignored");
        }
    }

    /// Records a poison message with its raw bytes and rejects it into the dead-letter exchange,
    /// so the queue moves on. Only a database that cannot be reached keeps it in the queue (the
    /// quorum queue's delivery limit is the backstop even then). Its body is never logged: it may
    /// hold links with tokens.
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), ConsumeError> {
        match self.record_poison(delivery, reason).await {
            Ok(id) => {
                tracing::error!(failed_send = ?id, routing_key = %delivery.routing_key, error = %redact_quoted(reason), "unreadable message dead-lettered and recorded in failed_sends");
            }
            Err(ConsumeError::Database(e)) if !db::is_transient(&e) => {
                tracing::error!(routing_key = %delivery.routing_key, error = %redact_quoted(reason), record_error = %e, "unreadable message dead-lettered; it could not be recorded in failed_sends (it is kept in the dead-letter queue)");
            }
            Err(e) => return Err(e),
        }
        metrics::counter!("mailer_failed_total", "type" => "unreadable", "reason" => "unreadable")
            .increment(1);
        delivery
            .reject(BasicRejectOptions { requeue: false })
            .await?;
        Ok(())
    }

    async fn record_poison(&self, delivery: &Delivery, reason: &str) -> Result<i64, ConsumeError> {
        let event_id = delivery
            .properties
            .message_id()
            .as_ref()
            .and_then(|id| Uuid::parse_str(id.as_str()).ok());
        // The parsed JSON when the database can store it; the raw bytes always.
        let payload: Option<serde_json::Value> = serde_json::from_slice(&delivery.data)
            .ok()
            .filter(|value: &serde_json::Value| !value.to_string().contains("\\u0000"));
        let event_type = payload
            .as_ref()
            .and_then(|p| p.get("type"))
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| delivery.routing_key.to_string());
        let error = format!("unreadable event: {reason}");
        let new = NewFailedSend {
            event_id,
            event_type: Some(&event_type),
            recipient: None,
            template: Event::TYPES
                .contains(&event_type.as_str())
                .then_some(&*event_type),
            payload: payload.as_ref(),
            body: &delivery.data,
            error: &error,
            attempts: 0,
        };
        let id = db::within(&self.pool, self.database_deadline, async |conn| {
            failed_sends::record(conn, &new).await
        })
        .await?;
        Ok(id)
    }
}

/// Why a message was not accepted.
enum Refused {
    /// Record it and dead-letter it.
    Poison(String),
    /// Leave it in the queue and reconnect.
    Connectivity(ConsumeError),
}

/// A reason fit for a log line: parse errors quote the offending value (`invalid type: string
/// "http://…?token=…"`), which may be a link with a token. The full reason is kept in `failed_sends`.
fn redact_quoted(reason: &str) -> String {
    let mut redacted = String::with_capacity(reason.len());
    for (i, part) in reason.split('"').enumerate() {
        if i > 0 {
            redacted.push('"');
        }
        redacted.push_str(if i % 2 == 1 { "…" } else { part });
    }
    redacted
}

/// Reads an envelope, checking its major version before its shape: a newer producer's envelope
/// may parse by accident, and must not be sent as if it were ours.
fn parse(body: &[u8]) -> Result<Envelope, String> {
    #[derive(serde::Deserialize)]
    struct Version {
        version: Option<u64>,
    }
    if let Ok(Version {
        version: Some(version),
    }) = serde_json::from_slice::<Version>(body)
        && version != u64::from(events::VERSION)
    {
        return Err(format!(
            "unsupported envelope version {version}; this mailer reads version {}",
            events::VERSION
        ));
    }
    Envelope::from_json(body).map_err(|e| e.to_string())
}

/// Declares the events exchange, the dead-letter exchange and queue, and the `mailer` queue bound
/// to every event type. Idempotent; runs on every connect.
pub async fn declare_topology(channel: &Channel) -> Result<(), lapin::Error> {
    amqp::declare_events_exchange(channel).await?;
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            DEAD_LETTER_EXCHANGE.into(),
            ExchangeKind::Fanout,
            durable_exchange,
            FieldTable::default(),
        )
        .await?;
    let durable_queue = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(
            DEAD_LETTER_QUEUE.into(),
            durable_queue,
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            DEAD_LETTER_QUEUE.into(),
            DEAD_LETTER_EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // A quorum queue, so a message that keeps coming back (a crash while handling it, a bug we
    // did not foresee) is dead-lettered after DELIVERY_LIMIT deliveries instead of blocking the
    // queue. RabbitMQ 3.10 sets no default limit, so it is explicit. A classic queue of the same
    // name makes this declaration fail: deploy/README.md says how to move it.
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    arguments.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongInt(DELIVERY_LIMIT),
    );
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(DEAD_LETTER_EXCHANGE.into()),
    );
    channel
        .queue_declare(QUEUE.into(), durable_queue, arguments)
        .await
        .inspect_err(|e| {
            tracing::error!(error = %e, "declaring the {QUEUE} quorum queue failed; if a classic queue of that name exists, follow deploy/README.md (moving the mailer queue to a quorum queue)");
        })?;
    for kind in Event::TYPES {
        channel
            .queue_bind(
                QUEUE.into(),
                events::EXCHANGE.into(),
                kind.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::redact_quoted;

    #[test]
    fn quoted_values_never_reach_a_log_line() {
        let reason = r#"invalid type: string "http://x/confirm?token=secret", expected u32 at line 1 column 9"#;
        let redacted = redact_quoted(reason);
        assert!(!redacted.contains("secret"), "{redacted}");
        assert_eq!(
            redacted,
            r#"invalid type: string "…", expected u32 at line 1 column 9"#
        );
        assert_eq!(redact_quoted("no quotes"), "no quotes");
    }
}
