use events::Envelope;
use lapin::{
    BasicProperties, Channel, Connection,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};

/// Why an event did not reach a queue. Every variant means "keep it and try again later".
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("no queue is bound for routing key {0}; the message was returned")]
    Unroutable(String),
}

/// A channel in confirm mode that publishes [`Envelope`]s to the events exchange.
pub struct Publisher {
    channel: Channel,
}

impl Publisher {
    /// Opens a confirm-mode channel and declares the exchange.
    pub async fn open(connection: &Connection) -> Result<Self, lapin::Error> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        crate::declare_events_exchange(&channel).await?;
        Ok(Self { channel })
    }

    /// Publishes persistent and mandatory, and resolves only once the broker has confirmed it.
    pub async fn publish(&self, envelope: &Envelope) -> Result<(), PublishError> {
        let (id, body) = (envelope.id.to_string(), envelope.to_json());
        self.publish_batch(&[(envelope.kind(), &id, &body)])
            .await
            .pop()
            .expect("one result per message")
    }

    /// Publishes every message before waiting for any confirm, so a batch costs one round trip
    /// rather than one per message. Results come back in input order.
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
            pending.push((kind.to_string(), sent));
        }
        let mut results = Vec::with_capacity(pending.len());
        for (kind, sent) in pending {
            let result = match sent {
                Err(e) => Err(PublishError::Broker(e)),
                Ok(confirm) => match confirm.await {
                    Err(e) => Err(PublishError::Broker(e)),
                    Ok(c) if c.is_nack() => Err(PublishError::Nacked),
                    Ok(c) => match c.take_message() {
                        Some(_) => Err(PublishError::Unroutable(kind)),
                        None => Ok(()),
                    },
                },
            };
            results.push(result);
        }
        results
    }
}
