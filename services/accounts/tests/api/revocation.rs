//! Revocation is immediate and race-free: whatever a refresh in flight obtains while a logout-all,
//! a password change, a reset, a sign-in reject or an email revert commits, nothing works
//! afterwards, and no race answers 5xx.

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, spawn_app, token_pair};

const TRIALS: usize = 6;
const CHAINS: usize = 4;

/// Refreshes from `token` until it stops working, returning every pair obtained. Panics on a 5xx.
async fn refresh_chain(app: &TestApp, mut token: String) -> Vec<(String, String)> {
    let mut obtained = Vec::new();
    for _ in 0..12 {
        let response = app.refresh(&token).await;
        let status = response.status();
        assert!(!status.is_server_error(), "refresh answered {status}");
        if status != StatusCode::OK {
            break;
        }
        let pair = token_pair(&response.json().await.expect("json"));
        token = pair.1.clone();
        obtained.push(pair);
    }
    obtained
}

/// A user with `CHAINS` sessions: its email and each session's (access, refresh) pair.
async fn user_with_sessions(app: &TestApp) -> (String, Vec<(String, String)>) {
    let (email, body) = app.register_user().await;
    let mut pairs = vec![token_pair(&body)];
    for i in 1..CHAINS {
        pairs.push(app.login_as(&email, &format!("agent-{i}")).await);
    }
    (email, pairs)
}

/// Runs the chains and `revoke` at once, then proves that no pair a chain obtained still works.
async fn race(app: &TestApp, pairs: &[(String, String)], revoke: impl Future<Output = ()>) {
    let chains = join_all(
        pairs
            .iter()
            .map(|(_, refresh)| refresh_chain(app, refresh.clone())),
    );
    let (obtained, ()) = futures_util::join!(chains, revoke);
    let everything: Vec<_> = pairs
        .iter()
        .cloned()
        .chain(obtained.into_iter().flatten())
        .collect();
    for (access, refresh) in everything {
        assert_eq!(
            app.current_user(&access).await.status(),
            StatusCode::UNAUTHORIZED,
            "an access token survived the revocation"
        );
        assert_eq!(
            app.refresh(&refresh).await.status(),
            StatusCode::UNAUTHORIZED,
            "a refresh token survived the revocation"
        );
    }
}

async fn pause(trial: usize) {
    // Land the revocation at a different point of the chains in each trial.
    tokio::time::sleep(Duration::from_millis(3 * trial as u64)).await;
}

#[tokio::test]
async fn refresh_racing_logout_all_never_leaves_a_working_token() {
    let app = spawn_app().await;
    for trial in 0..TRIALS {
        let (_, pairs) = user_with_sessions(&app).await;
        let access = pairs[0].0.clone();
        race(&app, &pairs, async {
            pause(trial).await;
            let out = app
                .post_authed("/api/users/logout", &access, &json!({ "all": true }))
                .await;
            assert_eq!(out.status(), StatusCode::NO_CONTENT);
        })
        .await;
    }
}

#[tokio::test]
async fn refresh_racing_a_password_change_never_leaves_a_working_token() {
    let app = spawn_app().await;
    for trial in 0..TRIALS {
        let (_, pairs) = user_with_sessions(&app).await;
        let access = pairs[0].0.clone();
        race(&app, &pairs, async {
            pause(trial).await;
            let changed = app
                .update_user(
                    &access,
                    json!({ "password": "brand-new-pass-77", "current_password": PASSWORD }),
                )
                .await;
            assert_eq!(changed.status(), StatusCode::OK);
        })
        .await;
    }
}

#[tokio::test]
async fn refresh_racing_a_password_reset_never_leaves_a_working_token_nor_a_5xx() {
    let app = spawn_app().await;
    for trial in 0..TRIALS {
        let (email, pairs) = user_with_sessions(&app).await;
        let forgot = app
            .post(
                "/api/users/password/forgot",
                &json!({ "user": { "email": email } }),
            )
            .await;
        assert_eq!(forgot.status(), StatusCode::ACCEPTED);
        let token = app
            .link_token("password-reset-requested", "reset_url")
            .await;
        race(&app, &pairs, async {
            pause(trial).await;
            let reset = app
                .post(
                    "/api/users/password/reset",
                    &json!({ "token": token, "password": "brand-new-pass-77",
                             "confirm_password": "brand-new-pass-77" }),
                )
                .await;
            assert_eq!(reset.status(), StatusCode::NO_CONTENT);
        })
        .await;
        assert_eq!(
            app.login(&email, "brand-new-pass-77").await.status(),
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn refresh_racing_a_sign_in_reject_never_leaves_a_working_token() {
    const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
    let app = spawn_app().await;
    for trial in 0..TRIALS {
        let (email, mut pairs) = user_with_sessions(&app).await;
        // A sign-in from a new device: its notice's link ends every session, not only its own.
        pairs.push(app.login_as(&email, CHROME).await);
        let token = app.link_token("new-sign-in", "reject_url").await;
        race(&app, &pairs, async {
            pause(trial).await;
            let rejected = app
                .post("/api/users/sign-in/reject", &json!({ "token": token }))
                .await;
            assert_eq!(rejected.status(), StatusCode::NO_CONTENT);
        })
        .await;
        assert_eq!(
            app.login(&email, PASSWORD).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test]
async fn refresh_racing_an_email_revert_never_leaves_a_working_token() {
    let app = spawn_app().await;
    for trial in 0..TRIALS {
        let (email, pairs) = user_with_sessions(&app).await;
        // The registration's session is fresh: it changes the address without the password.
        let changed = app
            .update_user(
                &pairs[0].0,
                json!({ "email": crate::helpers::unique_email() }),
            )
            .await;
        assert_eq!(changed.status(), StatusCode::OK);
        let token = app.link_token("email-changed", "revert_url").await;
        race(&app, &pairs, async {
            pause(trial).await;
            let reverted = app
                .post("/api/users/email/revert", &json!({ "token": token }))
                .await;
            assert_eq!(reverted.status(), StatusCode::NO_CONTENT);
        })
        .await;
        assert_eq!(
            app.login(&email, PASSWORD).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test]
async fn logging_out_one_session_stops_its_access_token_at_once() {
    let app = spawn_app().await;
    let (_, pairs) = user_with_sessions(&app).await;
    let (access_0, refresh_0) = &pairs[0];
    let (access_1, _) = &pairs[1];

    let out = app
        .post_authed("/api/users/logout", access_0, &json!({}))
        .await;
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.current_user(access_0).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(refresh_0).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Another session of the same user is untouched.
    assert_eq!(app.current_user(access_1).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_token_without_a_session_or_for_an_ended_one_is_refused() {
    let app = spawn_app().await;
    let (_, body) = app.register_user().await;
    let (access, _) = token_pair(&body);
    let mut claims: Value = crate::helpers::claims_of(&access);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(app.kid().await);
    assert_eq!(
        app.current_user(&app.sign(header.clone(), &claims))
            .await
            .status(),
        StatusCode::OK
    );
    claims.as_object_mut().unwrap().remove("sid");
    assert_eq!(
        app.current_user(&app.sign(header.clone(), &claims))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    claims["sid"] = json!(uuid::Uuid::now_v7());
    assert_eq!(
        app.current_user(&app.sign(header, &claims)).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_remembered_token_is_refused_the_moment_its_session_ends() {
    let app = spawn_app().await;
    let (_, body) = app.register_user().await;
    let (access, _) = token_pair(&body);
    // The first request verifies the signature and remembers the token; the second is a repeat.
    for _ in 0..2 {
        assert_eq!(app.current_user(&access).await.status(), StatusCode::OK);
    }
    assert_eq!(
        app.post_authed("/api/users/logout", &access, &json!({}))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.current_user(&access).await.status(),
        StatusCode::UNAUTHORIZED,
        "a remembered signature must not outlive the session"
    );
}

#[tokio::test]
async fn a_remembered_token_is_refused_the_moment_the_user_logs_out_everywhere() {
    let app = spawn_app().await;
    let (email, body) = app.register_user().await;
    let (first, _) = token_pair(&body);
    let (second, _) = app.login_as(&email, "agent-2").await;
    for token in [&first, &second, &first, &second] {
        assert_eq!(app.current_user(token).await.status(), StatusCode::OK);
    }
    assert_eq!(
        app.post_authed("/api/users/logout", &second, &json!({ "all": true }))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    for token in [&first, &second] {
        assert_eq!(
            app.current_user(token).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
}
