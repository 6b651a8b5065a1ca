use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, errors, registration, spawn_app, unique_email};

#[tokio::test]
async fn registration_succeeds_unverified_with_tokens() {
    let app = spawn_app().await;
    let email = unique_email();
    let response = app.register(&registration(&email, PASSWORD)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    let user = &body["user"];
    assert_eq!(user["email"], email);
    assert_eq!(user["verified"], false);
    assert_eq!(user["username"], Value::Null);
    assert_eq!(user["image"], Value::Null);
    assert_eq!(user["first_name"], "Tutu");
    assert!(user["token"].as_str().unwrap().split('.').count() == 3);
    assert!(user["refresh_token"].as_str().unwrap().len() >= 40);
    assert!(user["id"].as_str().unwrap().len() == 36);
    assert_eq!(user["has_password"], true);
    let text = body.to_string().replace("\"has_password\"", "");
    assert!(!text.contains("password"), "{text}");
    assert!(!text.contains("$2b$"), "{text}");

    // The seed's flow: the token identifies the new user.
    let me = app.current_user(user["token"].as_str().unwrap()).await;
    assert_eq!(me.status(), StatusCode::OK);
}

/// The seed's failure table (001), extended with the design's other validators.
#[tokio::test]
async fn registration_failures_carry_the_seed_messages() {
    let app = spawn_app().await;
    let existing = unique_email();
    app.register(&registration(&existing, PASSWORD)).await;
    let long71 = format!("a1{}", "b".repeat(69));
    let long72 = format!("{long71}c");
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            registration("not-an-email", "Password123"),
            "email",
            "Enter a valid email address.",
        ),
        (
            registration(&existing, "Password123"),
            "email",
            "user with this email already exists.",
        ),
        (
            registration("valid@email.com", "short"),
            "password",
            "This password is too short. It must contain at least 8 characters.",
        ),
        (
            registration("valid@email.com", "NoNumbers"),
            "password",
            "password must be alphanumeric",
        ),
        (
            registration("valid@email.com", "1234567890123"),
            "password",
            "password must be alphanumeric",
        ),
        (
            json!({"user": {"email": "valid@email.com", "password": "NoNumbers5", "confirm_password": "NoNumbers3"}}),
            "confirm_password",
            "passwords do not match",
        ),
        (
            registration("valid@email.com", "Password123"),
            "password",
            "This password is too common.",
        ),
        (
            registration("marvellous.writer@email.com", "marvellous1"),
            "password",
            "The password is too similar to the email.",
        ),
        (
            json!({"user": {"email": "u@email.com", "username": "quixotic99", "password": "quixotic999"}}),
            "password",
            "The password is too similar to the username.",
        ),
        (
            json!({"user": {"password": PASSWORD}}),
            "email",
            "This field is required.",
        ),
        (
            json!({"user": {"email": "valid@email.com"}}),
            "password",
            "This field is required.",
        ),
        (
            json!({"user": {"email": "", "password": ""}}),
            "email",
            "This field is required.",
        ),
        (
            json!({"email": "valid@email.com", "password": PASSWORD}),
            "user",
            "This field is required.",
        ),
        (
            registration("valid@email.com", &long72),
            "password",
            "This password is too long. It must contain at most 71 bytes (bcrypt reads no more).",
        ),
        (
            json!({"user": {"email": "valid@email.com", "password": PASSWORD, "username": "<b>bold</b>"}}),
            "username",
            "Enter a valid username. This value may contain only letters, numbers, and @/./+/-/_ characters.",
        ),
    ];
    for (body, field, message) in cases {
        let response = app.register(&body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let errors = errors(response).await;
        let messages = errors[field]
            .as_array()
            .unwrap_or_else(|| panic!("{body} → {errors}"));
        assert!(messages.contains(&json!(message)), "{body} → {errors}");
    }
    // Nothing was created by the failures.
    let mut conn = app.conn().await;
    assert_eq!(
        testkit::count(&mut conn, "SELECT count(*) AS n FROM users")
            .await
            .unwrap(),
        1
    );

    // 71 bytes is the usable maximum, and it works for login too.
    let email = unique_email();
    let response = app.register(&registration(&email, &long71)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(app.login(&email, &long71).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn emails_and_usernames_are_unique_case_insensitively() {
    let app = spawn_app().await;
    let email = unique_email();
    let mut body = registration(&email, PASSWORD);
    body["user"]["username"] = json!("Ada");
    assert_eq!(app.register(&body).await.status(), StatusCode::CREATED);

    let mut shouting = registration(&email.to_uppercase(), PASSWORD);
    shouting["user"]["username"] = json!("someone");
    let response = app.register(&shouting).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        errors(response).await["email"][0],
        "user with this email already exists."
    );

    let mut same_name = registration(&unique_email(), PASSWORD);
    same_name["user"]["username"] = json!("ADA");
    let response = app.register(&same_name).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        errors(response).await["username"][0],
        "user with this username already exists."
    );
}

#[tokio::test]
async fn concurrent_duplicate_registrations_create_one_user() {
    let app = spawn_app().await;
    let email = unique_email();
    let body = registration(&email, PASSWORD);
    let attempts = (0..6).map(|_| app.register(&body));
    let statuses: Vec<StatusCode> = futures_util::future::join_all(attempts)
        .await
        .iter()
        .map(|r| r.status())
        .collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::BAD_REQUEST)
    );
    let mut conn = app.conn().await;
    assert_eq!(
        testkit::count(&mut conn, "SELECT count(*) AS n FROM users")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        testkit::count(&mut conn, "SELECT count(*) AS n FROM outbox")
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn unicode_and_punycode_spellings_of_a_domain_are_one_account() {
    let app = spawn_app().await;
    let created = app.register(&registration("U@Bücher.DE", PASSWORD)).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: serde_json::Value = created.json().await.unwrap();
    assert_eq!(created["user"]["email"], "u@xn--bcher-kva.de");
    for spelling in ["u@xn--bcher-kva.de", "u@BÜCHER.de", "u@ｂüｃｈｅｒ。de"] {
        let response = app.register(&registration(spelling, PASSWORD)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{spelling}");
        assert_eq!(
            errors(response).await["email"][0],
            "user with this email already exists.",
            "{spelling}"
        );
        assert_eq!(
            app.login(spelling, PASSWORD).await.status(),
            StatusCode::OK,
            "{spelling}"
        );
    }
}

#[tokio::test]
async fn confusable_usernames_collide_even_when_registered_in_parallel() {
    let app = spawn_app().await;
    let mut body = registration(&unique_email(), PASSWORD);
    body["user"]["username"] = json!("admin");
    assert_eq!(app.register(&body).await.status(), StatusCode::CREATED);
    // Cyrillic а, Cyrillic А with Latin capitals, full-width letters, Latin capitals.
    for lookalike in ["\u{430}dmin", "\u{410}DMIN", "ａｄｍｉｎ", "ADMIN"] {
        let mut body = registration(&unique_email(), PASSWORD);
        body["user"]["username"] = json!(lookalike);
        let response = app.register(&body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{lookalike}");
        assert_eq!(
            errors(response).await["username"][0],
            "user with this username already exists.",
            "{lookalike}"
        );
    }
    // A profile change cannot take a lookalike either.
    let (_, other) = app.register_user().await;
    let token = other["user"]["token"].as_str().unwrap();
    let response = app
        .update_user(token, json!({ "username": "\u{430}dm\u{456}n" }))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        errors(response).await["username"][0],
        "user with this username already exists."
    );

    // Racing lookalikes of a fresh name: exactly one wins, the rest get the message, never a 500.
    for trial in 0..6 {
        let base = format!("pal{trial}");
        let variants = [
            base.clone(),
            base.replace('a', "\u{430}"),
            base.to_uppercase(),
            base.replace('p', "\u{440}"),
            base.replace('l', "\u{217c}"),
            base.chars()
                .map(|c| char::from_u32(c as u32 + 0xfee0).unwrap_or(c))
                .collect(),
        ];
        let attempts = variants.iter().map(|name| {
            let mut body = registration(&unique_email(), PASSWORD);
            body["user"]["username"] = json!(name);
            let app = &app;
            async move { app.register(&body).await.status() }
        });
        let statuses = futures_util::future::join_all(attempts).await;
        assert_eq!(
            statuses
                .iter()
                .filter(|s| **s == StatusCode::CREATED)
                .count(),
            1,
            "trial {trial}: {statuses:?}"
        );
        assert!(
            statuses
                .iter()
                .all(|s| *s == StatusCode::CREATED || *s == StatusCode::BAD_REQUEST),
            "trial {trial}: {statuses:?}"
        );
    }
}
