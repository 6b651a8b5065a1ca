//! The outbox relay against a real RabbitMQ, one vhost per test.

use std::{collections::HashMap, time::Duration};

use diesel_async::SimpleAsyncConnection;
use futures_util::StreamExt;
use lapin::{
    Connection, ConnectionProperties,
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions},
    types::FieldTable,
};
use reqwest::StatusCode;
use serde_json::Value;
use testkit::TestVhost;

use crate::helpers::{Options, PASSWORD, registration, spawn_with, spawn_with_vhost, unique_email};

/// A queue bound to every event on the vhost's `accounts.events`, consumed into a channel.
struct Tap {
    _connection: Connection,
    channel: lapin::Channel,
    consumer: lapin::Consumer,
}

impl Tap {
    async fn bind(amqp_url: &str) -> Self {
        Self::bind_keys(amqp_url, &["#"]).await
    }

    /// A tap bound only to `keys`: events of other types are unroutable.
    async fn bind_keys(amqp_url: &str, keys: &[&str]) -> Self {
        let connection = Connection::connect(amqp_url, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        amqp::declare_events_exchange(&channel).await.unwrap();
        channel
            .queue_declare(
                "tap".into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let consumer = channel
            .basic_consume(
                "tap".into(),
                "test".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let tap = Self {
            _connection: connection,
            channel,
            consumer,
        };
        for key in keys {
            tap.bind_key(key).await;
        }
        tap
    }

    async fn bind_key(&self, key: &str) {
        self.channel
            .queue_bind(
                "tap".into(),
                "accounts.events".into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }

    /// Collects deliveries until `count` arrived or `quiet` passes with nothing new.
    async fn collect(&mut self, count: usize, wait: Duration, quiet: Duration) -> Vec<Delivery> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut received = Vec::new();
        loop {
            let limit = if received.len() >= count {
                quiet
            } else {
                deadline.saturating_duration_since(tokio::time::Instant::now())
            };
            match tokio::time::timeout(limit, self.consumer.next()).await {
                Ok(Some(Ok(delivery))) => {
                    delivery.ack(BasicAckOptions::default()).await.unwrap();
                    received.push(delivery);
                }
                _ => return received,
            }
        }
    }
}

fn message_ids(deliveries: &[Delivery]) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for d in deliveries {
        let id = d.properties.message_id().as_ref().unwrap().to_string();
        *ids.entry(id).or_insert(0) += 1;
    }
    ids
}

#[tokio::test]
async fn registering_publishes_exactly_one_user_registered() {
    let vhost = TestVhost::create().unwrap();
    let mut tap = Tap::bind(vhost.url()).await;
    let app = spawn_with_vhost(&vhost).await;
    let email = unique_email();
    let mut body = registration(&email, PASSWORD);
    body["user"]["username"] = serde_json::json!("ada");
    let response = app.register(&body).await;
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let created: Value = response.json().await.unwrap();

    let deliveries = tap
        .collect(1, Duration::from_secs(20), Duration::from_millis(1500))
        .await;
    assert_eq!(deliveries.len(), 1);
    let delivery = &deliveries[0];
    let envelope: Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(envelope["type"], "user-registered");
    assert_eq!(envelope["version"], 1);
    assert!(envelope["occurred_at"].as_str().unwrap().contains('T'));
    assert_eq!(envelope["data"]["user_id"], created["user"]["id"]);
    assert_eq!(envelope["data"]["email"], email);
    assert_eq!(envelope["data"]["username"], "ada");
    assert!(
        envelope["data"]["confirmation_url"]
            .as_str()
            .unwrap()
            .contains("/api/users/confirm?token=")
    );
    assert!(envelope["data"]["confirmation_expires_at"].is_string());
    // The request that caused the event travels with it, for the mailer's logs.
    assert_eq!(envelope["correlation_id"], request_id.as_str());

    let props = &delivery.properties;
    assert_eq!(
        props.message_id().as_ref().unwrap().as_str(),
        envelope["id"].as_str().unwrap()
    );
    assert_eq!(props.kind().as_ref().unwrap().as_str(), "user-registered");
    assert_eq!(
        props.content_type().as_ref().unwrap().as_str(),
        "application/json"
    );
    assert_eq!(*props.delivery_mode(), Some(2));
    assert_eq!(delivery.routing_key.as_str(), "user-registered");
}

#[tokio::test]
async fn registrations_survive_a_broker_outage_and_arrive_afterwards() {
    // The vhost does not exist yet: every connection attempt fails, as with the broker down.
    let vhost = TestVhost::planned();
    let app = spawn_with_vhost(&vhost).await;
    for _ in 0..20 {
        let response = app.register(&registration(&unique_email(), PASSWORD)).await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    vhost.open().unwrap();
    let mut tap = Tap::bind(vhost.url()).await;
    let deliveries = tap
        .collect(20, Duration::from_secs(60), Duration::from_millis(1500))
        .await;
    let ids = message_ids(&deliveries);
    assert_eq!(ids.len(), 20, "every event arrives");
    let mut conn = app.conn().await;
    let unpublished = testkit::count(
        &mut conn,
        "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL",
    )
    .await
    .unwrap();
    assert_eq!(unpublished, 0);
}

#[tokio::test]
async fn two_relays_over_one_database_publish_each_event_once() {
    let vhost = TestVhost::create().unwrap();
    let mut tap = Tap::bind(vhost.url()).await;
    // A deep hashing queue: this test is about the relays, not the login budget.
    let deep_queue = || vec![("ACCOUNTS_HASH_QUEUE", "64".to_string())];
    let first = spawn_with(Options {
        vhost: Some(&vhost),
        vars: deep_queue(),
        ..Options::default()
    })
    .await;
    let second = spawn_with(Options {
        vhost: Some(&vhost),
        database: Some(&first.db),
        vars: deep_queue(),
        ..Options::default()
    })
    .await;
    let bodies: Vec<Value> = (0..40)
        .map(|_| registration(&unique_email(), PASSWORD))
        .collect();
    let registrations = bodies.iter().enumerate().map(|(i, body)| {
        let app = if i % 2 == 0 { &first } else { &second };
        app.register(body)
    });
    for response in futures_util::future::join_all(registrations).await {
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let deliveries = tap
        .collect(40, Duration::from_secs(30), Duration::from_secs(2))
        .await;
    let ids = message_ids(&deliveries);
    assert_eq!(ids.len(), 40);
    assert!(ids.values().all(|n| *n == 1), "duplicates: {ids:?}");
}

#[tokio::test]
async fn transactions_committing_out_of_id_order_are_both_published() {
    let vhost = TestVhost::create().unwrap();
    let mut tap = Tap::bind(vhost.url()).await;
    let app = spawn_with_vhost(&vhost).await;
    let insert = |id: uuid::Uuid| {
        format!(
            "INSERT INTO outbox (event_id, event_type, envelope) VALUES ('{id}', 'password-changed', \
             '{{\"id\": \"{id}\", \"type\": \"password-changed\", \"version\": 1, \"occurred_at\": \"2026-11-23T00:00:00Z\", \
             \"data\": {{\"user_id\": \"{id}\", \"email\": \"x@example.com\", \"username\": null, \"changed_at\": \"2026-11-23T00:00:00Z\"}}}}')"
        )
    };
    let (early, late) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let mut a = app.conn().await;
    let mut b = app.conn().await;
    a.batch_execute(&format!("BEGIN; {}", insert(early)))
        .await
        .unwrap(); // takes the lower id
    b.batch_execute(&format!("BEGIN; {}; COMMIT", insert(late)))
        .await
        .unwrap(); // commits first
    let first = tap
        .collect(1, Duration::from_secs(20), Duration::from_millis(500))
        .await;
    assert_eq!(
        message_ids(&first).keys().next().unwrap(),
        &late.to_string()
    );
    a.batch_execute("COMMIT").await.unwrap();
    let second = tap
        .collect(1, Duration::from_secs(20), Duration::from_millis(500))
        .await;
    assert_eq!(
        message_ids(&second).keys().next().unwrap(),
        &early.to_string()
    );
}

#[tokio::test]
async fn the_relay_recovers_when_its_connection_is_killed() {
    let vhost = TestVhost::create().unwrap();
    let mut tap = Tap::bind(vhost.url()).await;
    let app = spawn_with_vhost(&vhost).await;
    app.register(&registration(&unique_email(), PASSWORD)).await;
    assert_eq!(
        tap.collect(1, Duration::from_secs(20), Duration::from_millis(300))
            .await
            .len(),
        1
    );

    vhost.close_connections().unwrap();
    let mut tap = Tap::bind(vhost.url()).await;
    for _ in 0..5 {
        app.register(&registration(&unique_email(), PASSWORD)).await;
    }
    let ids = message_ids(
        &tap.collect(5, Duration::from_secs(60), Duration::from_millis(1000))
            .await,
    );
    assert_eq!(ids.len(), 5);
}

/// Inserts `n` outbox rows in one statement, alternating `user-registered` and `password-changed`
/// (even and odd rows); returns their event ids by type.
async fn mixed_burst(app: &crate::helpers::TestApp, n: usize) -> (Vec<String>, Vec<String>) {
    let ids: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::new_v4()).collect();
    let rows: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let (kind, data) = if i % 2 == 0 {
                (
                    "user-registered",
                    format!(
                        r#"{{"user_id": "{id}", "email": "u{i}@example.com", "username": null, "confirmation_url": "http://localhost:8080/api/users/confirm?token=secret-{id}", "confirmation_expires_at": "2026-11-23T01:00:00Z"}}"#
                    ),
                )
            } else {
                (
                    "password-changed",
                    format!(
                        r#"{{"user_id": "{id}", "email": "u{i}@example.com", "username": null, "changed_at": "2026-11-23T00:00:00Z"}}"#
                    ),
                )
            };
            format!(
                r#"('{id}', '{kind}', '{{"id": "{id}", "type": "{kind}", "version": 1, "occurred_at": "2026-11-23T00:00:00Z", "data": {data}}}')"#
            )
        })
        .collect();
    let mut conn = app.conn().await;
    conn.batch_execute(&format!(
        "INSERT INTO outbox (event_id, event_type, envelope) VALUES {}",
        rows.join(", ")
    ))
    .await
    .unwrap();
    let (registered, changed): (Vec<_>, Vec<_>) =
        ids.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    (
        registered
            .into_iter()
            .map(|(_, id)| id.to_string())
            .collect(),
        changed.into_iter().map(|(_, id)| id.to_string()).collect(),
    )
}

#[tokio::test]
async fn an_unbound_type_in_a_mixed_burst_waits_in_the_outbox_and_each_event_arrives_once() {
    let vhost = TestVhost::create().unwrap();
    // Only user-registered is bound: every password-changed is returned by the broker.
    let mut tap = Tap::bind_keys(vhost.url(), &["user-registered"]).await;
    let app = spawn_with_vhost(&vhost).await;
    // More than three batches: the relay's lanes publish at once, each matching only its own
    // returns.
    let (registered, changed) = mixed_burst(&app, 1600).await;

    let first = tap
        .collect(
            registered.len(),
            Duration::from_secs(30),
            Duration::from_millis(500),
        )
        .await;
    let ids = message_ids(&first);
    assert_eq!(ids.len(), registered.len(), "every routable event arrives");
    assert!(ids.values().all(|n| *n == 1), "duplicates: {ids:?}");
    assert!(registered.iter().all(|id| ids.contains_key(id)));

    // Every returned row is back to pending, with an attempt and an error, never published.
    let mut conn = app.conn().await;
    let pending_sql = "SELECT count(*) AS n FROM outbox WHERE event_type = 'password-changed' \
                       AND published_at IS NULL AND attempts >= 1 AND last_error LIKE '%returned%'";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let returned = testkit::count(&mut conn, pending_sql).await.unwrap();
        if returned == changed.len() as i64 {
            break;
        }
        let lost = testkit::count(
            &mut conn,
            "SELECT count(*) AS n FROM outbox WHERE event_type = 'password-changed' AND published_at IS NOT NULL",
        )
        .await
        .unwrap();
        assert_eq!(lost, 0, "a returned message was marked published");
        assert!(
            tokio::time::Instant::now() < deadline,
            "{returned} of {} rows returned",
            changed.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The mailer binds the new type: the waiting events arrive, each once.
    tap.bind_key("password-changed").await;
    let second = tap
        .collect(
            changed.len(),
            Duration::from_secs(30),
            Duration::from_millis(1500),
        )
        .await;
    let later = message_ids(&second);
    assert_eq!(later.len(), changed.len(), "every waiting event arrives");
    assert!(later.values().all(|n| *n == 1), "duplicates: {later:?}");
    assert!(changed.iter().all(|id| later.contains_key(id)));
    assert!(
        registered.iter().all(|id| !later.contains_key(id)),
        "a routable event was sent twice"
    );
    let unpublished = testkit::count(
        &mut conn,
        "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL",
    )
    .await
    .unwrap();
    assert_eq!(unpublished, 0);
}
