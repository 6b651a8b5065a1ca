//! Messages the mailer cannot read are recorded and dead-lettered, and consumption goes on.

use events::Event;
use mailer::consumer::{DEAD_LETTER_QUEUE, DELIVERY_LIMIT, QUEUE};

use crate::helpers::{TestApp, WAIT, eventually, registered, spawn_app, spawn_with, unique_email};

/// Waits until the dead-letter queue holds `n` messages and the work queue none.
async fn wait_dead_lettered(app: &TestApp, n: u32) {
    eventually("the poison messages in the dead-letter queue", || async {
        (app.queue_depth(DEAD_LETTER_QUEUE).await == n).then_some(())
    })
    .await;
    assert_eq!(app.queue_depth(QUEUE).await, 0);
}

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
            "SELECT count(*) AS n FROM failed_sends WHERE convert_from(body, 'UTF8') = '{not json' AND payload IS NULL AND event_type = 'user-registered'"
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

#[tokio::test]
async fn nul_bytes_are_recorded_as_raw_bytes_and_dead_lettered_and_the_queue_moves_on() {
    let mut app = spawn_app().await;
    // A raw NUL byte: not JSON. An escaped one in a valid envelope: JSON that jsonb refuses.
    let raw: &[u8] = b"{\"id\": \"x\0y\", \"type\": \"user-registered\"}";
    let mut escaped = serde_json::to_value(registered(&unique_email(), None)).unwrap();
    escaped["data"]["username"] = "nul\u{0}name".into();
    let escaped = escaped.to_string();
    assert!(escaped.contains("\\u0000"));
    app.publish_raw(Event::TYPES[0], raw).await;
    app.publish_raw(Event::TYPES[0], escaped.as_bytes()).await;
    let valid = registered(&unique_email(), None);
    app.publish(&valid).await;

    let messages = app.smtp.wait_for_messages(1, WAIT).await.unwrap();
    assert_eq!(messages[0].recipients[0], valid.event.recipient());
    wait_dead_lettered(&app, 2).await;
    for body in [raw, escaped.as_bytes()] {
        let hex: String = body.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            app.count(&format!(
                "SELECT count(*) AS n FROM failed_sends WHERE encode(body, 'hex') = '{hex}' \
                 AND payload IS NULL AND error LIKE 'unreadable event%' AND resolved_at IS NULL"
            ))
            .await,
            1
        );
    }
    assert_eq!(app.count("SELECT count(*) AS n FROM deliveries").await, 1);
}

#[tokio::test]
async fn an_unknown_major_version_is_recorded_and_dead_lettered_with_its_reason() {
    let mut app = spawn_app().await;
    let mut future = serde_json::to_value(registered(&unique_email(), None)).unwrap();
    future["version"] = 2.into();
    app.publish_raw(Event::TYPES[0], future.to_string().as_bytes())
        .await;
    let valid = registered(&unique_email(), None);
    app.publish(&valid).await;

    let messages = app.smtp.wait_for_messages(1, WAIT).await.unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].recipients[0], valid.event.recipient());
    wait_dead_lettered(&app, 1).await;
    assert_eq!(
        app.count(
            "SELECT count(*) AS n FROM failed_sends \
             WHERE error LIKE '%unsupported envelope version 2%' AND payload->>'version' = '2'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn the_work_queue_is_a_quorum_queue_with_a_delivery_limit_and_a_dead_letter_exchange() {
    let app = spawn_app().await;
    let queues = app
        .vhost
        .list_queues(&["name", "type", "arguments"])
        .unwrap();
    let line = queues
        .lines()
        .find(|line| line.starts_with(&format!("{QUEUE}\t")))
        .unwrap_or_else(|| panic!("no {QUEUE} queue: {queues}"));
    assert!(line.contains("quorum"), "{line}");
    assert!(
        line.contains(&format!("x-delivery-limit\",{DELIVERY_LIMIT}"))
            || line.contains(&format!("x-delivery-limit\", {DELIVERY_LIMIT}"))
            || line.contains(&DELIVERY_LIMIT.to_string()),
        "{line}"
    );
    assert!(line.contains("mailer.dlx"), "{line}");
}

#[tokio::test]
async fn a_backlog_with_poison_duplicates_and_a_row_the_database_refuses_is_recorded_once_each() {
    // The backlog builds while the mailer is down, so it arrives in batches: one statement records
    // a whole batch, and a row the database refuses (an escaped NUL) must not take the rest with it.
    let mut app = spawn_app().await;
    app.stop().await;
    let valid: Vec<_> = (0..30).map(|_| registered(&unique_email(), None)).collect();
    let mut refused = serde_json::to_value(registered(&unique_email(), None)).unwrap();
    refused["data"]["username"] = "nul\u{0}name".into();
    for (n, event) in valid.iter().enumerate() {
        app.publish(event).await;
        match n {
            10 => {
                app.publish_raw(Event::TYPES[0], refused.to_string().as_bytes())
                    .await
            }
            15 => app.publish_raw(Event::TYPES[0], b"\x00\xff binary").await,
            // The same event again (a relay that published and crashed before marking it).
            20 => app.publish(&valid[3]).await,
            _ => {}
        }
    }
    assert_eq!(app.queue_depth(QUEUE).await, 33);
    app.start().await;

    let messages = app.smtp.wait_for_messages(30, WAIT).await.unwrap();
    wait_dead_lettered(&app, 2).await;
    let mut recipients: Vec<&str> = messages.iter().map(|m| m.recipients[0].as_str()).collect();
    recipients.sort();
    let mut expected: Vec<&str> = valid.iter().map(|e| e.event.recipient()).collect();
    expected.sort();
    assert_eq!(recipients, expected, "each valid event mailed exactly once");
    assert_eq!(app.count("SELECT count(*) AS n FROM deliveries").await, 30);
    assert_eq!(
        app.count("SELECT count(*) AS n FROM failed_sends WHERE error LIKE 'unreadable event%'")
            .await,
        2
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.smtp.messages().len(), 30);
}

/// Issue 18, item 15: an unreadable message that carries a real event's id leaves an unresolved
/// failed send for that id; the real event then bounces (550). The operator must see the bounce,
/// not only the old "unreadable" row (`ON CONFLICT DO NOTHING` hid it).
#[tokio::test]
async fn a_real_bounce_behind_an_unreadable_row_of_the_same_event_is_shown_to_the_operator() {
    let mut app = spawn_with(&[("MAILER_MAX_ATTEMPTS", "1")]).await;
    let email = unique_email();
    let event = registered(&email, None);
    app.smtp
        .reply_to_recipient(&email, "550 5.1.1 No such user here");
    app.publish_raw_as(Event::TYPES[0], event.id, b"{not json")
        .await;
    let unreadable = format!(
        "SELECT count(*) AS n FROM failed_sends WHERE event_id = '{}' AND error LIKE 'unreadable event%'",
        event.id
    );
    eventually("the unreadable row", || async {
        (app.count(&unreadable).await == 1).then_some(())
    })
    .await;

    app.publish(&event).await;
    eventually("the real event's delivery to fail", || async {
        let failed = format!(
            "SELECT count(*) AS n FROM deliveries WHERE event_id = '{}' AND status = 'failed'",
            event.id
        );
        (app.count(&failed).await == 1).then_some(())
    })
    .await;

    let rows = mailer::operator::list(&app.settings, false).await.unwrap();
    assert_eq!(
        rows.len(),
        1,
        "one unresolved failed send per event: {rows:?}"
    );
    let row = &rows[0];
    assert_eq!(row.event_id, Some(event.id));
    assert!(
        row.error.contains("(550): 5.1.1"),
        "the operator sees the older cause only: {:?}",
        row.error
    );
    assert_eq!(row.recipient.as_deref(), Some(email.as_str()));
    assert_eq!(row.attempts, 1);
    assert_eq!(row.payload.as_ref().unwrap()["id"], event.id.to_string());
    // The older cause stays in the row's history.
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM failed_sends, jsonb_array_elements(history) AS h \
             WHERE event_id = '{}' AND h->>'error' LIKE 'unreadable event%'",
            event.id
        ))
        .await,
        1
    );
    // And the operator can hand the real event back to the sender.
    let outcomes = mailer::operator::retry(
        &app.settings,
        mailer::operator::Selection::One(row.id),
        "test",
    )
    .await
    .unwrap();
    assert_eq!(outcomes[0].result, Ok(()));
}
