//! Refresh rotation, logout, password reset and change, throttling.

use std::{net::IpAddr, time::Duration};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Options, PASSWORD, TestApp, client, errors, spawn_app, spawn_with};

fn tokens(body: &Value) -> (String, String) {
    (
        body["user"]["token"].as_str().unwrap().to_string(),
        body["user"]["refresh_token"].as_str().unwrap().to_string(),
    )
}

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    app.post(
        "/api/users/token/refresh",
        &json!({ "refresh_token": token }),
    )
    .await
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let app = spawn_with(Options {
        vars: vec![("ACCOUNTS_REFRESH_REUSE_GRACE_SECONDS", "0".into())],
        ..Options::default()
    })
    .await;
    let (_, body) = app.register_user().await;
    let (_, a) = tokens(&body);

    let rotated = refresh(&app, &a).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let rotated: Value = rotated.json().await.unwrap();
    let (access_b, b) = tokens(&rotated);
    assert_ne!(a, b);
    assert_eq!(app.current_user(&access_b).await.status(), StatusCode::OK);

    // Using A again is theft or replay: A fails, and B dies with it.
    let reused = refresh(&app, &a).await;
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);
    assert!(errors(reused).await["refresh_token"][0].is_string());
    assert_eq!(refresh(&app, &b).await.status(), StatusCode::UNAUTHORIZED);

    assert_eq!(
        refresh(&app, "not-a-token").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let missing = app.post("/api/users/token/refresh", &json!({})).await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn logout_ends_one_session_and_logout_all_ends_every_one() {
    let app = spawn_app().await;
    let (email, body) = app.register_user().await;
    let (access_1, refresh_1) = tokens(&body);
    let second: Value = app.login(&email, PASSWORD).await.json().await.unwrap();
    let (access_2, refresh_2) = tokens(&second);

    let out = app
        .post_authed(
            "/api/users/logout",
            &access_1,
            &json!({ "refresh_token": refresh_1 }),
        )
        .await;
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        refresh(&app, &refresh_1).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // The other session is untouched.
    let still: Value = refresh(&app, &refresh_2).await.json().await.unwrap();
    let (_, refresh_3) = tokens(&still);

    let all = app
        .post_authed("/api/users/logout", &access_2, &json!({ "all": true }))
        .await;
    assert_eq!(all.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        refresh(&app, &refresh_3).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Access tokens issued before the logout-all stop working at once.
    assert_eq!(
        app.current_user(&access_1).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.current_user(&access_2).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // A new login works.
    let again: Value = app.login(&email, PASSWORD).await.json().await.unwrap();
    assert_eq!(
        app.current_user(&tokens(&again).0).await.status(),
        StatusCode::OK
    );

    let anonymous = app.post("/api/users/logout", &json!({})).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

/// The reset link from the newest password-reset-requested event, pointed at the test server.
async fn reset_token(app: &TestApp) -> String {
    let events = app.outbox_events("password-reset-requested").await;
    let url = events.last().expect("a reset event")["reset_url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        url.starts_with("http://localhost:8080/account/reset-password?token="),
        "{url}"
    );
    url.split("token=").nth(1).unwrap().to_string()
}

async fn reset(app: &TestApp, token: &str, password: &str) -> reqwest::Response {
    app.post(
        "/api/users/password/reset",
        &json!({ "token": token, "password": password, "confirm_password": password }),
    )
    .await
}

#[tokio::test]
async fn password_reset_works_once_and_ends_every_session() {
    let app = spawn_app().await;
    let (email, body) = app.register_user().await;
    let (access, refresh_token) = tokens(&body);

    let forgot = app
        .post(
            "/api/users/password/forgot",
            &json!({ "user": { "email": email } }),
        )
        .await;
    assert_eq!(forgot.status(), StatusCode::ACCEPTED);
    let unknown = app
        .post(
            "/api/users/password/forgot",
            &json!({ "user": { "email": "nobody@example.com" } }),
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::ACCEPTED);
    assert_eq!(app.outbox_events("password-reset-requested").await.len(), 1);
    let token = reset_token(&app).await;

    // Opening the page (as a mail scanner would) does not consume the token.
    let page = app
        .client
        .get(app.url(&format!("/account/reset-password?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains(&token));

    let weak = reset(&app, &token, "short").await;
    assert_eq!(weak.status(), StatusCode::BAD_REQUEST);
    assert!(errors(weak).await["password"][0].is_string());

    let new_password = "brand-new-9876";
    assert_eq!(
        reset(&app, &token, new_password).await.status(),
        StatusCode::NO_CONTENT
    );
    let again = reset(&app, &token, "another-one-5432").await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        errors(again).await["token"][0],
        "The reset link is invalid, expired or already used."
    );

    assert_eq!(
        app.login(&email, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login(&email, new_password).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.current_user(&access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh(&app, &refresh_token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.outbox_events("password-changed").await.len(), 1);

    // An expired reset token fails.
    let now = chrono::Utc::now().timestamp();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(app.kid().await);
    let expired = app.sign(
        header,
        &json!({
            "iss": "http://localhost:8080", "aud": "accounts:password-reset", "sub": body["user"]["id"],
            "iat": now - 7200, "exp": now - 3600, "jti": uuid::Uuid::new_v4(), "typ": "password-reset", "pwd": "x",
        }),
    );
    assert_eq!(
        reset(&app, &expired, "yet-another-1234").await.status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn changing_the_password_needs_the_current_one() {
    let app = spawn_app().await;
    let (email, body) = app.register_user().await;
    let (access, _) = tokens(&body);

    let missing = app
        .update_user(&access, json!({ "password": "changed-pass-42" }))
        .await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        errors(missing).await["current_password"][0],
        "Enter your current password to change this."
    );

    let wrong = app
        .update_user(
            &access,
            json!({ "password": "changed-pass-42", "current_password": "not-it-123" }),
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        errors(wrong).await["current_password"][0],
        "Your current password was entered incorrectly."
    );

    let changed = app
        .update_user(
            &access,
            json!({ "password": "changed-pass-42", "current_password": PASSWORD }),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    let changed: Value = changed.json().await.unwrap();
    let (fresh, _) = tokens(&changed);
    assert_eq!(app.current_user(&fresh).await.status(), StatusCode::OK);
    assert_eq!(
        app.current_user(&access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login(&email, "changed-pass-42").await.status(),
        StatusCode::OK
    );
    assert_eq!(app.outbox_events("password-changed").await.len(), 1);
}

#[tokio::test]
async fn five_failures_lock_the_account_for_that_address_only() {
    let app = spawn_with(Options {
        vars: vec![("ACCOUNTS_LOCKOUT_SECONDS", "3".into())],
        ..Options::default()
    })
    .await;
    let (email, _) = app.register_user().await;
    for _ in 0..5 {
        assert_eq!(
            app.login(&email, "wrong-password-1").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // Locked, even with the right password, and told when to come back.
    let locked = app.login(&email, PASSWORD).await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = locked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&retry_after), "{retry_after}");

    // The victim, from another address, is not locked out by the attacker.
    let elsewhere = client(Some("127.0.0.2".parse::<IpAddr>().unwrap()));
    let victim = elsewhere
        .post(app.url("/api/users/login"))
        .json(&json!({ "user": { "email": email, "password": PASSWORD } }))
        .send()
        .await
        .unwrap();
    assert_eq!(victim.status(), StatusCode::OK);

    // The lock expires.
    tokio::time::sleep(Duration::from_secs(retry_after + 1)).await;
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn verification_can_be_mandatory() {
    let app = spawn_with(Options {
        vars: vec![("ACCOUNTS_REQUIRE_VERIFIED_EMAIL", "true".into())],
        ..Options::default()
    })
    .await;
    let email = crate::helpers::unique_email();
    let created = app
        .register(&crate::helpers::registration(&email, PASSWORD))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    assert!(created["user"].get("token").is_none());
    assert!(created["user"].get("refresh_token").is_none());

    let refused = app.login(&email, PASSWORD).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        errors(refused).await["account"][0],
        "Confirm your email address before logging in."
    );

    let link = app.outbox_events("user-registered").await[0]["confirmation_url"]
        .as_str()
        .unwrap()
        .to_string();
    let path = link.trim_start_matches("http://localhost:8080");
    assert_eq!(
        app.client.get(app.url(path)).send().await.unwrap().status(),
        StatusCode::FOUND
    );
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
}

/// Medians of `runs` timings of `a` and `b`, in milliseconds, taken alternately, so a change of
/// load during the run weighs on both sides alike.
async fn paired_medians_ms<A, B, FutA, FutB>(runs: usize, mut a: A, mut b: B) -> (f64, f64)
where
    A: FnMut(usize) -> FutA,
    B: FnMut(usize) -> FutB,
    FutA: std::future::Future<Output = reqwest::Response>,
    FutB: std::future::Future<Output = reqwest::Response>,
{
    let (mut times_a, mut times_b) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for i in 0..runs {
        let started = std::time::Instant::now();
        let response = a(i).await;
        times_a.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(response.status().is_client_error() || response.status().is_success());
        let started = std::time::Instant::now();
        let response = b(i).await;
        times_b.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(response.status().is_client_error() || response.status().is_success());
    }
    times_a.sort_by(f64::total_cmp);
    times_b.sort_by(f64::total_cmp);
    (times_a[runs / 2], times_b[runs / 2])
}

#[tokio::test]
async fn unknown_addresses_cost_about_the_same_as_known_ones() {
    let app = spawn_with(Options {
        vars: vec![("ACCOUNTS_BCRYPT_COST", "8".into())],
        ..Options::default()
    })
    .await;
    let mut known = Vec::new();
    for _ in 0..4 {
        known.push(app.register_user().await.0);
    }
    let runs = 11;
    // Login: spread failures over several accounts and addresses so the lockout never triggers.
    let ghosts: Vec<String> = (0..runs).map(|i| format!("ghost{i}@example.com")).collect();
    let (known_login, unknown_login) = paired_medians_ms(
        runs,
        |i| app.login(&known[i % 4], "wrong-password-1"),
        |i| app.login(&ghosts[i], "wrong-password-1"),
    )
    .await;
    let ratio = unknown_login / known_login;
    assert!(
        (0.5..2.0).contains(&ratio),
        "login: unknown {unknown_login:.1} ms vs known {known_login:.1} ms"
    );

    let app = &app;
    let forgot = move |email: String| async move {
        app.post(
            "/api/users/password/forgot",
            &json!({ "user": { "email": email } }),
        )
        .await
    };
    let mut extra = Vec::new();
    for _ in 0..runs {
        extra.push(app.register_user().await.0);
    }
    let (known_forgot, unknown_forgot) = paired_medians_ms(
        runs,
        |i| forgot(extra[i].clone()),
        |i| forgot(ghosts[i].clone()),
    )
    .await;
    // Both are a few milliseconds of database work with no hashing; allow for scheduler noise.
    assert!(
        (unknown_forgot - known_forgot).abs() < known_forgot.max(unknown_forgot) * 0.75 + 5.0,
        "forgot: unknown {unknown_forgot:.1} ms vs known {known_forgot:.1} ms"
    );
}
