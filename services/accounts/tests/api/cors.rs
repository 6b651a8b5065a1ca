//! Browser apps on other origins (`ACCOUNTS_CORS_ORIGINS`): preflights answered without a token,
//! `Retry-After` and `X-Request-Id` readable, no credentials mode, and nothing for an unlisted
//! origin. The whole flow in a real browser is in tests/e2e/browser.mjs.

use reqwest::{Method, Response, StatusCode, header::HeaderMap};
use serde_json::json;

use crate::helpers::{Options, TestApp, registration, spawn_with, unique_email};

const APP: &str = "https://app.example.com";
const OTHER_APP: &str = "http://localhost:3000";
const STRANGER: &str = "https://evil.example.net";

async fn spawn_with_origins() -> TestApp {
    spawn_with(Options {
        vars: vec![("ACCOUNTS_CORS_ORIGINS", format!("{APP}, {OTHER_APP}"))],
        ..Options::default()
    })
    .await
}

async fn preflight(app: &TestApp, path: &str, origin: &str, method: &str) -> Response {
    app.client
        .request(Method::OPTIONS, app.url(path))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", method)
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

fn lowercase_list(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

#[tokio::test]
async fn a_listed_origin_gets_its_preflight_without_a_token_and_reads_the_answers() {
    let app = spawn_with_origins().await;
    for (path, method) in [
        ("/api/users", "POST"),
        ("/api/users/login", "POST"),
        ("/api/user", "GET"),
        ("/api/user", "PUT"),
        (
            "/api/user/sessions/0190a5c4-0000-7000-8000-000000000000",
            "DELETE",
        ),
    ] {
        for origin in [APP, OTHER_APP] {
            let answer = preflight(&app, path, origin, method).await;
            assert!(
                answer.status().is_success(),
                "{method} {path} from {origin}: {}",
                answer.status()
            );
            let headers = answer.headers();
            assert_eq!(header(headers, "access-control-allow-origin"), Some(origin));
            assert!(
                lowercase_list(header(headers, "access-control-allow-methods"))
                    .contains(&method.to_ascii_lowercase()),
                "{headers:?}"
            );
            let allowed = lowercase_list(header(headers, "access-control-allow-headers"));
            for needed in ["authorization", "content-type"] {
                assert!(allowed.iter().any(|h| h == needed), "{needed}: {headers:?}");
            }
            assert_eq!(header(headers, "access-control-allow-credentials"), None);
        }
    }

    // The real requests: readable by the app, with the headers it needs exposed.
    let email = unique_email();
    let registered = app
        .client
        .post(app.url("/api/users"))
        .header("Origin", APP)
        .json(&registration(&email, crate::helpers::PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::CREATED);
    let headers = registered.headers();
    assert_eq!(header(headers, "access-control-allow-origin"), Some(APP));
    assert_eq!(header(headers, "access-control-allow-credentials"), None);
    let exposed = lowercase_list(header(headers, "access-control-expose-headers"));
    for needed in ["retry-after", "x-request-id"] {
        assert!(exposed.iter().any(|h| h == needed), "{needed}: {headers:?}");
    }
    assert!(
        lowercase_list(header(headers, "vary")).contains(&"origin".to_string()),
        "{headers:?}"
    );
    // An error answer is readable too (the app shows its messages).
    let refused = app
        .client
        .get(app.url("/api/user"))
        .header("Origin", OTHER_APP)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(refused.headers(), "access-control-allow-origin"),
        Some(OTHER_APP)
    );
}

#[tokio::test]
async fn an_unlisted_origin_cannot_read_any_answer() {
    let app = spawn_with_origins().await;
    for origin in [
        STRANGER,
        "https://app.example.com.evil.example.net",
        "http://app.example.com",
        "null",
    ] {
        let answer = preflight(&app, "/api/users/login", origin, "POST").await;
        assert_eq!(
            header(answer.headers(), "access-control-allow-origin"),
            None,
            "{origin}"
        );
        // Refused in our error envelope, not a library's line of text.
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{origin}");
        let refusal: serde_json::Value = answer.json().await.expect("a JSON body");
        assert!(refusal["errors"]["cors"][0].is_string(), "{refusal}");
        let login = app
            .client
            .post(app.url("/api/users/login"))
            .header("Origin", origin)
            .json(&json!({ "user": { "email": unique_email(), "password": "whatever-1" } }))
            .send()
            .await
            .unwrap();
        assert!(login.status().is_client_error(), "{origin}");
        assert_eq!(
            header(login.headers(), "access-control-allow-origin"),
            None,
            "{origin}"
        );
        // Whatever the status, the body is our error envelope, not a library's text.
        let body: serde_json::Value = login.json().await.expect("a JSON body");
        assert!(body["errors"].is_object(), "{origin}: {body}");
    }
}

#[tokio::test]
async fn without_listed_origins_no_browser_app_is_let_in() {
    let app = crate::helpers::spawn_app().await;
    let answer = preflight(&app, "/api/users/login", APP, "POST").await;
    assert_eq!(
        header(answer.headers(), "access-control-allow-origin"),
        None
    );
    // Our own pages post from our own origin, which needs no CORS and keeps working.
    let own = app
        .client
        .post(app.url("/api/users/password/forgot"))
        .header("Origin", app.address.as_str())
        .json(&json!({ "user": { "email": unique_email() } }))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_bad_origin_list_fails_startup_with_a_clear_message() {
    for bad in [
        "*",
        "app.example.com",
        "https://app.example.com/path",
        "https://app.example.com?x=1",
        "ftp://app.example.com",
        "https://user@app.example.com",
        "null",
    ] {
        let vars = [("ACCOUNTS_CORS_ORIGINS", bad)];
        let error = accounts::config::Settings::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
        .expect_err(bad)
        .to_string();
        assert!(error.contains("ACCOUNTS_CORS_ORIGINS"), "{bad}: {error}");
        assert!(error.contains(bad), "{bad}: {error}");
    }
}
