//! RabbitMQ plumbing shared by the services.
//!
//! Each service owns a supervisor loop: it calls [`connect`], declares its topology idempotently, works
//! until an error, then waits on a [`Backoff`] and starts over. Nothing here retries behind the
//! caller's back, so the supervisor always knows whether the broker is there.

mod backoff;
mod publisher;

pub use backoff::Backoff;
pub use publisher::{DEFAULT_CONFIRM_TIMEOUT, PublishError, Publisher};

use lapin::{
    Channel, Connection, ConnectionProperties, ExchangeKind, options::ExchangeDeclareOptions,
    types::FieldTable,
};

/// Opens a connection named after the service, so operators can tell connections apart in the
/// management UI and in `rabbitmqctl list_connections`.
pub async fn connect(url: &str, service: &str) -> Result<Connection, lapin::Error> {
    let options = ConnectionProperties::default()
        .with_client_property("connection_name".into(), service.to_string().into());
    Connection::connect(url, options).await
}

/// Declares the durable topic exchange accounts publishes to. Safe to call on every connect.
pub async fn declare_events_exchange(channel: &Channel) -> Result<(), lapin::Error> {
    channel
        .exchange_declare(
            events::EXCHANGE.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
}
