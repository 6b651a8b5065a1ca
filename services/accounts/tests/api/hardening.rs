//! Response hardening: no caching of API answers, a strict CSP on the pages, and the JSON 413 on
//! every route that reads a body, however the body arrives.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{TestApp, errors, spawn_app};

#[tokio::test]
async fn every_api_answer_says_no_store() {
    let app = spawn_app().await;
    let (email, body) = app.register_user().await;
    let token = body["user"]["token"].as_str().unwrap().to_string();
    let mut answers = vec![
        app.current_user(&token).await,
        app.current_user("not-a-token").await,
        app.login(&email, "wrong-password-1").await,
        app.post("/api/users", &json!({ "user": {} })).await,
        app.post(
            "/api/users/password/forgot",
            &json!({ "user": { "email": email } }),
        )
        .await,
        app.client
            .get(app.url("/api/nothing-here"))
            .send()
            .await
            .unwrap(),
        app.client
            .delete(app.url("/api/user"))
            .send()
            .await
            .unwrap(),
        app.client
            .get(app.url("/api/users/confirm?token=bogus"))
            .send()
            .await
            .unwrap(),
    ];
    answers.push(
        app.register(&crate::helpers::registration(
            &crate::helpers::unique_email(),
            crate::helpers::PASSWORD,
        ))
        .await,
    );
    for answer in answers {
        let status = answer.status();
        assert_eq!(
            answer
                .headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "{} {status}",
            answer.url()
        );
        assert_eq!(answer.headers()["x-content-type-options"], "nosniff");
    }
}

#[tokio::test]
async fn pages_and_the_docs_allow_no_inline_script_no_framing_and_no_referrer() {
    let app = spawn_app().await;
    for page in [
        "/account/email-confirmed",
        "/account/confirm-email",
        "/account/reset-password?token=abc",
        "/docs/",
    ] {
        let response = app.client.get(app.url(page)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{page}");
        let page_url = response.url().clone();
        let headers = response.headers().clone();
        let csp = headers
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("{page} has no Content-Security-Policy"))
            .to_str()
            .unwrap()
            .to_string();
        let directive = |name: &str| {
            csp.split(';')
                .map(str::trim)
                .find(|d| d.starts_with(name))
                .map(str::to_string)
        };
        assert_eq!(
            directive("frame-ancestors").as_deref(),
            Some("frame-ancestors 'none'")
        );
        let scripts = directive("script-src")
            .or_else(|| directive("default-src"))
            .unwrap();
        assert!(!scripts.contains("unsafe-inline"), "{page}: {csp}");
        assert!(!scripts.contains("unsafe-eval"), "{page}: {csp}");
        assert!(
            !scripts.contains('*') && !scripts.contains("http"),
            "{page}: {csp}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff", "{page}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{page}");

        // Every script the page has comes from a file the app serves, under that policy.
        let html = response.text().await.unwrap();
        for tag in html.split("<script").skip(1) {
            let open = tag.split('>').next().unwrap();
            let src = open
                .split("src=\"")
                .nth(1)
                .unwrap_or_else(|| panic!("{page} has an inline script: <script{open}>"))
                .split('"')
                .next()
                .unwrap();
            let body_after = &tag[open.len() + 1..];
            assert!(body_after.trim_start().starts_with("</script>"), "{page}");
            let asset = app
                .client
                .get(page_url.join(src).unwrap())
                .send()
                .await
                .unwrap();
            assert_eq!(asset.status(), StatusCode::OK, "{src}");
            assert!(
                asset.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/javascript")
            );
        }
        assert!(!html.contains("<style"), "{page} has an inline stylesheet");
        assert!(
            !html.contains(" on"),
            "{page} may have an inline event handler"
        );
    }
}

/// The body-reading routes, with whether they need a token.
const BODY_ROUTES: &[(&str, &str, bool)] = &[
    ("POST", "/api/users", false),
    ("POST", "/api/users/login", false),
    ("POST", "/api/users/token/refresh", false),
    ("POST", "/api/users/logout", true),
    ("POST", "/api/users/confirm/resend", false),
    ("POST", "/api/users/password/forgot", false),
    ("POST", "/api/users/password/reset", false),
    ("PUT", "/api/user", true),
];

/// Sends `size` bytes of JSON-ish body with chunked transfer encoding (no declared length) over
/// a raw socket, and returns the status and content type of the answer.
async fn send_chunked(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    size: usize,
) -> (u16, String) {
    let address = app.address.trim_start_matches("http://").to_string();
    let stream = TcpStream::connect(&address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Token {t}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n{auth}Transfer-Encoding: chunked\r\n\r\n"
    );
    let writing = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        writer.write_all(b"6\r\n{\"a\":\"\r\n").await?;
        let chunk = vec![b'x'; 8192];
        for _ in 0..size / chunk.len() {
            writer
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            writer.write_all(&chunk).await?;
            writer.write_all(b"\r\n").await?;
        }
        writer.write_all(b"2\r\n\"}\r\n0\r\n\r\n").await?;
        writer.flush().await?;
        Ok::<_, std::io::Error>(writer)
    });
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = reader.read(&mut buffer).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buffer[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "{method} {path}: no answer");
    writing.abort();
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: not an HTTP answer: {text:?}"));
    let content_type = text
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    (status, content_type)
}

#[tokio::test]
async fn huge_bodies_get_the_json_413_on_every_route() {
    let app = spawn_app().await;
    let (_, body) = app.register_user().await;
    let token = body["user"]["token"].as_str().unwrap().to_string();
    let huge = json!({ "user": { "email": "a@b.co", "password": "x".repeat(200_000) }, "refresh_token": "y".repeat(100_000) });
    for (method, path, authed) in BODY_ROUTES {
        // A declared length.
        let mut request = app
            .client
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                app.url(path),
            )
            .json(&huge);
        if *authed {
            request = request.header("Authorization", format!("Token {token}"));
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "{method} {path}"
        );
        let errors: Value = errors(response).await;
        assert!(errors["body"][0].is_string(), "{method} {path}: {errors}");

        // A streamed body with no declared length.
        let (status, content_type) = send_chunked(
            &app,
            method,
            path,
            authed.then_some(token.as_str()),
            200_000,
        )
        .await;
        assert_eq!(status, 413, "{method} {path} (chunked)");
        assert!(
            content_type.starts_with("application/json"),
            "{method} {path} (chunked): {content_type}"
        );
    }
    // The token still works: nothing above was half-processed.
    assert_eq!(app.current_user(&token).await.status(), StatusCode::OK);
}

/// Startup with a public URL and no ACCOUNTS_ENCRYPTION_KEY_FILE, nor ACCOUNTS_JWT_KEY_FILE unless
/// `jwt_key` is given: the settings a forgotten secret leaves.
async fn build_without_a_key_file(
    public_url: &str,
    jwt_key: Option<&std::path::Path>,
) -> (anyhow::Result<u16>, bool) {
    let db = testkit::TestDatabase::new("accounts");
    let dir = crate::helpers::TempDir(
        std::env::temp_dir().join(format!("accounts-key-{}", uuid::Uuid::new_v4())),
    );
    let vars = std::collections::HashMap::from([
        ("ACCOUNTS_DATABASE_URL", db.url().to_string()),
        ("AMQP_URL", testkit::unreachable_amqp_url()),
        ("ACCOUNTS_ADDR", "127.0.0.1:0".to_string()),
        ("ACCOUNTS_BCRYPT_COST", "4".to_string()),
        ("ACCOUNTS_PUBLIC_URL", public_url.to_string()),
    ]);
    let mut settings = accounts::config::Settings::from_lookup(|name| vars.get(name).cloned())
        .expect("valid settings");
    assert!(settings.jwt_key_is_default);
    // Where the development keys would go, so that a wrongly created one is seen and removed.
    settings.jwt_key_file = dir.0.join("dev-jwt-key.pem");
    settings.encryption_key_file = dir.0.join("dev-encryption-key");
    if let Some(key) = jwt_key {
        settings.jwt_key_file = key.to_path_buf();
        settings.jwt_key_is_default = false;
    }
    let built = accounts::startup::Application::build(settings)
        .await
        .map(|app| app.port());
    let created =
        dir.0.join("dev-jwt-key.pem").exists() || dir.0.join("dev-encryption-key").exists();
    (built, created)
}

#[tokio::test]
async fn a_public_deployment_without_a_key_file_refuses_to_start() {
    for public_url in ["https://accounts.example.com", "http://10.0.0.7:8080"] {
        let (built, created) = build_without_a_key_file(public_url, None).await;
        let message = format!("{:#}", built.expect_err("startup must fail"));
        assert!(message.contains("openssl genpkey"), "{message}");
        assert!(message.contains("ACCOUNTS_JWT_KEY_FILE"), "{message}");
        assert!(!created, "a development key was written for {public_url}");
    }
    // Locally it still just works.
    let (built, created) = build_without_a_key_file("http://127.0.0.1:8080", None).await;
    assert!(built.is_ok());
    assert!(created);
}

#[tokio::test]
async fn a_public_deployment_without_an_encryption_key_refuses_to_start() {
    let dir = crate::helpers::TempDir(
        std::env::temp_dir().join(format!("accounts-jwt-{}", uuid::Uuid::new_v4())),
    );
    std::fs::create_dir_all(&dir.0).unwrap();
    let jwt = dir.0.join("jwt.pem");
    let generated = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&jwt)
        .status()
        .expect("openssl");
    assert!(generated.success());
    let (built, created) =
        build_without_a_key_file("https://accounts.example.com", Some(&jwt)).await;
    let message = format!("{:#}", built.expect_err("startup must fail"));
    assert!(
        message.contains("ACCOUNTS_ENCRYPTION_KEY_FILE"),
        "{message}"
    );
    assert!(message.contains("head -c 32 /dev/urandom"), "{message}");
    assert!(!created, "a development encryption key was written");
}
