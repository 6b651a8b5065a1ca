use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{errors, spawn_app};

#[tokio::test]
async fn malformed_bodies_get_the_error_envelope() {
    let app = spawn_app().await;
    let raw = |body: &'static str| {
        app.client
            .post(app.url("/api/users"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    let cases = [
        ("{not json", "body"),
        ("", "body"),
        ("[]", "body"),
        (r#"{"user": {"email": 5, "password": ["x"]}}"#, "body"),
        (r#"{"user": "a string"}"#, "body"),
        (r#"{"user": null}"#, "user"),
        (
            r#"{"user": {"email": "a@b.co", "password": "tutad1234", "terms_accepted": "yes"}}"#,
            "body",
        ),
    ];
    for (body, field) in cases {
        let response = raw(body).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let errors = errors(response).await;
        assert!(errors[field][0].is_string(), "{body} → {errors}");
    }
    // The password never comes back in an error, even when it has the wrong type.
    let response = raw(r#"{"user": {"email": "a@b.co", "password": 987654321}}"#)
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    assert!(!text.contains("987654321"), "{text}");

    let form = app
        .client
        .post(app.url("/api/users"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("email=a@b.co")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn huge_bodies_get_413() {
    let app = spawn_app().await;
    let huge = json!({ "user": { "email": "a@b.co", "password": "x".repeat(200_000) } });
    let response = app.post("/api/users", &huge).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(errors(response).await["body"][0].is_string());
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = spawn_app().await;
    let missing = app
        .client
        .get(app.url("/api/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(errors(missing).await["route"][0].is_string());
    let method = app
        .client
        .delete(app.url("/api/user"))
        .send()
        .await
        .unwrap();
    assert_eq!(method.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(errors(method).await["method"][0].is_string());
}

#[tokio::test]
async fn hostile_strings_are_stored_verbatim_or_refused_never_500() {
    let app = spawn_app().await;
    let hostile = [
        "'; DROP TABLE users; --",
        "<script>alert(1)</script>",
        "\u{202e}evil\u{0}",
        "𝕳𝖊𝖑𝖑𝖔 👋🏽 \u{200b}",
        "%00%0d%0a",
    ];
    for (i, text) in hostile.iter().enumerate() {
        let body = json!({ "user": {
            "email": format!("hostile{i}@example.com"),
            "password": "tutad1234",
            "first_name": text, "last_name": text, "address": text, "phone_number": "+1 555",
        }});
        let response = app.post("/api/users", &body).await;
        assert!(
            response.status() == StatusCode::CREATED
                || response.status() == StatusCode::BAD_REQUEST,
            "{text:?} → {}",
            response.status()
        );
        if response.status() == StatusCode::CREATED {
            let created: Value = response.json().await.unwrap();
            assert_eq!(created["user"]["first_name"], text.trim());
        }
    }
    for email in [
        "'; DROP TABLE users; --@x.com",
        "a@b.co\r\nBcc: victim@x.com",
        "<script>@x.com",
    ] {
        let response = app
            .post(
                "/api/users",
                &json!({ "user": { "email": email, "password": "tutad1234" } }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{email}");
    }
    let mut conn = app.conn().await;
    assert!(
        testkit::count(&mut conn, "SELECT count(*) AS n FROM users")
            .await
            .unwrap()
            >= 1
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    // Ready with the broker unreachable: the outbox holds events meanwhile.
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("accounts_http_request_duration_seconds"),
        "{metrics}"
    );
}

/// serde reads a struct from an array of its field values as well; a body is an object or a 400,
/// on every route that reads one (a token in an array was a valid refresh, a reset, a revert).
#[tokio::test]
async fn an_array_of_field_values_is_not_a_body() {
    let app = spawn_app().await;
    let (_, registered) = app.register_user().await;
    let token = registered["user"]["token"].as_str().unwrap().to_string();
    let refresh = registered["user"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let cases = [
        ("POST", "/api/users/token/refresh", json!([refresh])),
        (
            "POST",
            "/api/users/password/reset",
            json!(["t", "tutad1234", "tutad1234"]),
        ),
        ("POST", "/api/users/email/revert", json!(["t"])),
        ("POST", "/api/users/sign-in/reject", json!(["t"])),
        ("POST", "/api/users/login/mfa", json!(["c", "123456", null])),
        ("POST", "/api/user/mfa/totp", json!([null, null])),
        ("POST", "/api/user/mfa/totp/confirm", json!(["123456"])),
        ("POST", "/api/user/mfa/recovery-codes", json!([null, null])),
        ("DELETE", "/api/user/mfa/totp", json!([null, null])),
        ("POST", "/api/users/logout", json!([null, true])),
    ];
    for (method, path, body) in cases {
        let response = app
            .client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                app.url(path),
            )
            .header("Authorization", format!("Token {token}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{method} {path}"
        );
        let errors: Value = errors(response).await;
        assert!(errors["body"][0].is_string(), "{method} {path} → {errors}");
    }
    // The refresh token in an array did not rotate: it still works in an object.
    let refreshed = app.refresh(&refresh).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
}

/// The same inside the `{"user": ...}` envelope: `{"user": [email, null, password]}` signed in, and
/// a profile update as an array cleared every field its nulls stood for.
#[tokio::test]
async fn an_envelope_whose_user_is_an_array_is_not_a_body() {
    let app = spawn_app().await;
    let (email, registered) = app.register_user().await;
    let token = registered["user"]["token"].as_str().unwrap().to_string();
    let login = app
        .post(
            "/api/users/login",
            &json!({ "user": [email, null, "tutad1234"] }),
        )
        .await;
    assert_eq!(login.status(), StatusCode::BAD_REQUEST);
    assert!(errors(login).await["body"][0].is_string());
    let register = app
        .post(
            "/api/users",
            &json!({ "user": ["b@example.com", "tutad1234"] }),
        )
        .await;
    assert_eq!(register.status(), StatusCode::BAD_REQUEST);
    let update = app.update_user(&token, json!([null, null, "a bio"])).await;
    assert_eq!(update.status(), StatusCode::BAD_REQUEST);
    let me: Value = app.current_user(&token).await.json().await.unwrap();
    assert_eq!(me["user"]["email"], email.as_str(), "nothing changed");
}
