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
    db::Pool,
    deliveries,
    failed_sends::{self, NewFailedSend},
};
use telemetry::mask_address;

/// The mailer's work queue, bound to every event type.
pub const QUEUE: &str = "mailer";
/// Where rejected (poison) messages go.
pub const DEAD_LETTER_EXCHANGE: &str = "mailer.dlx";
pub const DEAD_LETTER_QUEUE: &str = "mailer.dead";

#[derive(Debug, thiserror::Error)]
enum ConsumeError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("database: {0}")]
    Database(#[from] diesel::result::Error),
    #[error("database pool: {0}")]
    Pool(#[from] crate::db::PoolError),
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
        let mut deliveries = channel
            .basic_consume(
                QUEUE.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.set_connected(true);
        tracing::info!("consuming from the {QUEUE} queue");
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                next = deliveries.next() => match next {
                    Some(Ok(delivery)) => {
                        self.handle(delivery).await?;
                        // Only a handled message proves the database is there too.
                        backoff.reset();
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(ConsumeError::Ended),
                },
            }
        }
        self.set_connected(false);
        // Messages prefetched but not handled go back to the queue when the channel closes.
        let tag = deliveries.tag();
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

    async fn handle(&self, delivery: Delivery) -> Result<(), ConsumeError> {
        match Envelope::from_json(&delivery.data) {
            Ok(envelope) => {
                let mut conn = self.pool.get().await?;
                let recorded = deliveries::record(&mut conn, &envelope).await?;
                drop(conn);
                let recipient = mask_address(envelope.event.recipient());
                if recorded {
                    tracing::info!(event_id = %envelope.id, event_type = envelope.kind(), %recipient, "event accepted");
                    self.wake.notify_one();
                } else {
                    metrics::counter!("mailer_duplicates_total").increment(1);
                    tracing::info!(event_id = %envelope.id, event_type = envelope.kind(), %recipient, "duplicate event ignored");
                }
                delivery.ack(BasicAckOptions::default()).await?;
            }
            Err(e) => {
                self.record_unreadable(&delivery, &e).await?;
                delivery
                    .reject(BasicRejectOptions { requeue: false })
                    .await?;
            }
        }
        Ok(())
    }

    /// Keeps what can be known about a poison message in `failed_sends` (never logging its body,
    /// which may hold links).
    async fn record_unreadable(
        &self,
        delivery: &Delivery,
        error: &serde_json::Error,
    ) -> Result<(), ConsumeError> {
        let event_id = delivery
            .properties
            .message_id()
            .as_ref()
            .and_then(|id| Uuid::parse_str(id.as_str()).ok());
        let payload: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap_or_else(
            |_| serde_json::json!({ "raw": String::from_utf8_lossy(&delivery.data) }),
        );
        let event_type = payload
            .get("type")
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| delivery.routing_key.to_string());
        let error = format!("unreadable event: {error}");
        let mut conn = self.pool.get().await?;
        let id = failed_sends::insert(
            &mut conn,
            &NewFailedSend {
                event_id,
                event_type: Some(&event_type),
                recipient: None,
                template: Event::TYPES
                    .contains(&event_type.as_str())
                    .then_some(&*event_type),
                payload: &payload,
                error: &error,
                attempts: 0,
            },
        )
        .await?;
        metrics::counter!("mailer_failed_total", "type" => "unreadable", "reason" => "unreadable")
            .increment(1);
        tracing::error!(failed_send = id, event_id = ?event_id, routing_key = %delivery.routing_key, %error, "unreadable message dead-lettered and recorded in failed_sends");
        Ok(())
    }
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
    // A classic durable queue: quorum queues on RabbitMQ 3.10 need an explicit delivery limit,
    // and poison messages are rejected into the DLX by us anyway.
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(DEAD_LETTER_EXCHANGE.into()),
    );
    channel
        .queue_declare(QUEUE.into(), durable_queue, arguments)
        .await?;
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
