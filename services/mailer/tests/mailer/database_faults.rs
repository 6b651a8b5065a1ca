//! The database misbehaving under the sender: a claim that comes back after its lease, and a
//! connection that freezes (a half-open TCP connection).

use std::{collections::HashSet, time::Duration};

use diesel_async::SimpleAsyncConnection;
use mailer::{db, deliveries};
use testkit::StallingProxy;

use crate::helpers::{WAIT, configure, eventually, registered, spawn_with, unique_email};

/// Issue 18, item 14: the sender's claim is held up in the database (a lock) for longer than its
/// lease, so the rows come back already due again. Sending them anyway gave a duplicate: the same
/// sender (or another) claims them again at once, and both send.
#[tokio::test]
async fn a_claim_that_returns_after_its_lease_sends_nothing() {
    let mut app = configure(&[
        ("MAILER_SMTP_TIMEOUT_SECS", "1"),
        ("MAILER_DATABASE_STATEMENT_TIMEOUT_MS", "120000"),
    ])
    .await;
    db::migrate(app.db.url()).await.unwrap();
    let event = registered(&unique_email(), None);
    let mut conn = app.conn().await;
    assert_eq!(
        deliveries::record(&mut conn, &[&event]).await.unwrap(),
        HashSet::from([event.id])
    );
    // Holds every claim until the lease it asks for is over.
    let mut lock = app.conn().await;
    lock.batch_execute("BEGIN; LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    app.start_without_waiting().await;
    tokio::time::sleep(app.settings.lease() + Duration::from_secs(1)).await;
    lock.batch_execute("COMMIT").await.unwrap();

    app.smtp.wait_for_messages(1, WAIT).await.unwrap();
    eventually("the delivery to be settled as sent", || async {
        let n = app
            .count("SELECT count(*) AS n FROM deliveries WHERE status = 'sent'")
            .await;
        (n == 1).then_some(())
    })
    .await;
    // Time for a second send, if one was under way.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        app.smtp.data_attempts(),
        1,
        "the mail went out more than once"
    );
}

/// Issue 18, item 14: the mailer's database connections freeze (the path to the server dies
/// without a reset; new connections work). The whole mailer hung until TCP gave up (15 minutes).
#[tokio::test]
async fn a_frozen_database_connection_does_not_hang_the_mailer() {
    let database = testkit::TestDatabase::new("mailer");
    let proxy = StallingProxy::start("127.0.0.1:5432".parse().unwrap())
        .await
        .unwrap();
    let proxied = database
        .url()
        .replace("127.0.0.1:5432", &proxy.addr().to_string());
    let mut app = spawn_with(&[
        ("MAILER_DATABASE_URL", proxied.as_str()),
        ("MAILER_DATABASE_STATEMENT_TIMEOUT_MS", "1000"),
    ])
    .await;
    app.publish(&registered(&unique_email(), None)).await;
    app.smtp.wait_for_messages(1, WAIT).await.unwrap();

    proxy.freeze_open_connections();
    for _ in 0..5 {
        app.publish(&registered(&unique_email(), None)).await;
    }
    let delivered = app.smtp.wait_for_messages(6, WAIT).await;
    assert!(
        delivered.is_ok(),
        "mail stopped with the frozen connection: {delivered:?}"
    );
    drop(database);
}
