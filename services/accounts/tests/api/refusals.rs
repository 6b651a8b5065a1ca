//! Cheap refusals: a locked or flooding client is turned away without a database write, and a
//! lockout is audited once per window, whichever replica learns of it.

use std::net::IpAddr;

use diesel_async::RunQueryDsl;
use futures_util::future::join_all;
use reqwest::{Response, StatusCode};
use serde_json::json;

use crate::helpers::{PASSWORD, TestApp, client, errors, login_via, spawn_roomy, unique_email};

const LOCKED: &str = "Too many failed login attempts. Try again later.";

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 1, last])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rows {
    attempts: i64,
    audit: i64,
    locked: i64,
}

async fn rows(app: &TestApp) -> Rows {
    #[derive(diesel::QueryableByName)]
    struct Counts {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        attempts: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        audit: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        locked: i64,
    }
    let counts: Counts = diesel::sql_query(
        "SELECT (SELECT count(*) FROM login_attempts) AS attempts, \
                (SELECT count(*) FROM audit_log) AS audit, \
                (SELECT count(*) FROM audit_log WHERE action = 'login.locked') AS locked",
    )
    .get_result(&mut app.conn().await)
    .await
    .expect("counts");
    Rows {
        attempts: counts.attempts,
        audit: counts.audit,
        locked: counts.locked,
    }
}

/// `n` logins at once from `from`, alternating the right password and a wrong one, for `emails`
/// in turn; every answer must be a 429 with Retry-After.
async fn refused_flood(
    app: &TestApp,
    from: &reqwest::Client,
    emails: &[String],
    n: usize,
) -> Vec<String> {
    let logins = (0..n).map(|i| {
        let email = &emails[i % emails.len()];
        let password = if i % 2 == 0 {
            PASSWORD
        } else {
            "wrong-password-9"
        };
        login_via(app, from, email, password)
    });
    let mut messages = Vec::new();
    for response in join_all(logins).await {
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(response.headers().contains_key("retry-after"));
        let message = errors(response).await["throttle"][0]
            .as_str()
            .unwrap()
            .to_string();
        messages.push(message);
    }
    messages
}

#[tokio::test]
async fn a_locked_clients_refused_login_flood_writes_no_rows_beyond_the_first_lockouts() {
    let app = spawn_roomy(None, &[]).await;
    // A locked (account, client) pair: five wrong passwords.
    let (email, _) = app.register_user().await;
    let from = client(Some(loopback(10)));
    for _ in 0..5 {
        let response = login_via(&app, &from, &email, "wrong-password-1").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let before = rows(&app).await;
    let messages = refused_flood(&app, &from, std::slice::from_ref(&email), 40).await;
    assert!(messages.iter().all(|m| m == LOCKED), "{messages:?}");
    let after = rows(&app).await;
    assert_eq!(
        after.attempts, before.attempts,
        "refused logins recorded attempts"
    );
    assert_eq!(
        (after.audit - before.audit, after.locked - before.locked),
        (1, 1),
        "the lockout is audited once, and nothing else is written"
    );
    // The owner's other accounts from that client are not locked; the pair is.
    let (other, _) = app.register_user().await;
    assert_eq!(
        login_via(&app, &from, &other, PASSWORD).await.status(),
        StatusCode::OK
    );

    // A client locked for spraying (50 failures over many addresses) keeps spraying: every
    // further guess, at any address, is refused without a row.
    let sprayer = client(Some(loopback(11)));
    let targets: Vec<String> = (0..50).map(|_| unique_email()).collect();
    for chunk in targets.chunks(10) {
        let guesses = chunk
            .iter()
            .map(|email| login_via(&app, &sprayer, email, "Password1"));
        for response in join_all(guesses).await {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        }
    }
    let before = rows(&app).await;
    let fresh: Vec<String> = (0..10).map(|_| unique_email()).collect();
    let messages = refused_flood(&app, &sprayer, &fresh, 10).await;
    assert!(messages.iter().all(|m| m == LOCKED), "{messages:?}");
    let after = rows(&app).await;
    assert_eq!(
        after.attempts, before.attempts,
        "refused sprays recorded attempts"
    );
    assert_eq!(
        (after.audit - before.audit, after.locked - before.locked),
        (1, 1)
    );
}

#[tokio::test]
async fn a_login_flood_from_one_client_is_refused_before_the_database() {
    let app = spawn_roomy(None, &[]).await;
    let (email, _) = app.register_user().await;
    let from = client(Some(loopback(20)));
    let before = rows(&app).await;
    // The right password, 300 times at once: what a flood of a stolen credential looks like.
    let logins = (0..300).map(|_| login_via(&app, &from, &email, PASSWORD));
    let statuses: Vec<StatusCode> = join_all(logins)
        .await
        .iter()
        .map(Response::status)
        .collect();
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(ok + refused, 300, "{statuses:?}");
    assert!(
        ok >= 1,
        "the owner's own password never got through: {statuses:?}"
    );
    let after = rows(&app).await;
    // At most the client's burst reaches the login guard; the rest cost no row.
    assert!(
        after.attempts - before.attempts <= 60,
        "{} attempts recorded for 300 logins from one client",
        after.attempts - before.attempts
    );
    assert!(
        after.audit - before.audit <= 61,
        "{} audit rows",
        after.audit - before.audit
    );
    // Another client is not affected.
    let other = client(Some(loopback(21)));
    assert_eq!(
        login_via(&app, &other, &email, PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_lockout_learnt_on_one_replica_holds_on_another_and_is_audited_once() {
    let first = spawn_roomy(None, &[("ACCOUNTS_LOCKOUT_SECONDS", "3")]).await;
    let second = spawn_roomy(Some(&first.db), &[("ACCOUNTS_LOCKOUT_SECONDS", "3")]).await;
    let (email, _) = first.register_user().await;
    let from = client(Some(loopback(30)));
    for _ in 0..5 {
        let response = login_via(&first, &from, &email, "wrong-password-1").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let before = rows(&first).await;
    // The first replica learns the lockout; the second has never seen this client.
    assert_eq!(
        login_via(&first, &from, &email, PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let messages = refused_flood(&second, &from, std::slice::from_ref(&email), 20).await;
    assert!(messages.iter().all(|m| m == LOCKED), "{messages:?}");
    let messages = refused_flood(&first, &from, std::slice::from_ref(&email), 20).await;
    assert!(messages.iter().all(|m| m == LOCKED), "{messages:?}");
    let after = rows(&first).await;
    assert_eq!(after.attempts, before.attempts);
    assert_eq!(
        (after.audit - before.audit, after.locked - before.locked),
        (1, 1)
    );
    // Remembered until the lockout ends, not longer: Postgres decides again after it.
    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    assert_eq!(
        login_via(&second, &from, &email, PASSWORD).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        login_via(&first, &from, &email, PASSWORD).await.status(),
        StatusCode::OK
    );
}

async fn change_email_from(
    app: &TestApp,
    from: &reqwest::Client,
    token: &str,
    email: &str,
) -> Response {
    from.put(app.url("/api/user"))
        .header("Authorization", format!("Token {token}"))
        .json(&json!({ "user": { "email": email } }))
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn thirty_email_changes_from_one_client_send_at_most_the_limits_mail() {
    let app = spawn_roomy(None, &[]).await;
    // A fresh session needs no current password to change the email: a stolen token, say.
    let (_, body) = app.register_user().await;
    let token = body["user"]["token"].as_str().unwrap().to_string();
    let from = client(Some(loopback(40)));
    let changes = (0..30).map(|_| {
        let (app, from, token) = (&app, &from, &token);
        async move { change_email_from(app, from, token, &unique_email()).await }
    });
    let responses = join_all(changes).await;
    let mut changed = 0;
    for response in responses {
        match response.status() {
            StatusCode::OK => changed += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(response.headers().contains_key("retry-after"));
                assert!(errors(response).await["throttle"][0].is_string());
            }
            other => panic!("unexpected {other}"),
        }
    }
    let mails = app.outbox_events("email-changed").await.len()
        + app
            .outbox_events("email-confirmation-requested")
            .await
            .len();
    // Three mail-sending requests an hour for the account; each change sends two mails.
    assert_eq!(changed, 3, "{changed} of 30 email changes went through");
    assert_eq!(mails, 2 * changed);
}

#[tokio::test]
async fn probing_addresses_through_email_changes_is_throttled_per_client() {
    let app = spawn_roomy(None, &[]).await;
    let (taken, _) = app.register_user().await;
    let from = client(Some(loopback(41)));
    let (mut revealed, mut refused) = (0, 0);
    // The prober's own accounts, each asking twice whether `taken` has an account.
    for _ in 0..12 {
        let (_, body) = app.register_user().await;
        let token = body["user"]["token"].as_str().unwrap().to_string();
        for _ in 0..2 {
            let response = change_email_from(&app, &from, &token, &taken).await;
            match response.status() {
                StatusCode::BAD_REQUEST => {
                    let errors = errors(response).await;
                    assert_eq!(errors["email"][0], "user with this email already exists.");
                    revealed += 1;
                }
                StatusCode::TOO_MANY_REQUESTS => refused += 1,
                other => panic!("unexpected {other}"),
            }
        }
    }
    // 20 mail-sending requests an hour per client; an email change counts as two.
    assert_eq!(revealed, 10, "{revealed} of 24 probes answered");
    assert_eq!(revealed + refused, 24);
}
