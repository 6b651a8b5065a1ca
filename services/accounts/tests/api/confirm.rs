use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, errors, spawn_app};

const SUCCESS: &str = "/account/email-confirmed";
const FAILURE: &str = "/account/confirm-email";

/// Registers a user and returns (user id, the confirmation link from the outbox event).
async fn registered_with_link(app: &TestApp) -> (String, String) {
    let (_, body) = app.register_user().await;
    let id = body["user"]["id"].as_str().unwrap().to_string();
    let events = app.outbox_events("user-registered").await;
    let event = events
        .iter()
        .find(|e| e["user_id"] == id.as_str())
        .expect("a user-registered event");
    (id, event["confirmation_url"].as_str().unwrap().to_string())
}

async fn is_verified(app: &TestApp, id: &str) -> bool {
    let mut conn = app.conn().await;
    let sql = format!("SELECT count(*) AS n FROM users WHERE id = '{id}' AND verified");
    testkit::count(&mut conn, &sql).await.unwrap() == 1
}

fn local(app: &TestApp, link: &str) -> String {
    // Links are built on ACCOUNTS_PUBLIC_URL; the test server listens elsewhere.
    let url = url::Url::parse(link).unwrap();
    format!(
        "{}{}?{}",
        app.address,
        url.path(),
        url.query().unwrap_or_default()
    )
}

#[tokio::test]
async fn a_valid_link_confirms_and_redirects_to_success() {
    let app = spawn_app().await;
    let (id, link) = registered_with_link(&app).await;
    assert!(
        link.starts_with("http://localhost:8080/api/users/confirm?token="),
        "{link}"
    );
    assert!(!is_verified(&app, &id).await);

    let response = app.client.get(local(&app, &link)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(
        response.headers()["location"],
        format!("http://localhost:8080{SUCCESS}")
    );
    assert!(is_verified(&app, &id).await);

    // The success page renders.
    let page = app.client.get(app.url(SUCCESS)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("confirmed"));
}

#[tokio::test]
async fn bad_links_redirect_to_the_new_link_page_and_leave_the_user_unverified() {
    let app = spawn_app().await;
    let (id, link) = registered_with_link(&app).await;
    let token = link.split("token=").nth(1).unwrap().to_string();

    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    let now = chrono::Utc::now().timestamp();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(app.kid().await);
    let expired = app.sign(
        header.clone(),
        &json!({
            "iss": "http://localhost:8080", "aud": "accounts:email-confirmation", "sub": id,
            "iat": now - 7200, "exp": now - 3600, "jti": uuid::Uuid::new_v4(),
            "typ": "email-confirmation", "email": "whatever@example.com",
        }),
    );
    // An access token is not a confirmation token.
    let access = app.register_user().await.1["user"]["token"]
        .as_str()
        .unwrap()
        .to_string();

    for (name, path) in [
        ("none", "/api/users/confirm".to_string()),
        ("empty", "/api/users/confirm?token=".to_string()),
        ("tampered", format!("/api/users/confirm?token={tampered}")),
        ("expired", format!("/api/users/confirm?token={expired}")),
        ("access token", format!("/api/users/confirm?token={access}")),
    ] {
        let response = app.client.get(app.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FOUND, "{name}");
        assert_eq!(
            response.headers()["location"],
            format!("http://localhost:8080{FAILURE}"),
            "{name}"
        );

        let json = app
            .client
            .get(app.url(&path))
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(json.status(), StatusCode::BAD_REQUEST, "{name}");
        assert_eq!(
            errors(json).await["token"][0],
            "The confirmation link is invalid or has expired."
        );
    }
    assert!(!is_verified(&app, &id).await);

    // The confirmation token is no access token either.
    let me = app.current_user(&token).await;
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);

    let page = app.client.get(app.url(FAILURE)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("new link"));
}

#[tokio::test]
async fn a_mailed_link_reads_out_only_what_it_confirmed() {
    let app = spawn_app().await;
    let (id, link) = registered_with_link(&app).await;
    let response = app
        .client
        .get(local(&app, &link))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"]["id"], id.as_str());
    assert_eq!(body["user"]["verified"], true);
    // Whoever holds the link (a mailbox, a forwarded mail) learns nothing else of the profile.
    let keys: Vec<&String> = body["user"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["email", "id", "verified"]);
}

#[tokio::test]
async fn a_link_for_a_previous_address_does_not_confirm_the_new_one() {
    let app = spawn_app().await;
    let (id, old_link) = registered_with_link(&app).await;
    let login: Value = app.outbox_events("user-registered").await[0].clone();
    let email = login["email"].as_str().unwrap().to_string();
    let token: Value = app
        .login(&email, crate::helpers::PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let token = token["user"]["token"].as_str().unwrap().to_string();
    let changed = app
        .update_user(&token, json!({ "email": crate::helpers::unique_email() }))
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    let response = app.client.get(local(&app, &old_link)).send().await.unwrap();
    assert_eq!(
        response.headers()["location"],
        format!("http://localhost:8080{FAILURE}")
    );
    assert!(!is_verified(&app, &id).await);
}

#[tokio::test]
async fn resend_answers_202_and_emits_only_for_unverified_accounts() {
    let app = spawn_app().await;
    let (email, _) = app.register_user().await;
    let app = &app;
    let resend = move |email: String| async move {
        app.post(
            "/api/users/confirm/resend",
            &json!({ "user": { "email": email } }),
        )
        .await
    };
    assert_eq!(resend(email.clone()).await.status(), StatusCode::ACCEPTED);
    assert_eq!(
        resend("nobody@example.com".into()).await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        app.outbox_events("email-confirmation-requested")
            .await
            .len(),
        1
    );

    // Limited per address, whether or not it exists.
    assert_eq!(resend(email.clone()).await.status(), StatusCode::ACCEPTED);
    assert_eq!(resend(email.clone()).await.status(), StatusCode::ACCEPTED);
    let limited = resend(email.clone()).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(
        app.outbox_events("email-confirmation-requested")
            .await
            .len(),
        3
    );

    // A verified account gets nothing.
    let (other, _) = app.register_user().await;
    let mut conn = app.conn().await;
    testkit::execute_with(
        &mut conn,
        "UPDATE users SET verified = true WHERE email = $1",
        &other,
    )
    .await
    .unwrap();
    assert_eq!(resend(other).await.status(), StatusCode::ACCEPTED);
    assert_eq!(
        app.outbox_events("email-confirmation-requested")
            .await
            .len(),
        3
    );
}
