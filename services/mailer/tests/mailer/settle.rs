//! Settling a send: conditional on the sender's claim, on the database's clock, retried within the
//! lease.

use std::time::Duration;

use mailer::{db, deliveries, sender};
use testkit::TestDatabase;

use crate::helpers::{WAIT, eventually, registered, spawn_with, unique_email};

#[tokio::test]
async fn a_stale_sender_never_overwrites_a_newer_outcome() {
    let database = TestDatabase::new("mailer");
    db::migrate(database.url()).await.unwrap();
    let pool = db::pool(database.url(), 2).unwrap();
    let mut conn = pool.get().await.unwrap();
    let event = registered(&unique_email(), None);
    assert!(deliveries::record(&mut conn, &event).await.unwrap());

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
    assert!(
        deliveries::mark_sent(&mut conn, &current[0], 1, "<id@x>")
            .await
            .unwrap()
    );

    // A comes back with its own outcomes: none of them lands.
    assert!(
        !sender::record_failure(&mut conn, &stale[0], 1, "550 late")
            .await
            .unwrap()
    );
    assert!(
        !deliveries::reschedule(&mut conn, &stale[0], 1, Duration::from_secs(1), "451")
            .await
            .unwrap()
    );
    assert!(
        !deliveries::mark_sent(&mut conn, &stale[0], 1, "<id@x>")
            .await
            .unwrap()
    );
    // Nor does B's own outcome land twice.
    assert!(
        !deliveries::mark_sent(&mut conn, &current[0], 1, "<id@x>")
            .await
            .unwrap()
    );

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
