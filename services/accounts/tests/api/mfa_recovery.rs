//! Getting an account with a second factor back, and taking it from an intruder: an operator's
//! reset (API and CLI), a sign-in reject or an email revert removing what the intruder added,
//! challenges voided by the account's state, and the key that seals the secrets.

use std::process::{Command, Stdio};

use accounts::{config::Settings, startup::Application};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::admin::{call, user_with_role};
use crate::helpers::*;
use crate::mfa::mfa_owner;

/// A verified user with TOTP on: (email, id, base32 secret, the confirming session's aal2 token),
/// and the owner to draw later codes from (`owner.code(1)`, `owner.code(2)`).
async fn user_with_totp(app: &TestApp) -> (String, String, String, String) {
    let owner = mfa_owner(app).await;
    (owner.email, owner.id, owner.secret, owner.access)
}

async fn password_login(app: &TestApp, email: &str) -> reqwest::Response {
    app.login(email, PASSWORD).await
}

async fn challenge_of(app: &TestApp, email: &str) -> String {
    let response = password_login(app, email).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["mfa"]["challenge"]
        .as_str()
        .expect("an mfa challenge")
        .to_string()
}

async fn finish(app: &TestApp, challenge: &str, code: &str) -> reqwest::Response {
    app.post(
        "/api/users/login/mfa",
        &json!({ "challenge": challenge, "code": code }),
    )
    .await
}

async fn mfa_status(app: &TestApp, token: &str) -> Value {
    app.send_authed(Method::GET, "/api/user/mfa", token, None)
        .await
        .json::<Value>()
        .await
        .unwrap()["mfa"]
        .clone()
}

/// Sets a new password through the newest mailed reset link of `kind` (its `url_field`).
async fn reset_through(app: &TestApp, kind: &str, url_field: &str, password: &str) {
    let token = app.link_token(kind, url_field).await;
    let reset = app
        .post(
            "/api/users/password/reset",
            &json!({ "token": token, "password": password, "confirm_password": password }),
        )
        .await;
    assert_eq!(reset.status(), StatusCode::NO_CONTENT, "reset via {kind}");
}

#[tokio::test]
async fn an_operators_reset_leaves_no_factor_no_password_and_mails_one_link_to_the_address() {
    let app = spawn_app().await;
    let (email, id, _, token) = user_with_totp(&app).await;
    // Support (no users.write) may not; an admin may.
    let (_, support, _) = user_with_role(&app, Some(("support", &[]))).await;
    let refused = call(
        &app,
        "DELETE",
        &format!("/api/admin/users/{id}/mfa"),
        Some(&support),
        None,
    )
    .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let (_, admin, _) = user_with_role(&app, Some(("admin", &[]))).await;
    let reset = call(
        &app,
        "DELETE",
        &format!("/api/admin/users/{id}/mfa"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);

    // The caller on the phone knows the password: it no longer works, and every session ended.
    assert_eq!(
        password_login(&app, &email).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.current_user(&token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let mails = app.outbox_events("mfa-disabled").await;
    assert_eq!(mails.len(), 1, "one mail: {mails:?}");
    assert_eq!(mails[0]["by_operator"], true);
    assert_eq!(mails[0]["email"], email.as_str());
    assert!(
        app.outbox_events("password-reset-requested")
            .await
            .is_empty()
    );

    // The mailbox's owner sets a password and signs in with it alone.
    reset_through(&app, "mfa-disabled", "reset_url", "n3w-passw0rd-x").await;
    let login = app.login(&email, "n3w-passw0rd-x").await;
    assert_eq!(login.status(), StatusCode::OK);
    let body: Value = login.json().await.unwrap();
    assert!(body["user"]["token"].is_string(), "{body}");
    let status = mfa_status(&app, body["user"]["token"].as_str().unwrap()).await;
    assert_eq!(
        status,
        json!({ "totp": false, "passkeys": 0, "recovery_codes_left": 0 })
    );
    let audit: i64 = count(
        &app,
        "SELECT count(*) AS n FROM audit_log WHERE action = 'mfa.reset'",
    )
    .await;
    assert_eq!(audit, 1);
}

#[tokio::test]
async fn an_operator_cannot_reset_the_second_factor_of_a_superuser() {
    let app = spawn_app().await;
    let (_, id, secret, _) = user_with_totp(&app).await;
    sql(
        &app,
        &format!("UPDATE users SET is_superuser = true WHERE id = '{id}'"),
    )
    .await;
    let (_, admin, _) = user_with_role(&app, Some(("admin", &[]))).await;
    let refused = call(
        &app,
        "DELETE",
        &format!("/api/admin/users/{id}/mfa"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let left: i64 = count(&app, &format!("SELECT count(*) AS n FROM totp_authenticators WHERE user_id = '{id}' AND secret IS NOT NULL")).await;
    assert_eq!(left, 1, "the superuser's TOTP ({secret}) is still there");
}

#[tokio::test]
async fn the_cli_reset_signs_a_link_the_service_accepts() {
    let app = spawn_app().await;
    let (email, _, _, _) = user_with_totp(&app).await;
    let output = Command::new(env!("CARGO_BIN_EXE_accounts"))
        .args(["users", "reset-mfa", &email])
        .env("ACCOUNTS_DATABASE_URL", app.db.url())
        .env("ACCOUNTS_JWT_KEY_FILE", &app.key_file)
        .env(
            "ACCOUNTS_ENCRYPTION_KEY_FILE",
            app.key_file.with_extension("key"),
        )
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .output()
        .expect("the accounts binary");
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains(&email), "{printed}");
    assert!(
        !printed.contains("token="),
        "the link is not printed: {printed}"
    );
    assert_eq!(
        password_login(&app, &email).await.status(),
        StatusCode::UNAUTHORIZED
    );
    reset_through(&app, "mfa-disabled", "reset_url", "n3w-passw0rd-y").await;
    assert_eq!(
        app.login(&email, "n3w-passw0rd-y").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_challenge_dies_with_a_deactivation_an_email_change_or_an_operators_reset() {
    let app = spawn_app().await;
    let (email, id, secret, token) = user_with_totp(&app).await;
    let (_, admin, _) = user_with_role(&app, Some(("admin", &[]))).await;
    let challenge = challenge_of(&app, &email).await;
    let path = format!("/api/admin/users/{id}/deactivate");
    assert_eq!(
        call(&app, "POST", &path, Some(&admin), None).await.status(),
        StatusCode::NO_CONTENT
    );
    let path = format!("/api/admin/users/{id}/activate");
    assert_eq!(
        call(&app, "POST", &path, Some(&admin), None).await.status(),
        StatusCode::NO_CONTENT
    );
    let late = finish(&app, &challenge, &totp_code(&secret, 0)).await;
    assert_eq!(late.status(), StatusCode::UNAUTHORIZED);
    assert!(errors(late).await["challenge"].is_array());

    // The deactivation ended every session; the owner signs in again, with both factors.
    assert_eq!(
        app.current_user(&token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let challenge = challenge_of(&app, &email).await;
    let signed_in = finish(&app, &challenge, &totp_code(&secret, 1)).await;
    assert_eq!(signed_in.status(), StatusCode::OK);
    let token = token_pair(&signed_in.json().await.unwrap()).0;
    assert_eq!(claims_of(&token)["aal"], "aal2");

    // A new address moves the email epoch: a challenge taken before it is void.
    let challenge = challenge_of(&app, &email).await;
    let changed = app
        .update_user(&token, json!({ "email": unique_email() }))
        .await;
    assert_eq!(
        changed.status(),
        StatusCode::OK,
        "a fresh aal2 session changes the email"
    );
    let late = finish(&app, &challenge, &totp_code(&secret, 1)).await;
    assert_eq!(late.status(), StatusCode::UNAUTHORIZED);
    assert!(errors(late).await["challenge"].is_array());
}

#[tokio::test]
async fn rejecting_the_sign_in_that_turned_mfa_on_removes_the_intruders_authenticator() {
    let app = spawn_app().await;
    // The intruder, with the password, signs in and turns TOTP on: the owner is mailed.
    let (email, _, _, _) = user_with_totp(&app).await;
    let enabled = app.outbox_events("mfa-enabled").await;
    assert_eq!(enabled.len(), 1);
    assert_eq!(enabled[0]["method"], "totp");
    let reject = token_of(enabled[0]["reject_url"].as_str().unwrap());
    let rejected = app
        .post("/api/users/sign-in/reject", &json!({ "token": reject }))
        .await;
    assert_eq!(rejected.status(), StatusCode::NO_CONTENT);
    let left: i64 = count(&app, "SELECT count(*) AS n FROM totp_authenticators").await;
    assert_eq!(left, 0, "the intruder's authenticator is gone");
    let codes: i64 = count(&app, "SELECT count(*) AS n FROM recovery_codes").await;
    assert_eq!(codes, 0, "and the recovery codes only the intruder saw");
    // The owner resets the password from the mailed link and signs in with it alone.
    reset_through(
        &app,
        "password-reset-requested",
        "reset_url",
        "0wner-again-9",
    )
    .await;
    let login: Value = app
        .login(&email, "0wner-again-9")
        .await
        .json()
        .await
        .unwrap();
    assert!(login["user"]["token"].is_string(), "{login}");
}

/// When the intruder got in is unknown to a revert (the email change may come long after an
/// authenticator was added), so it removes every second factor: one the intruder added before
/// changing the address would otherwise lock the owner out after the reset. The owner, back in
/// by the mailed reset, enrols again.
#[tokio::test]
async fn a_revert_removes_every_second_factor_so_none_of_the_intruders_survives() {
    let app = spawn_app().await;
    // The intruder, with the password, turns TOTP on and then moves the address.
    let (email, id, _, token) = user_with_totp(&app).await;
    let changed = app
        .update_user(&token, json!({ "email": unique_email() }))
        .await;
    assert_eq!(
        changed.status(),
        StatusCode::OK,
        "a fresh aal2 session changes the email"
    );
    let revert = app.link_token("email-changed", "revert_url").await;
    let reverted = app
        .post("/api/users/email/revert", &json!({ "token": revert }))
        .await;
    assert_eq!(reverted.status(), StatusCode::NO_CONTENT);
    let left: i64 = count(
        &app,
        &format!("SELECT count(*) AS n FROM totp_authenticators WHERE user_id = '{id}'"),
    )
    .await;
    assert_eq!(left, 0, "the intruder's authenticator is gone");
    assert_eq!(app.outbox_events("mfa-disabled").await.len(), 1);
    // The owner's reset link is the way back in, with the password alone.
    reset_through(
        &app,
        "password-reset-requested",
        "reset_url",
        "0wner-again-9",
    )
    .await;
    let login: Value = app
        .login(&email, "0wner-again-9")
        .await
        .json()
        .await
        .unwrap();
    assert!(login["user"]["token"].is_string(), "{login}");
}

#[tokio::test]
async fn a_wrong_encryption_key_file_fails_startup_with_a_clear_message() {
    let app = spawn_app().await;
    let _ = user_with_totp(&app).await;
    let dir = TempDir(std::env::temp_dir().join(format!("wrong-key-{}", uuid::Uuid::new_v4())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let wrong = dir.0.join("other.key");
    std::fs::write(&wrong, [7u8; 32]).unwrap();
    let vars = [
        ("ACCOUNTS_DATABASE_URL", app.db.url().to_string()),
        ("AMQP_URL", testkit::unreachable_amqp_url()),
        ("ACCOUNTS_ADDR", "127.0.0.1:0".to_string()),
        ("ACCOUNTS_BCRYPT_COST", "4".to_string()),
    ];
    let mut settings = Settings::from_lookup(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    })
    .unwrap();
    settings.jwt_key_file = app.key_file.clone();
    settings.jwt_key_is_default = true;
    settings.encryption_key_file = wrong;
    settings.encryption_key_is_default = false;
    let error = match Application::build(settings).await {
        Ok(_) => panic!("a replica with another encryption key started"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("ACCOUNTS_ENCRYPTION_KEY_FILE") && error.contains("not the key"),
        "{error}"
    );
}
