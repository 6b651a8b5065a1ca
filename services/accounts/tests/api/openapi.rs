use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{PASSWORD, spawn_app};

/// Every route of the contract (DESIGN.md) plus the pages the mail links open.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/users"),
    ("post", "/api/users/login"),
    ("get", "/api/user"),
    ("put", "/api/user"),
    ("post", "/api/users/token/refresh"),
    ("post", "/api/users/logout"),
    ("get", "/api/users/confirm"),
    ("post", "/api/users/confirm/resend"),
    ("post", "/api/users/password/forgot"),
    ("post", "/api/users/password/reset"),
    ("get", "/.well-known/jwks.json"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/account/email-confirmed"),
    ("get", "/account/confirm-email"),
    ("get", "/account/reset-password"),
    ("post", "/api/users/email/revert"),
    ("post", "/api/users/sign-in/reject"),
    ("get", "/api/user/sessions"),
    ("delete", "/api/user/sessions/{id}"),
    ("post", "/api/users/login/mfa"),
    ("get", "/api/user/mfa"),
    ("post", "/api/user/mfa/totp"),
    ("delete", "/api/user/mfa/totp"),
    ("post", "/api/user/mfa/totp/confirm"),
    ("post", "/api/user/mfa/recovery-codes"),
    ("get", "/account/revert-email"),
    ("get", "/account/reject-sign-in"),
    ("get", "/api/admin/users"),
    ("get", "/api/admin/users/{id}"),
    ("post", "/api/admin/users/{id}/deactivate"),
    ("post", "/api/admin/users/{id}/activate"),
    ("put", "/api/admin/users/{id}/roles"),
    ("delete", "/api/admin/users/{id}/sessions"),
    ("post", "/api/admin/users/{id}/confirmation"),
    ("delete", "/api/admin/users/{id}/mfa"),
    ("get", "/api/admin/audit"),
    ("get", "/api/auth/{provider}/authorize"),
    ("get", "/api/auth/{provider}/callback"),
    ("post", "/api/auth/token"),
    ("get", "/api/user/identities"),
    ("post", "/api/user/identities/{provider}"),
    ("delete", "/api/user/identities/{provider}"),
    ("get", "/account/signed-in"),
    ("post", "/api/user/passkeys/options"),
    ("post", "/api/user/passkeys"),
    ("get", "/api/user/passkeys"),
    ("delete", "/api/user/passkeys/{id}"),
    ("post", "/api/users/login/passkey/options"),
    ("post", "/api/users/login/passkey"),
    ("get", "/account/passkeys"),
];

#[tokio::test]
async fn the_document_covers_every_route_and_every_documented_route_exists() {
    // A provider is configured so that its routes answer (GitHub's kind needs no discovery).
    let app = crate::helpers::spawn_with(crate::helpers::Options {
        vars: vec![
            ("ACCOUNTS_SOCIAL_PROVIDERS", "github".into()),
            ("ACCOUNTS_SOCIAL_GITHUB_CLIENT_ID", "id".into()),
            ("ACCOUNTS_SOCIAL_GITHUB_CLIENT_SECRET", "secret".into()),
        ],
        ..Default::default()
    })
    .await;
    let doc = app.get_json("/openapi.json").await;
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, expected);

    for (method, path) in &documented {
        let response = app
            .client
            .request(
                Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                app.url(&path.replace("{provider}", "github")),
            )
            .send()
            .await
            .unwrap();
        assert_ne!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
        assert_ne!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
    }

    // The docs page is served from the binary (no CDN).
    let docs = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    let html = docs.text().await.unwrap();
    assert!(html.contains("swagger"), "{html}");
    assert!(!html.contains("cdn."), "the docs page must work offline");
}

#[tokio::test]
async fn user_schema_matches_real_responses() {
    let app = spawn_app().await;
    let doc = app.get_json("/openapi.json").await;
    let schema = &doc["components"]["schemas"]["UserBody"];
    let properties: BTreeSet<String> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let required: BTreeSet<String> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();

    let (email, registered) = app.register_user().await;
    let logged_in: Value = app.login(&email, PASSWORD).await.json().await.unwrap();
    let token = logged_in["user"]["token"].as_str().unwrap().to_string();
    let me: Value = app.current_user(&token).await.json().await.unwrap();
    for (name, body) in [("register", registered), ("login", logged_in), ("me", me)] {
        let keys: BTreeSet<String> = body["user"].as_object().unwrap().keys().cloned().collect();
        assert!(
            keys.is_subset(&properties),
            "{name}: undocumented {:?}",
            keys.difference(&properties)
        );
        assert!(
            required.is_subset(&keys),
            "{name}: missing {:?}",
            required.difference(&keys)
        );
    }
}
