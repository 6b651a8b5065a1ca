//! `mailer failed retry` under concurrency: operators racing each other never send twice.

use std::{collections::HashMap, time::Duration};

use mailer::operator::{self, Selection};

use crate::helpers::{WAIT, eventually, registered, spawn_with, unique_email};

#[tokio::test]
async fn two_operators_retrying_the_same_failed_send_at_once_send_one_mail() {
    const MAILS: usize = 6;
    let mut app = spawn_with(&[("MAILER_MAX_ATTEMPTS", "1")]).await;
    app.smtp
        .reply_to_next_data(MAILS, "421 4.7.0 Try again later");
    let events: Vec<_> = (0..MAILS)
        .map(|_| registered(&unique_email(), None))
        .collect();
    for event in &events {
        app.publish(event).await;
    }
    let ids: Vec<i64> = eventually("a failed send per mail", || async {
        let rows = operator::list(&app.settings, false).await.unwrap();
        (rows.len() == MAILS).then(|| rows.iter().map(|row| row.id).collect())
    })
    .await;

    // Each row is retried by two operators at once (and, for half of them, by a third with --all).
    let mut handed_back: HashMap<i64, usize> = HashMap::new();
    for (trial, id) in ids.iter().enumerate() {
        let one = || operator::retry(&app.settings, Selection::One(*id));
        let (a, b, all) = tokio::join!(one(), one(), async {
            if trial % 2 == 0 {
                operator::retry(&app.settings, Selection::All).await.ok()
            } else {
                None
            }
        });
        let outcomes = [a, b]
            .into_iter()
            .filter_map(Result::ok)
            .flatten()
            .chain(all.into_iter().flatten())
            .filter(|outcome| outcome.result.is_ok());
        for outcome in outcomes {
            *handed_back.entry(outcome.id).or_default() += 1;
        }
    }
    assert_eq!(handed_back.len(), MAILS, "{handed_back:?}");
    assert!(handed_back.values().all(|n| *n == 1), "{handed_back:?}");

    let messages = app.smtp.wait_for_messages(MAILS, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let messages = if messages.len() > MAILS {
        messages
    } else {
        app.smtp.messages()
    };
    assert_eq!(messages.len(), MAILS, "a retried mail was sent twice");
    for event in &events {
        assert_eq!(
            messages
                .iter()
                .filter(|m| m.recipients[0] == event.event.recipient())
                .count(),
            1
        );
    }
    assert_eq!(
        app.count("SELECT count(*) AS n FROM deliveries WHERE status = 'sent'")
            .await,
        MAILS as i64
    );
}

#[tokio::test]
async fn retry_all_reports_each_row_and_goes_on_after_one_that_cannot_be_retried() {
    let mut app = spawn_with(&[("MAILER_MAX_ATTEMPTS", "1")]).await;
    // First an unreadable message (a failed send with no event: it cannot be resent).
    app.publish_raw(events::Event::TYPES[0], b"not json").await;
    app.smtp.reply_to_next_data(1, "421 4.7.0 Try again later");
    let event = registered(&unique_email(), None);
    app.publish(&event).await;
    eventually("two failed sends", || async {
        (operator::list(&app.settings, false).await.unwrap().len() == 2).then_some(())
    })
    .await;

    let outcomes = operator::retry(&app.settings, Selection::All)
        .await
        .unwrap();

    assert_eq!(outcomes.len(), 2);
    assert!(outcomes[0].result.is_err(), "{:?}", outcomes[0]);
    assert_eq!(outcomes[1].result, Ok(()));
    let messages = app.smtp.wait_for_messages(1, WAIT).await.unwrap();
    assert_eq!(messages[0].recipients[0], event.event.recipient());
}
