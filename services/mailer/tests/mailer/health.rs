//! The health server: liveness, readiness tied to the broker, and metrics.

use crate::helpers::{WAIT, configure, eventually, registered, spawn_app, unique_email};

#[tokio::test]
async fn without_a_broker_the_mailer_is_alive_but_not_ready() {
    let unreachable = testkit::unreachable_amqp_url();
    let mut app = configure(&[("AMQP_URL", &unreachable)]).await;
    app.start_without_waiting().await;

    assert_eq!(app.get("/healthz").await.0, 200);
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"broker\":\"down\""), "{body}");
    assert!(body.contains("\"database\":\"up\""), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn metrics_count_sends_and_the_consumer_survives_a_broker_disconnect() {
    let mut app = spawn_app().await;
    assert_eq!(app.get("/healthz").await.0, 200);

    app.publish(&registered(&unique_email(), None)).await;
    app.smtp.wait_for_messages(1, WAIT).await.unwrap();
    let metrics = eventually("the send to show in the metrics", || async {
        let (_, body) = app.get("/metrics").await;
        body.contains("mailer_sent_total").then_some(body)
    })
    .await;
    for name in [
        "mailer_send_duration_seconds_bucket",
        "mailer_backlog",
        "mailer_amqp_connected",
    ] {
        assert!(metrics.contains(name), "{name} missing from {metrics}");
    }

    // As a broker restart would: every connection of the vhost closes, the publisher's too.
    app.vhost.close_connections().unwrap();
    app.reconnect_publisher();
    let again = registered(&unique_email(), None);
    eventually("the mailer to reconnect and consume again", || async {
        (app.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    app.publish(&again).await;
    let messages = app.smtp.wait_for_messages(2, WAIT).await.unwrap();
    assert_eq!(messages[1].recipients[0], again.event.recipient());
}
