use std::{collections::HashSet, time::Duration};

use events::Envelope;
use lapin::{
    BasicProperties, Channel, Connection,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};

/// How long [`Publisher::publish_batch`] waits for the broker's confirms by default. A broker under
/// a resource alarm blocks publishers without closing the connection; without a bound the relay
/// would hang there, past SIGTERM.
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an event did not reach a queue. Every variant means "keep it and try again later".
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("no queue is bound for routing key {0}; the message was returned")]
    Unroutable(String),
    /// The channel's state is unknown afterwards: drop the connection and reconnect.
    #[error("the broker did not confirm within {0:?}")]
    ConfirmTimeout(Duration),
}

impl PublishError {
    /// Whether the connection should be abandoned (a broker error or a confirm that never came),
    /// as opposed to a verdict on this one message.
    pub fn is_connection_failure(&self) -> bool {
        matches!(
            self,
            PublishError::Broker(_) | PublishError::ConfirmTimeout(_)
        )
    }
}

/// A channel in confirm mode that publishes [`Envelope`]s to the events exchange.
pub struct Publisher {
    channel: Channel,
    confirm_timeout: Duration,
}

impl Publisher {
    /// Opens a confirm-mode channel and declares the exchange.
    pub async fn open(connection: &Connection) -> Result<Self, lapin::Error> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        crate::declare_events_exchange(&channel).await?;
        Ok(Self {
            channel,
            confirm_timeout: DEFAULT_CONFIRM_TIMEOUT,
        })
    }

    /// Bounds the wait for a batch's confirms (see [`DEFAULT_CONFIRM_TIMEOUT`]).
    pub fn with_confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// Publishes persistent and mandatory, and resolves only once the broker has confirmed it.
    pub async fn publish(&self, envelope: &Envelope) -> Result<(), PublishError> {
        let (id, body) = (envelope.id.to_string(), envelope.to_json());
        self.publish_batch(&[(envelope.kind(), &id, &body)])
            .await
            .pop()
            .unwrap_or(Err(PublishError::Nacked))
    }

    /// Publishes every message (`(routing key, message id, body)`) before waiting for any confirm,
    /// so a batch costs one round trip rather than one per message. Results come back in input
    /// order.
    ///
    /// A returned (unroutable) message is never reported as published. lapin hands a
    /// `basic.return` to whichever confirm it settles next, and a `multiple` ack settles tags in
    /// arbitrary order, so the confirm that carries a return says nothing about which message
    /// came back. Instead every return of the batch is collected and matched by `message_id`.
    /// Message ids must therefore be unique within a batch.
    pub async fn publish_batch(
        &self,
        messages: &[(&str, &str, &[u8])],
    ) -> Vec<Result<(), PublishError>> {
        let mut pending = Vec::with_capacity(messages.len());
        for (kind, id, body) in messages {
            let properties = BasicProperties::default()
                .with_message_id((*id).into())
                .with_type((*kind).into())
                .with_content_type("application/json".into())
                .with_delivery_mode(2);
            let sent = self
                .channel
                .basic_publish(
                    events::EXCHANGE.into(),
                    (*kind).into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    body,
                    properties,
                )
                .await;
            pending.push(sent);
        }

        let confirms = async {
            let mut returned: HashSet<String> = HashSet::new();
            let mut outcomes = Vec::with_capacity(pending.len());
            for sent in pending {
                let outcome = match sent {
                    Err(e) => Err(PublishError::Broker(e)),
                    Ok(confirm) => match confirm.await {
                        Err(e) => Err(PublishError::Broker(e)),
                        Ok(confirmation) => {
                            let nacked = confirmation.is_nack();
                            if let Some(message) = confirmation.take_message() {
                                returned.extend(returned_id(&message));
                            }
                            if nacked {
                                Err(PublishError::Nacked)
                            } else {
                                Ok(())
                            }
                        }
                    },
                };
                outcomes.push(outcome);
            }
            // Returns lapin could not hand to one of our confirms (none in practice, since the
            // broker sends a message's return before its ack, but cheap to make sure).
            if let Ok(rest) = self.channel.wait_for_confirms().await {
                for message in &rest {
                    returned.extend(returned_id(message));
                }
            }
            (outcomes, returned)
        };

        match tokio::time::timeout(self.confirm_timeout, confirms).await {
            Ok((outcomes, returned)) => {
                if !returned.is_empty() {
                    tracing::warn!(
                        returned = returned.len(),
                        "the broker returned unroutable messages; they stay unpublished"
                    );
                }
                messages
                    .iter()
                    .zip(outcomes)
                    .map(|((kind, id, _), outcome)| match outcome {
                        Ok(()) if returned.contains(*id) => {
                            Err(PublishError::Unroutable((*kind).to_string()))
                        }
                        other => other,
                    })
                    .collect()
            }
            Err(_) => messages
                .iter()
                .map(|_| Err(PublishError::ConfirmTimeout(self.confirm_timeout)))
                .collect(),
        }
    }
}

/// The `message_id` of a returned message. Only the id is read: the body may hold links with
/// tokens and must never reach a log.
fn returned_id(message: &lapin::message::BasicReturnMessage) -> Option<String> {
    message
        .delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.to_string())
}
