//! Account takeover from a stolen access token: the email cannot move without the password unless
//! the session is fresh, the old address is told and can undo the change.

use diesel_async::RunQueryDsl;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, errors, spawn_app, token_pair, unique_email};

const REAUTHENTICATE: &str = "Enter your current password to change this.";

/// Makes every session of the app's users an hour old, as a token stolen later would be.
async fn age_sessions(app: &TestApp) {
    diesel::sql_query("UPDATE sessions SET auth_time = now() - interval '1 hour'")
        .execute(&mut app.conn().await)
        .await
        .expect("aged");
}

/// An access token of a session whose password was entered an hour ago (refreshed since).
async fn stale_session(app: &TestApp) -> (String, String) {
    let (email, body) = app.register_user().await;
    let (_, refresh) = token_pair(&body);
    age_sessions(app).await;
    let refreshed = app.refresh(&refresh).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let (access, _) = token_pair(&refreshed.json().await.unwrap());
    (email, access)
}

#[tokio::test]
async fn a_stolen_access_token_cannot_change_the_email_without_the_password() {
    let app = spawn_app().await;
    // Refreshing an hour-old session does not make it fresh.
    let (email, access) = stale_session(&app).await;
    let attacker = unique_email();

    let bare = app.update_user(&access, json!({ "email": attacker })).await;
    assert_eq!(bare.status(), StatusCode::BAD_REQUEST);
    assert_eq!(errors(bare).await["current_password"][0], REAUTHENTICATE);
    let me: Value = app.current_user(&access).await.json().await.unwrap();
    assert_eq!(me["user"]["email"], email.as_str());

    let wrong = app
        .update_user(
            &access,
            json!({ "email": attacker, "current_password": "guess-1234" }),
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    assert!(app.outbox_events("email-changed").await.is_empty());

    let right = app
        .update_user(
            &access,
            json!({ "email": attacker, "current_password": PASSWORD }),
        )
        .await;
    assert_eq!(right.status(), StatusCode::OK);
}

#[tokio::test]
async fn registering_then_changing_the_email_at_once_needs_no_password() {
    let app = spawn_app().await;
    let (_, body) = app.register_user().await;
    let (access, _) = token_pair(&body);
    let new = unique_email();
    let changed = app.update_user(&access, json!({ "email": new })).await;
    assert_eq!(changed.status(), StatusCode::OK);
    let changed: Value = changed.json().await.unwrap();
    assert_eq!(changed["user"]["email"], new.as_str());
    assert_eq!(changed["user"]["verified"], false);
    // The token still works: an email change is not a revocation.
    assert_eq!(app.current_user(&access).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn wrong_current_passwords_count_as_failed_logins() {
    let app = spawn_app().await;
    let (email, access) = stale_session(&app).await;
    for _ in 0..5 {
        let wrong = app
            .update_user(
                &access,
                json!({ "email": unique_email(), "current_password": "guess-1234" }),
            )
            .await;
        assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    }
    // Five wrong guesses through the profile lock this client out of the account, as five logins would.
    assert_eq!(
        app.login(&email, PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let sixth = app
        .update_user(
            &access,
            json!({ "email": unique_email(), "current_password": PASSWORD }),
        )
        .await;
    assert_eq!(sixth.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn an_email_change_mails_the_old_address_a_link_that_undoes_it() {
    let app = spawn_app().await;
    let (old, body) = app.register_user().await;
    let (access, refresh) = token_pair(&body);
    let new = unique_email();
    let changed = app.update_user(&access, json!({ "email": new })).await;
    assert_eq!(changed.status(), StatusCode::OK);

    let notices = app.outbox_events("email-changed").await;
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0]["email"], old.as_str());
    assert_eq!(notices[0]["new_email"], new.as_str());
    let confirmations = app.outbox_events("email-confirmation-requested").await;
    assert_eq!(confirmations.last().unwrap()["email"], new.as_str());
    let token = app.link_token("email-changed", "revert_url").await;

    // The mailed link opens a page; a scanner's GET consumes nothing.
    for _ in 0..2 {
        let page = app
            .client
            .get(app.url(&format!("/account/revert-email?token={token}")))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK);
    }
    let reverted = app
        .post("/api/users/email/revert", &json!({ "token": token }))
        .await;
    assert_eq!(reverted.status(), StatusCode::NO_CONTENT);

    // Whoever changed it is out; the old address is back, verified, and gets a reset link.
    assert_eq!(
        app.current_user(&access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // The password whoever changed the email knew stops working; the reset mailed to the
    // restored address is the way back in.
    assert_eq!(
        app.login(&old, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let resets = app.outbox_events("password-reset-requested").await;
    assert_eq!(resets.len(), 1);
    assert_eq!(resets[0]["email"], old.as_str());
    let reset = app
        .post(
            "/api/users/password/reset",
            &json!({
                "token": app.link_token("password-reset-requested", "reset_url").await,
                "password": "back-4gain-here",
            }),
        )
        .await;
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    let login = app.login(&old, "back-4gain-here").await;
    assert_eq!(login.status(), StatusCode::OK);
    let me: Value = login.json().await.unwrap();
    assert_eq!(me["user"]["email"], old.as_str());
    assert_eq!(me["user"]["verified"], true);

    let again = app
        .post("/api/users/email/revert", &json!({ "token": token }))
        .await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert!(errors(again).await["token"][0].is_string());
}

#[tokio::test]
async fn a_revert_fails_cleanly_when_the_old_address_was_taken_outside_the_api() {
    let app = spawn_app().await;
    let (old, body) = app.register_user().await;
    let (access, _) = token_pair(&body);
    let changed = app
        .update_user(&access, json!({ "email": unique_email() }))
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    let token = app.link_token("email-changed", "revert_url").await;
    // The API keeps the address reserved (see recovery.rs); an operator's direct write does not.
    let (squatter, _) = app.register_user().await;
    diesel::sql_query("UPDATE users SET email = $1 WHERE email = $2")
        .bind::<diesel::sql_types::Text, _>(&old)
        .bind::<diesel::sql_types::Text, _>(&squatter)
        .execute(&mut app.conn().await)
        .await
        .expect("taken");

    let reverted = app
        .post("/api/users/email/revert", &json!({ "token": token }))
        .await;
    assert_eq!(reverted.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        errors(reverted).await["token"][0],
        "The previous address now belongs to another account."
    );
    assert_eq!(app.current_user(&access).await.status(), StatusCode::OK);

    for hostile in [
        json!({}),
        json!({ "token": "x.y.z" }),
        json!({ "token": 42 }),
    ] {
        let response = app.post("/api/users/email/revert", &hostile).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{hostile}");
    }
}
