//! Events in, mail out: delivery, idempotency, retries and failures.

use std::time::Duration;

use mail_parser::MessageParser;
use mailer::operator::{self, Selection};

use crate::helpers::{
    WAIT, confirmation_url, eventually, registered, spawn_app, spawn_with, unique_email,
};

#[tokio::test]
async fn an_event_arrives_as_one_multipart_mail_with_the_link_in_both_parts() {
    let mut app = spawn_app().await;
    let email = unique_email();
    let event = registered(&email, Some("ada"));

    app.publish(&event).await;

    let messages = app.smtp.wait_for_messages(1, WAIT).await.unwrap();
    assert_eq!(messages.len(), 1);
    let mail = &messages[0];
    assert_eq!(mail.recipients, vec![email.clone()]);
    assert_eq!(mail.mail_from, "noreply@example.test");
    let parsed = MessageParser::default().parse(&mail.data).unwrap();
    assert_eq!(parsed.subject(), Some("Accounts Welcome Mail"));
    let to = parsed.to().unwrap().first().unwrap();
    assert_eq!(to.address(), Some(email.as_str()));
    assert_eq!(
        parsed.message_id(),
        Some(format!("{}@example.test", event.id).as_str())
    );
    let raw = String::from_utf8_lossy(&mail.data);
    assert!(raw.contains("multipart/alternative"), "{raw}");
    let text = parsed.body_text(0).unwrap();
    let html = parsed.body_html(0).unwrap();
    let link = confirmation_url(&event);
    assert!(text.contains("Hello, ada!"), "{text}");
    assert!(text.contains(link), "{text}");
    assert!(html.contains("Hello, ada!"), "{html}");
    assert!(html.contains(&format!("href=\"{link}\"")), "{html}");
    assert!(html.contains("Confirm Account"), "{html}");

    let sent = eventually("the delivery to be marked sent", || async {
        let n = app
            .count(&format!(
                "SELECT count(*) AS n FROM deliveries WHERE event_id = '{}' AND status = 'sent' AND attempts = 1",
                event.id
            ))
            .await;
        (n == 1).then_some(n)
    })
    .await;
    assert_eq!(sent, 1);
}

#[tokio::test]
async fn the_same_event_published_twice_sends_one_mail() {
    let mut app = spawn_app().await;
    let event = registered(&unique_email(), None);

    app.publish(&event).await;
    app.smtp.wait_for_messages(1, WAIT).await.unwrap();
    app.publish(&event).await;
    // A second, different event proves the duplicate was consumed (queues are FIFO) before we count.
    let marker = registered(&unique_email(), None);
    app.publish(&marker).await;
    app.smtp.wait_for_messages(2, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let messages = app.smtp.messages();
    assert_eq!(messages.len(), 2);
    assert_eq!(
        messages
            .iter()
            .filter(|m| m.recipients[0] == event.event.recipient())
            .count(),
        1
    );
    assert_eq!(app.count("SELECT count(*) AS n FROM deliveries").await, 2);
}

#[tokio::test]
async fn transient_smtp_failures_are_retried_and_the_attempts_recorded() {
    let mut app = spawn_app().await;
    app.smtp
        .reply_to_next_data(2, "451 4.3.0 Temporary local problem");
    let event = registered(&unique_email(), Some("grace"));

    app.publish(&event).await;

    let messages = app.smtp.wait_for_messages(1, WAIT).await.unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(app.smtp.data_attempts(), 3);
    eventually("the delivery to be sent on the third attempt", || async {
        let n = app
            .count(&format!(
                "SELECT count(*) AS n FROM deliveries WHERE event_id = '{}' AND status = 'sent' AND attempts = 3 AND last_error LIKE '%451%'",
                event.id
            ))
            .await;
        (n == 1).then_some(())
    })
    .await;
    assert_eq!(app.count("SELECT count(*) AS n FROM failed_sends").await, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.smtp.messages().len(), 1);
}

#[tokio::test]
async fn a_permanent_smtp_failure_is_recorded_at_once_without_retry() {
    let mut app = spawn_app().await;
    let email = unique_email();
    app.smtp
        .reply_to_recipient(&email, "550 5.1.1 No such user here");
    let event = registered(&email, None);

    app.publish(&event).await;

    eventually("a failed_sends row", || async {
        let n = app
            .count(&format!(
                "SELECT count(*) AS n FROM failed_sends WHERE event_id = '{}' AND attempts = 1 \
                 AND error LIKE '%550%' AND template = 'user-registered' AND recipient = '{email}' \
                 AND payload->>'id' = '{}'",
                event.id, event.id
            ))
            .await;
        (n == 1).then_some(())
    })
    .await;
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM deliveries WHERE event_id = '{}' AND status = 'failed' AND attempts = 1",
            event.id
        ))
        .await,
        1
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.count("SELECT count(*) AS n FROM failed_sends").await, 1);
    assert!(app.smtp.messages().is_empty());
}

#[tokio::test]
async fn mail_that_never_gets_through_is_recorded_and_the_operator_can_resend_it() {
    let mut app = spawn_with(&[("MAILER_MAX_ATTEMPTS", "3"), ("MAILER_RETRY_BASE_MS", "50")]).await;
    app.smtp.stop();
    let event = registered(&unique_email(), Some("linus"));

    app.publish(&event).await;

    let id: i64 = eventually("a failed_sends row after the last attempt", || async {
        let rows = operator::list(&app.settings, false).await.unwrap();
        rows.first().map(|row| {
            assert_eq!(row.attempts, 3);
            assert_eq!(row.event_id, Some(event.id));
            row.id
        })
    })
    .await;
    assert!(app.smtp.messages().is_empty());

    app.smtp.resume().await.unwrap();
    let outcomes = operator::retry(&app.settings, Selection::One(id), "test")
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].result, Ok(()));

    // The retry is a state change; the running mailer sends it.
    let messages = app.smtp.wait_for_messages(1, WAIT).await.unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].recipients[0], event.event.recipient());
    let row = operator::show(&app.settings, id).await.unwrap();
    assert!(row.resolved_at.is_some());
    // The retry started a fresh schedule: this was the first attempt of it.
    eventually("the delivery to be sent on the retry's first attempt", || async {
        let n = app
            .count(&format!(
                "SELECT count(*) AS n FROM deliveries WHERE event_id = '{}' AND status = 'sent' AND attempts = 1",
                event.id
            ))
            .await;
        (n == 1).then_some(())
    })
    .await;
    assert!(
        operator::list(&app.settings, false)
            .await
            .unwrap()
            .is_empty()
    );
    // Resolved rows are not retried.
    assert!(
        operator::retry(&app.settings, Selection::One(id), "test")
            .await
            .is_err()
    );
    assert!(
        operator::retry(&app.settings, Selection::All, "test")
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.smtp.messages().len(), 1);
}

#[tokio::test]
async fn a_retry_that_fails_again_reopens_its_row_with_the_history() {
    let mut app = spawn_with(&[("MAILER_MAX_ATTEMPTS", "1")]).await;
    app.smtp.reply_to_next_data(2, "421 4.7.0 Try again later");
    let event = registered(&unique_email(), None);
    app.publish(&event).await;
    let id: i64 = eventually("a failed_sends row", || async {
        operator::list(&app.settings, false)
            .await
            .unwrap()
            .first()
            .map(|row| row.id)
    })
    .await;

    let outcomes = operator::retry(&app.settings, Selection::All, "test")
        .await
        .unwrap();

    assert_eq!(outcomes[0].result, Ok(()));
    let again = eventually("the row to reopen", || async {
        operator::list(&app.settings, false)
            .await
            .unwrap()
            .into_iter()
            .find(|row| row.history.as_array().is_some_and(|h| h.len() == 3))
    })
    .await;
    assert_eq!(again.id, id, "one row per event");
    assert_eq!(again.event_id, Some(event.id));
    // A fresh schedule: the one attempt allowed, not a second one on top of the first.
    assert_eq!(again.attempts, 1);
    assert!(again.error.contains("421"), "{}", again.error);
    assert!(again.resolved_at.is_none());
    let what: Vec<&str> = again
        .history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["what"].as_str().unwrap())
        .collect();
    assert_eq!(what, ["failed", "retried", "failed"]);
    assert_eq!(operator::list(&app.settings, true).await.unwrap().len(), 1);
    assert!(app.smtp.messages().is_empty());
}

#[tokio::test]
async fn a_retry_pending_across_a_restart_is_still_sent() {
    // The retry is scheduled 2-4 s out, long enough to stop the mailer before it falls due.
    let mut app = spawn_with(&[("MAILER_RETRY_BASE_MS", "4000")]).await;
    app.smtp
        .reply_to_next_data(1, "451 4.3.0 Temporary local problem");
    let event = registered(&unique_email(), None);
    app.publish(&event).await;
    eventually("the first attempt to fail and be rescheduled", || async {
        let n = app
            .count(&format!(
                "SELECT count(*) AS n FROM deliveries WHERE event_id = '{}' AND status = 'pending' AND attempts = 1",
                event.id
            ))
            .await;
        (n == 1).then_some(())
    })
    .await;

    app.stop().await;
    assert!(app.smtp.messages().is_empty());
    app.start().await;

    let messages = app.smtp.wait_for_messages(1, WAIT).await.unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].recipients[0], event.event.recipient());
}
