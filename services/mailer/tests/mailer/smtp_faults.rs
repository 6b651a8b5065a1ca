//! SMTP servers that misbehave: a reply that comes after the timeout.

use std::time::Duration;

use crate::helpers::{TestApp, WAIT, eventually, registered, spawn_with, unique_email};

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

/// Waits until no delivery is pending any more, and returns (sent, failed sends, deliveries that
/// needed more than one attempt).
async fn settled_counts(app: &TestApp, total: i64) -> (i64, i64, i64) {
    eventually("every delivery to be settled", || async {
        let settled = app
            .count("SELECT count(*) AS n FROM deliveries WHERE status <> 'pending'")
            .await;
        (settled == total).then_some(())
    })
    .await;
    (
        app.count("SELECT count(*) AS n FROM deliveries WHERE status = 'sent'")
            .await,
        app.count("SELECT count(*) AS n FROM failed_sends").await,
        app.count("SELECT count(*) AS n FROM deliveries WHERE attempts > 1")
            .await,
    )
}

/// Issue 18, item 12: a provider that takes one mail per connection closes each pooled connection
/// after its mail. Reusing it failed the next mail and charged it an attempt; with one attempt
/// allowed, each such mail lands in `failed_sends`.
#[tokio::test]
async fn a_server_that_takes_one_mail_per_connection_costs_no_mail_an_attempt() {
    const MAILS: usize = 60;
    let mut app = spawn_with(&[("MAILER_MAX_ATTEMPTS", "1"), ("MAILER_CONCURRENCY", "4")]).await;
    app.smtp.close_after_mails(1);
    every_mail_goes_out_at_its_first_attempt(&mut app, MAILS).await;
}

/// Issue 18, item 12: a provider that takes one mail per connection says so only when the next
/// one starts (`421` to MAIL, then it closes), so the pooled connection looks fine until it is
/// used. That mail must go out on a fresh connection at no attempt's cost.
#[tokio::test]
async fn a_server_that_refuses_a_second_mail_on_a_connection_costs_no_mail_an_attempt() {
    const MAILS: usize = 30;
    let mut app = spawn_with(&[("MAILER_MAX_ATTEMPTS", "1"), ("MAILER_CONCURRENCY", "4")]).await;
    app.smtp.refuse_after_mails(1);
    every_mail_goes_out_at_its_first_attempt(&mut app, MAILS).await;
}

/// Publishes `mails` registrations and checks that each was sent, none recorded as failed and
/// none charged a second attempt.
async fn every_mail_goes_out_at_its_first_attempt(app: &mut TestApp, mails: usize) {
    for _ in 0..mails {
        app.publish(&registered(&unique_email(), None)).await;
    }
    let (sent, failed, retried) = settled_counts(app, mails as i64).await;
    assert_eq!(
        (sent, failed, retried),
        (mails as i64, 0, 0),
        "sent, in failed_sends, needing a second attempt"
    );
    assert_eq!(app.smtp.messages().len(), mails);
}

/// Issue 18, item 12: a load balancer in front of the SMTP server closes connections idle for a
/// moment (with a `421`). A mail that picked such a connection from the pool waited out a retry.
#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_never_used_for_a_mail() {
    const MAILS: usize = 5;
    let mut app = spawn_with(&[("MAILER_MAX_ATTEMPTS", "1"), ("MAILER_CONCURRENCY", "2")]).await;
    app.smtp.close_when_idle(Duration::from_millis(300));
    for i in 0..MAILS {
        app.publish(&registered(&unique_email(), None)).await;
        app.smtp.wait_for_messages(i + 1, WAIT).await.ok();
        // Longer than the server's idle timeout: the pooled connection is closed by now.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let (sent, failed, retried) = settled_counts(&app, MAILS as i64).await;
    assert_eq!(
        (sent, failed, retried),
        (MAILS as i64, 0, 0),
        "sent, in failed_sends, needing a second attempt"
    );
}
