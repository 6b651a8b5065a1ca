//! SMTP servers that misbehave: a reply that comes after the timeout.

use std::time::Duration;

use crate::helpers::{WAIT, eventually, registered, spawn_with, unique_email};

#[tokio::test]
async fn a_late_smtp_reply_never_reaches_the_next_mail() {
    // One connection, so the next mail would reuse the late one if it were pooled again.
    let mut app = spawn_with(&[
        ("MAILER_CONCURRENCY", "1"),
        ("MAILER_SMTP_TIMEOUT_SECS", "1"),
        ("MAILER_RETRY_BASE_MS", "200"),
    ])
    .await;
    let slow = registered(&unique_email(), None);
    let rejected_email = unique_email();
    let rejected = registered(&rejected_email, None);
    app.smtp
        .reply_to_recipient(&rejected_email, "550 5.1.1 No such user here");
    // The first mail's final reply comes well after the 1 s reply timeout (and the 2 s deadline).
    app.smtp.delay_next_data_reply(Duration::from_millis(3500));

    app.publish(&slow).await;
    eventually("the slow mail's data to reach the server", || async {
        (app.smtp.data_received() == 1).then_some(())
    })
    .await;
    app.publish(&rejected).await;

    // The rejected mail is recorded as failed with its own 550, never as sent.
    eventually("the rejected mail's failed send", || async {
        let n = app
            .count(&format!(
                "SELECT count(*) AS n FROM failed_sends WHERE event_id = '{}' AND error LIKE '%550%'",
                rejected.id
            ))
            .await;
        (n == 1).then_some(())
    })
    .await;
    // The slow mail is retried on a fresh connection and sent once.
    let messages = app.smtp.wait_for_messages(1, WAIT).await.unwrap();
    eventually("the slow mail to be settled as sent", || async {
        let n = app
            .count(&format!(
                "SELECT count(*) AS n FROM deliveries WHERE event_id = '{}' AND status = 'sent' AND attempts = 2",
                slow.id
            ))
            .await;
        (n == 1).then_some(())
    })
    .await;
    // Long enough for the late reply to have arrived on the abandoned connection.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let messages = if messages.len() > 1 {
        messages
    } else {
        app.smtp.messages()
    };
    assert_eq!(messages.len(), 1, "duplicates or a rejected mail sent");
    assert_eq!(messages[0].recipients[0], slow.event.recipient());
    assert_eq!(
        app.smtp.abandoned(),
        1,
        "the late reply found its client gone"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM deliveries WHERE event_id = '{}' AND status = 'failed'",
            rejected.id
        ))
        .await,
        1
    );
    assert_eq!(app.count("SELECT count(*) AS n FROM failed_sends").await, 1);
}
