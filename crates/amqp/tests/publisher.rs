//! The publisher against a real RabbitMQ, one vhost per test.

use std::time::{Duration, Instant};

use amqp::{PublishError, Publisher};
use lapin::{
    options::{QueueBindOptions, QueueDeclareOptions},
    types::FieldTable,
};
use testkit::{StallingProxy, TestVhost};

/// Declares a queue bound to `key` on the events exchange.
async fn bind(channel: &lapin::Channel, key: &str) {
    amqp::declare_events_exchange(channel).await.unwrap();
    channel
        .queue_declare(
            key.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            key.into(),
            events::EXCHANGE.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn in_a_mixed_batch_exactly_the_unroutable_messages_are_reported_returned() {
    let vhost = TestVhost::create().unwrap();
    let connection = amqp::connect(vhost.url(), "publisher-test").await.unwrap();
    bind(&connection.create_channel().await.unwrap(), "routed").await;
    let publisher = Publisher::open(&connection).await.unwrap();
    for trial in 0..5 {
        let ids: Vec<String> = (0..200).map(|_| uuid::Uuid::new_v4().to_string()).collect();
        // Every third message has no queue.
        let kinds: Vec<&str> = (0..ids.len())
            .map(|i| if i % 3 == 0 { "unbound" } else { "routed" })
            .collect();
        let messages: Vec<(&str, &str, &[u8])> = ids
            .iter()
            .zip(&kinds)
            .map(|(id, kind)| (*kind, id.as_str(), b"{}".as_slice()))
            .collect();

        let results = publisher.publish_batch(&messages).await;

        for (i, result) in results.iter().enumerate() {
            match (kinds[i], result) {
                ("unbound", Err(PublishError::Unroutable(_))) | ("routed", Ok(())) => {}
                (kind, other) => panic!("trial {trial}, message {i} ({kind}): {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn a_broker_that_stops_confirming_fails_the_batch_within_the_confirm_timeout() {
    let vhost = TestVhost::create().unwrap();
    let proxy = StallingProxy::start(vhost.broker_addr().unwrap())
        .await
        .unwrap();
    let connection = amqp::connect(&vhost.url_via(proxy.addr()).unwrap(), "publisher-test")
        .await
        .unwrap();
    let publisher = Publisher::open(&connection)
        .await
        .unwrap()
        .with_confirm_timeout(Duration::from_secs(1));
    let id = uuid::Uuid::new_v4().to_string();
    proxy.stall();

    let started = Instant::now();
    let results = tokio::time::timeout(
        Duration::from_secs(10),
        publisher.publish_batch(&[("anything", &id, b"{}".as_slice())]),
    )
    .await
    .expect("publish_batch returns although the broker never confirms");

    assert!(
        matches!(results.as_slice(), [Err(PublishError::ConfirmTimeout(_))]),
        "{results:?}"
    );
    assert!(results[0].as_ref().unwrap_err().is_connection_failure());
    assert!(started.elapsed() < Duration::from_secs(3));
}
