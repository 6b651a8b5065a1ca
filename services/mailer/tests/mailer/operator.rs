//! `mailer failed retry` under concurrency: operators racing each other never send twice.

use std::{collections::HashMap, time::Duration};

use mailer::operator::{self, Selection};

use crate::{
    helpers::{WAIT, eventually, registered, spawn_with, unique_email},
    issuer::{SUPPORT, TestIssuer},
};

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
        let one = || operator::retry(&app.settings, Selection::One(*id), "test");
        let (a, b, all) = tokio::join!(one(), one(), async {
            if trial % 2 == 0 {
                operator::retry(&app.settings, Selection::All, "test")
                    .await
                    .ok()
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

    let outcomes = operator::retry(&app.settings, Selection::All, "test")
        .await
        .unwrap();

    assert_eq!(outcomes.len(), 2);
    assert!(outcomes[0].result.is_err(), "{:?}", outcomes[0]);
    assert_eq!(outcomes[1].result, Ok(()));
    let messages = app.smtp.wait_for_messages(1, WAIT).await.unwrap();
    assert_eq!(messages[0].recipients[0], event.event.recipient());
}

/// Issue 18, item 13: mail that failed every attempt (here a server answering 451 for a while) is
/// retried by an operator, through the admin API for one row and `mailer failed retry --all` for
/// the rest, against a greylisting server (451 on first contact, RFC 6647). A retry that got a
/// single attempt sent every row straight back; it must start a fresh schedule, and the row must
/// keep what happened before.
#[tokio::test]
async fn an_operator_retry_against_a_greylisting_server_gets_a_fresh_schedule_and_keeps_the_history()
 {
    const MAILS: usize = 3;
    let issuer = TestIssuer::start().await;
    let jwks = issuer.jwks_url();
    let mut app = spawn_with(&[
        ("MAILER_MAX_ATTEMPTS", "2"),
        ("MAILER_RETRY_BASE_MS", "200"),
        ("ACCOUNTS_JWKS_URL", jwks.as_str()),
    ])
    .await;
    app.smtp
        .reply_to_next_data(MAILS * 2, "451 4.3.0 Mail system busy, try again later");
    let events: Vec<_> = (0..MAILS)
        .map(|_| registered(&unique_email(), None))
        .collect();
    for event in &events {
        app.publish(event).await;
    }
    let ids: Vec<i64> = eventually("every mail in failed_sends", || async {
        let rows = operator::list(&app.settings, false).await.unwrap();
        (rows.len() == MAILS).then(|| rows.iter().map(|row| row.id).collect())
    })
    .await;
    app.smtp.greylist();

    let answer = reqwest::Client::new()
        .post(format!(
            "{}/admin/failed-sends/{}/retry",
            app.base_url(),
            ids[0]
        ))
        .bearer_auth(issuer.token(SUPPORT))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 202);
    let (ok, output) = app.cli(&["failed", "retry", "--all"]).await;
    assert!(ok, "{output}");

    let messages = app.smtp.wait_for_messages(MAILS, WAIT).await;
    let back = operator::list(&app.settings, false).await.unwrap();
    assert!(
        back.is_empty() && messages.is_ok(),
        "{} of {MAILS} rows came straight back: {back:?}",
        back.len()
    );
    eventually(
        "every delivery settled as sent on its second attempt",
        || async {
            let n = app
                .count(
                    "SELECT count(*) AS n FROM deliveries WHERE status = 'sent' AND attempts = 2",
                )
                .await;
            (n == MAILS as i64).then_some(())
        },
    )
    .await;
    // Each row keeps its history: the earlier failure (its error and attempts), then the retry.
    for id in ids {
        let row = operator::show(&app.settings, id).await.unwrap();
        let history = row.history.as_array().unwrap();
        assert_eq!(history.len(), 2, "{history:?}");
        assert_eq!(history[0]["what"], "failed");
        assert_eq!(history[0]["attempts"], 2);
        assert!(
            history[0]["error"]
                .as_str()
                .unwrap()
                .contains("(451): 4.3.0 Mail system busy"),
            "{history:?}"
        );
        assert_eq!(history[1]["what"], "retried");
        assert!(row.resolved_at.is_some());
        assert_eq!(row.attempts, 2);
    }
}
