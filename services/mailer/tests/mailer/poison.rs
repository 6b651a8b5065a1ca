//! Messages the mailer cannot read are recorded and dead-lettered, and consumption goes on.

use events::Event;
use mailer::consumer::DEAD_LETTER_QUEUE;

use crate::helpers::{WAIT, eventually, registered, spawn_app, unique_email};

#[tokio::test]
async fn invalid_json_and_unknown_types_are_dead_lettered_and_the_next_event_is_sent() {
    let mut app = spawn_app().await;
    app.publish_raw(Event::TYPES[0], b"{not json").await;
    let mut unknown = serde_json::to_value(registered(&unique_email(), None)).unwrap();
    unknown["type"] = "user-exploded".into();
    app.publish_raw(Event::TYPES[0], unknown.to_string().as_bytes())
        .await;
    let valid = registered(&unique_email(), None);
    app.publish(&valid).await;

    let messages = app.smtp.wait_for_messages(1, WAIT).await.unwrap();
    assert_eq!(messages[0].recipients[0], valid.event.recipient());
    assert_eq!(
        app.count(
            "SELECT count(*) AS n FROM failed_sends WHERE error LIKE 'unreadable event%' AND attempts = 0"
        )
        .await,
        2
    );
    assert_eq!(
        app.count(
            "SELECT count(*) AS n FROM failed_sends WHERE payload->>'raw' = '{not json' AND event_type = 'user-registered'"
        )
        .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM failed_sends WHERE event_type = 'user-exploded' AND template IS NULL")
            .await,
        1
    );
    let dead = eventually("both poison messages in the dead-letter queue", || async {
        let depth = app.queue_depth(DEAD_LETTER_QUEUE).await;
        (depth == 2).then_some(depth)
    })
    .await;
    assert_eq!(dead, 2);
    assert_eq!(app.queue_depth("mailer").await, 0);
}
