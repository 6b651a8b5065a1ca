//! Seed 002: "log in with either username or email using the same login form". Exactly one
//! identifier; a username matches as registration normalizes it; the throttle counts per account,
//! whichever identifier was typed.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, errors, registration, spawn_app, unique_email};

async fn login_with(app: &TestApp, user: Value) -> reqwest::Response {
    app.post("/api/users/login", &json!({ "user": user })).await
}

async fn register_named(app: &TestApp, username: &str) -> String {
    let email = unique_email();
    let mut body = registration(&email, PASSWORD);
    body["user"]["username"] = json!(username);
    assert_eq!(app.register(&body).await.status(), StatusCode::CREATED);
    email
}

#[tokio::test]
async fn a_user_signs_in_with_the_username_as_registration_normalizes_it() {
    let app = spawn_app().await;
    let email = register_named(&app, "Ada.Lovelace").await;
    // Case and compatibility forms (full-width letters) normalize to the registered name.
    for typed in ["Ada.Lovelace", "ada.lovelace", " ＡＤＡ.lovelace "] {
        let login = login_with(&app, json!({ "username": typed, "password": PASSWORD })).await;
        assert_eq!(login.status(), StatusCode::OK, "{typed}");
        let body: Value = login.json().await.unwrap();
        assert_eq!(body["user"]["email"], email.as_str());
        assert!(body["user"]["token"].is_string());
    }
}

#[tokio::test]
async fn a_wrong_username_or_password_is_401_in_the_username_words() {
    let app = spawn_app().await;
    register_named(&app, "grace").await;
    for user in [
        json!({ "username": "grace", "password": "not-the-one" }),
        json!({ "username": "nobody-here", "password": PASSWORD }),
    ] {
        let login = login_with(&app, user.clone()).await;
        assert_eq!(login.status(), StatusCode::UNAUTHORIZED, "{user}");
        assert_eq!(
            errors(login).await["credentials"][0],
            "Incorrect username or password."
        );
    }
}

#[tokio::test]
async fn both_identifiers_or_neither_is_400() {
    let app = spawn_app().await;
    let email = register_named(&app, "hopper").await;
    let both = login_with(
        &app,
        json!({ "email": email, "username": "hopper", "password": PASSWORD }),
    )
    .await;
    assert_eq!(both.status(), StatusCode::BAD_REQUEST);
    assert!(errors(both).await["username"][0].is_string());
    let neither = login_with(&app, json!({ "password": PASSWORD })).await;
    assert_eq!(neither.status(), StatusCode::BAD_REQUEST);
    assert_eq!(errors(neither).await["email"][0], "This field is required.");
    // A wrong type is a malformed body; a name registration would refuse has no account.
    let typed = login_with(&app, json!({ "username": 42, "password": PASSWORD })).await;
    assert_eq!(typed.status(), StatusCode::BAD_REQUEST);
    for hostile in ["a\u{0}b".to_string(), "x".repeat(10_000)] {
        let response = login_with(&app, json!({ "username": hostile, "password": PASSWORD })).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            errors(response).await["credentials"][0],
            "Incorrect username or password."
        );
    }
}

#[tokio::test]
async fn alternating_email_and_username_guesses_share_one_budget() {
    let app = spawn_app().await;
    let email = register_named(&app, "lamarr").await;
    for n in 0..5 {
        let user = match n % 2 {
            0 => json!({ "email": email, "password": "wrong-guess-1" }),
            _ => json!({ "username": "lamarr", "password": "wrong-guess-1" }),
        };
        let guess = login_with(&app, user).await;
        assert_eq!(guess.status(), StatusCode::UNAUTHORIZED, "guess {n}");
    }
    // Five failures lock this client out of the account, whichever identifier comes next.
    for user in [
        json!({ "username": "lamarr", "password": PASSWORD }),
        json!({ "email": email, "password": PASSWORD }),
    ] {
        let locked = login_with(&app, user).await;
        assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    }
}
