//! Settling a send: conditional on the sender's claim, on the database's clock, retried within the
//! lease.

use std::{collections::HashSet, time::Duration};

use mailer::{
    db,
    deliveries::{self, Outcome, Settle},
};
use testkit::TestDatabase;

use crate::helpers::{WAIT, eventually, registered, spawn_with, unique_email};

#[tokio::test]
async fn a_stale_sender_never_overwrites_a_newer_outcome() {
    let database = TestDatabase::new("mailer");
    db::migrate(database.url()).await.unwrap();
    let pool = db::pool(database.url(), 2).unwrap();
    let mut conn = pool.get().await.unwrap();
    let event = registered(&unique_email(), None);
    assert_eq!(
        deliveries::record(&mut conn, &[&event]).await.unwrap(),
        HashSet::from([event.id])
    );

    // Sender A claims with a lease that is over at once (as if A stalled past its lease); sender B
    // claims the row again and sends it.
    let stale = deliveries::claim_due(&mut conn, 10, Duration::ZERO)
        .await
        .unwrap();
    let current = deliveries::claim_due(&mut conn, 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!((stale.len(), current.len()), (1, 1));
    assert_ne!(stale[0].claim_token, current[0].claim_token);
    let sent = Outcome::Sent {
        message_id: "<id@x>".into(),
    };
    let settle = |claim, outcome| Settle {
        claim,
        attempts: 1,
        outcome,
    };
    assert_eq!(
        deliveries::settle(&mut conn, &[settle(&current[0], &sent)])
            .await
            .unwrap(),
        HashSet::from([event.id])
    );

    // A comes back with its own outcomes, alone or together: none of them lands.
    let failed = Outcome::Failed {
        error: "550 late".into(),
    };
    let retry = Outcome::Retry {
        delay: Duration::from_secs(1),
        error: "451".into(),
    };
    for outcomes in [
        vec![settle(&stale[0], &failed)],
        vec![settle(&stale[0], &retry)],
        vec![settle(&stale[0], &sent)],
        vec![
            settle(&stale[0], &sent),
            settle(&stale[0], &retry),
            settle(&stale[0], &failed),
        ],
        // Nor does B's own outcome land twice.
        vec![settle(&current[0], &sent)],
    ] {
        assert!(
            deliveries::settle(&mut conn, &outcomes)
                .await
                .unwrap()
                .is_empty()
        );
    }

    let mut check = database.connect().await.unwrap();
    let sent = testkit::count(
        &mut check,
        "SELECT count(*) AS n FROM deliveries WHERE status = 'sent' AND claim_token IS NULL AND last_error IS NULL",
    )
    .await
    .unwrap();
    assert_eq!(sent, 1);
    let failed = testkit::count(&mut check, "SELECT count(*) AS n FROM failed_sends")
        .await
        .unwrap();
    assert_eq!(failed, 0);
    drop((conn, check, pool));
}

#[tokio::test]
async fn one_batch_settles_sent_retried_and_failed_sends_together() {
    let database = TestDatabase::new("mailer");
    db::migrate(database.url()).await.unwrap();
    let pool = db::pool(database.url(), 2).unwrap();
    let mut conn = pool.get().await.unwrap();
    let events: Vec<_> = (0..3).map(|_| registered(&unique_email(), None)).collect();
    let recorded = deliveries::record(&mut conn, &events.iter().collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(recorded.len(), 3);
    let mut claims = deliveries::claim_due(&mut conn, 10, Duration::from_secs(60))
        .await
        .unwrap();
    claims.sort_by_key(|claim| events.iter().position(|e| e.id == claim.event_id));
    let outcomes = [
        Outcome::Sent {
            message_id: "<sent@x>".into(),
        },
        Outcome::Retry {
            delay: Duration::from_secs(30),
            error: "451 busy".into(),
        },
        Outcome::Failed {
            error: "550 no such user".into(),
        },
    ];
    let batch: Vec<Settle> = claims
        .iter()
        .zip(&outcomes)
        .map(|(claim, outcome)| Settle {
            claim,
            attempts: 1,
            outcome,
        })
        .collect();
    let settled = deliveries::settle(&mut conn, &batch).await.unwrap();
    assert_eq!(settled, events.iter().map(|e| e.id).collect::<HashSet<_>>());

    let mut check = database.connect().await.unwrap();
    for (event, expected) in events.iter().zip([
        "status = 'sent' AND message_id = '<sent@x>' AND sent_at IS NOT NULL",
        "status = 'pending' AND last_error = '451 busy' AND next_attempt_at > now() + interval '20 seconds'",
        "status = 'failed' AND last_error = '550 no such user'",
    ]) {
        let sql = format!(
            "SELECT count(*) AS n FROM deliveries WHERE event_id = '{}' AND attempts = 1 \
             AND claim_token IS NULL AND {expected}",
            event.id
        );
        assert_eq!(testkit::count(&mut check, &sql).await.unwrap(), 1, "{sql}");
    }
    let failed = format!(
        "SELECT count(*) AS n FROM failed_sends WHERE event_id = '{}' AND error = '550 no such user'",
        events[2].id
    );
    assert_eq!(testkit::count(&mut check, &failed).await.unwrap(), 1);
    drop((conn, check, pool));
}

#[tokio::test]
async fn a_settle_that_meets_a_database_outage_is_retried_within_the_lease() {
    let mut app = spawn_with(&[("MAILER_SMTP_TIMEOUT_SECS", "5")]).await;
    // The lease is 25 s (a 10 s send deadline, the 10 s settle window, 5 s): the settle must land
    // long before it expires.
    app.smtp.delay_next_data_reply(Duration::from_millis(1500));
    let event = registered(&unique_email(), None);
    app.publish(&event).await;
    eventually("the mail's data to reach the server", || async {
        (app.smtp.data_received() == 1).then_some(())
    })
    .await;

    // The database goes away while the server is still deciding, and comes back 3 s later.
    app.db.set_connectable(false).await.unwrap();
    let messages = app.smtp.wait_for_messages(1, WAIT).await.unwrap();
    assert_eq!(messages.len(), 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    app.db.set_connectable(true).await.unwrap();

    let settled = tokio::time::Instant::now();
    eventually("the send to be settled as sent", || async {
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
        settled.elapsed() < Duration::from_secs(8),
        "settled only after {:?}",
        settled.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.smtp.messages().len(), 1);
    assert_eq!(app.count("SELECT count(*) AS n FROM failed_sends").await, 0);
}

#[tokio::test]
async fn an_smtp_reply_with_a_nul_byte_is_settled_with_the_rest_of_its_batch() {
    // Postgres refuses 0x00 in text: a server's reply carrying one must not fail the statement
    // that settles the mail sent alongside it.
    let database = TestDatabase::new("mailer");
    db::migrate(database.url()).await.unwrap();
    let pool = db::pool(database.url(), 2).unwrap();
    let mut conn = pool.get().await.unwrap();
    let events: Vec<_> = (0..3).map(|_| registered(&unique_email(), None)).collect();
    deliveries::record(&mut conn, &events.iter().collect::<Vec<_>>())
        .await
        .unwrap();
    let claims = deliveries::claim_due(&mut conn, 10, Duration::from_secs(60))
        .await
        .unwrap();
    let outcomes = [
        Outcome::Sent {
            message_id: "<sent@x>".into(),
        },
        Outcome::Retry {
            delay: Duration::from_secs(30),
            error: "451 try\0later".into(),
        },
        Outcome::Failed {
            error: "550 no\0such user".into(),
        },
    ];
    let batch: Vec<Settle> = claims
        .iter()
        .zip(&outcomes)
        .map(|(claim, outcome)| Settle {
            claim,
            attempts: 1,
            outcome,
        })
        .collect();
    let settled = deliveries::settle(&mut conn, &batch).await.unwrap();
    assert_eq!(settled.len(), 3);
    let mut check = database.connect().await.unwrap();
    let kept = testkit::count(
        &mut check,
        "SELECT count(*) AS n FROM deliveries WHERE last_error LIKE '451 try%later' OR last_error LIKE '550 no%such user'",
    )
    .await
    .unwrap();
    assert_eq!(kept, 2);
    drop((conn, check, pool));
}
