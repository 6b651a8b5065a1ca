//! The admin API on MAILER_ADDR: failed sends behind `mail.read` / `mail.retry`, with tokens
//! verified against a JWKS served by a test issuer (see `issuer.rs`).

use std::time::{Duration, Instant};

use mailer::operator;
use serde_json::Value;

use crate::{
    helpers::{TestApp, WAIT, eventually, password_reset, registered, spawn_with, unique_email},
    issuer::{SUPPORT, SigningKey, TestIssuer, access_claims, claims_with},
};

const NO_CREDENTIALS: &str =
    r#"{"errors":{"token":["Authentication credentials were not provided."]}}"#;
const BAD_TOKEN: &str =
    r#"{"errors":{"token":["Invalid authentication. Could not decode token."]}}"#;
const NO_PERMISSION: &str =
    r#"{"errors":{"permission":["You do not have permission to perform this action."]}}"#;

struct Answer {
    status: u16,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

impl Answer {
    fn is(&self, status: u16, envelope: &str) -> bool {
        let expected: Value = serde_json::from_str(envelope).unwrap();
        self.status == status && self.body == expected
    }
}

/// A request to the mailer with `Authorization: <authorization>` when given.
async fn call(app: &TestApp, method: &str, path: &str, authorization: Option<&str>) -> Answer {
    let client = reqwest::Client::new();
    let url = format!("{}{path}", app.base_url());
    let mut request = match method {
        "POST" => client.post(url),
        _ => client.get(url),
    };
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    let response = request.send().await.expect("the mailer answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        headers,
    }
}

async fn get(app: &TestApp, path: &str, token: &str) -> Answer {
    call(app, "GET", path, Some(&format!("Bearer {token}"))).await
}

async fn post(app: &TestApp, path: &str, token: &str) -> Answer {
    call(app, "POST", path, Some(&format!("Bearer {token}"))).await
}

/// A mailer whose admin API trusts `issuer`.
async fn spawn_trusting(issuer: &TestIssuer, overrides: &[(&str, &str)]) -> TestApp {
    let url = issuer.jwks_url();
    let mut vars = vec![("ACCOUNTS_JWKS_URL", url.as_str())];
    vars.extend_from_slice(overrides);
    spawn_with(&vars).await
}

/// Makes `n` failed sends the real way (the SMTP server refuses the mail for good) and returns
/// their ids, oldest first.
async fn failed_sends(app: &mut TestApp, n: usize) -> Vec<i64> {
    app.smtp.reply_to_next_data(n, "554 5.6.0 Message refused");
    for _ in 0..n {
        app.publish(&registered(&unique_email(), None)).await;
    }
    eventually("the failed sends to be recorded", || async {
        let rows = operator::list(&app.settings, false).await.unwrap();
        (rows.len() == n).then(|| rows.iter().map(|row| row.id).collect())
    })
    .await
}

fn ids(answer: &Answer) -> Vec<i64> {
    answer.body["failed_sends"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {}", answer.body))
        .iter()
        .map(|row| row["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_support_token_lists_shows_and_retries_a_failed_send() {
    let issuer = TestIssuer::start().await;
    let mut app = spawn_trusting(&issuer, &[]).await;
    let id = failed_sends(&mut app, 1).await[0];
    let support = issuer.token(SUPPORT);

    let list = get(&app, "/admin/failed-sends", &support).await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(ids(&list), [id]);
    let row = &list.body["failed_sends"][0];
    assert!(row["error"].as_str().unwrap().contains("554"), "{row}");
    assert!(
        row.get("payload").is_none(),
        "the list never carries payloads (they hold links with tokens): {row}"
    );
    assert_eq!(list.headers["cache-control"], "no-store");

    let show = get(&app, &format!("/admin/failed-sends/{id}"), &support).await;
    assert_eq!(show.status, 200, "{}", show.body);
    let payload = &show.body["failed_send"]["payload"];
    assert_eq!(payload["type"], "user-registered", "{}", show.body);
    assert_eq!(show.headers["cache-control"], "no-store");

    let retry = post(&app, &format!("/admin/failed-sends/{id}/retry"), &support).await;
    assert_eq!(retry.status, 202, "{}", retry.body);
    assert_eq!(retry.body["failed_send"]["id"], id);
    assert!(!retry.body["failed_send"]["resolved_at"].is_null());
    let messages = app.smtp.wait_for_messages(1, WAIT).await.unwrap();
    assert_eq!(messages.len(), 1);

    let again = post(&app, &format!("/admin/failed-sends/{id}/retry"), &support).await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert!(again.body["errors"]["failed_send"].is_array());
    let empty = get(&app, "/admin/failed-sends", &support).await;
    assert!(ids(&empty).is_empty(), "{}", empty.body);
    let all = get(&app, "/admin/failed-sends?all=true", &support).await;
    assert_eq!(ids(&all), [id]);
}

#[tokio::test]
async fn paging_returns_every_failed_send_once_and_rejects_bad_parameters() {
    let issuer = TestIssuer::start().await;
    let mut app = spawn_trusting(&issuer, &[]).await;
    let created = failed_sends(&mut app, 3).await;
    let token = issuer.token(&["mail.read"]);

    let first = get(&app, "/admin/failed-sends?limit=2", &token).await;
    assert_eq!(ids(&first), created[..2]);
    let cursor = first.body["next_cursor"].as_str().unwrap().to_string();
    let second = get(
        &app,
        &format!("/admin/failed-sends?limit=2&cursor={cursor}"),
        &token,
    )
    .await;
    assert_eq!(ids(&second), created[2..]);
    assert!(second.body["next_cursor"].is_null(), "{}", second.body);

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("cursor=abc", "cursor"),
        ("all=maybe", "all"),
    ] {
        let answer = get(&app, &format!("/admin/failed-sends?{query}"), &token).await;
        assert_eq!(answer.status, 400, "{query}: {}", answer.body);
        assert!(
            answer.body["errors"][field].is_array(),
            "{query}: {}",
            answer.body
        );
    }
    for path in ["/admin/failed-sends/999999", "/admin/failed-sends/abc"] {
        let answer = get(&app, path, &token).await;
        assert_eq!(answer.status, 404, "{path}: {}", answer.body);
    }
    let retry_missing = post(
        &app,
        "/admin/failed-sends/999999/retry",
        &issuer.token(SUPPORT),
    )
    .await;
    assert_eq!(retry_missing.status, 404, "{}", retry_missing.body);
}

#[tokio::test]
async fn a_token_without_the_route_permission_is_forbidden() {
    let issuer = TestIssuer::start().await;
    let mut app = spawn_trusting(&issuer, &[]).await;
    let id = failed_sends(&mut app, 1).await[0];

    let plain = issuer.token(&[]);
    for path in [
        "/admin/failed-sends".to_string(),
        format!("/admin/failed-sends/{id}"),
    ] {
        assert!(
            get(&app, &path, &plain).await.is(403, NO_PERMISSION),
            "{path}"
        );
    }
    let retry = format!("/admin/failed-sends/{id}/retry");
    assert!(post(&app, &retry, &plain).await.is(403, NO_PERMISSION));
    // mail.read lets one look, not resend.
    let reader = issuer.token(&["mail.read", "users.read"]);
    assert_eq!(get(&app, "/admin/failed-sends", &reader).await.status, 200);
    assert!(post(&app, &retry, &reader).await.is(403, NO_PERMISSION));
    // A role name is not a permission: only `permissions` counts.
    let roles_only = issuer.current.sign(&claims_with(&[], |c| {
        c.insert("roles".into(), serde_json::json!(["support", "admin"]));
    }));
    assert!(
        get(&app, "/admin/failed-sends", &roles_only)
            .await
            .is(403, NO_PERMISSION)
    );

    assert!(app.smtp.messages().is_empty(), "nothing was resent");
}

#[tokio::test]
async fn missing_forged_expired_and_misdirected_tokens_are_unauthorized() {
    let issuer = TestIssuer::start().await;
    let app = spawn_trusting(&issuer, &[]).await;
    let path = "/admin/failed-sends";

    let missing = call(&app, "GET", path, None).await;
    assert!(missing.is(401, NO_CREDENTIALS), "{}", missing.body);
    assert_eq!(missing.headers["www-authenticate"], "Bearer");

    let support = issuer.token(SUPPORT);
    for header in [
        // A bare scheme: as accounts answers it.
        "Bearer ".to_string(),
        "Bearer not-a-jwt".to_string(),
        "Bearer a.b.c".to_string(),
        format!("Basic {support}"),
        support.clone(),
    ] {
        let answer = call(&app, "GET", path, Some(&header)).await;
        assert!(answer.is(401, BAD_TOKEN), "{header:.20}: {}", answer.body);
    }

    let now = chrono::Utc::now().timestamp();
    let attacker = SigningKey::generate();
    let unpublished_key_claiming_our_kid =
        attacker.sign_as(&issuer.current.kid, &access_claims(SUPPORT));
    let refused = [
        ("forged", unpublished_key_claiming_our_kid),
        (
            "expired",
            issuer.current.sign(&claims_with(SUPPORT, |c| {
                c.insert("exp".into(), (now - 60).into());
                c.insert("iat".into(), (now - 960).into());
            })),
        ),
        (
            "wrong audience",
            issuer.current.sign(&claims_with(SUPPORT, |c| {
                c.insert("aud".into(), "accounts:password-reset".into());
            })),
        ),
        (
            "wrong issuer",
            issuer.current.sign(&claims_with(SUPPORT, |c| {
                c.insert("iss".into(), "https://evil.example".into());
            })),
        ),
        (
            "not an access token",
            issuer.current.sign(&claims_with(SUPPORT, |c| {
                c.insert("typ".into(), "password-reset".into());
            })),
        ),
        (
            "no jti",
            issuer.current.sign(&claims_with(SUPPORT, |c| {
                c.remove("jti");
            })),
        ),
        (
            "alg none",
            unsigned(&access_claims(SUPPORT), &issuer.current.kid),
        ),
    ];
    for (what, token) in refused {
        let answer = get(&app, path, &token).await;
        assert!(
            answer.is(401, BAD_TOKEN),
            "{what}: {} {}",
            answer.status,
            answer.body
        );
    }

    // Conduit's scheme works as well as Bearer, in any case.
    let conduit = call(&app, "GET", path, Some(&format!("token {support}"))).await;
    assert_eq!(conduit.status, 200, "{}", conduit.body);
}

/// A token with `alg: none` and no signature.
fn unsigned(claims: &Value, kid: &str) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let header = serde_json::json!({ "alg": "none", "typ": "JWT", "kid": kid });
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

#[tokio::test]
async fn a_rotated_signing_key_is_picked_up_without_a_restart() {
    let mut issuer = TestIssuer::start().await;
    let app = spawn_trusting(&issuer, &[("MAILER_JWKS_REFETCH_INTERVAL_MS", "300")]).await;
    let before = issuer.token(SUPPORT);
    assert_eq!(get(&app, "/admin/failed-sends", &before).await.status, 200);
    assert_eq!(issuer.fetches(), 1);

    issuer.rotate();
    let after = issuer.token(SUPPORT);

    eventually("the new key to be accepted", || async {
        (get(&app, "/admin/failed-sends", &after).await.status == 200).then_some(())
    })
    .await;
    assert_eq!(issuer.fetches(), 2, "one refetch, on the unknown kid");
    // The previous key is still published, so its tokens keep working during the rotation.
    assert_eq!(get(&app, "/admin/failed-sends", &before).await.status, 200);
    assert_eq!(issuer.fetches(), 2, "known kids are served from the cache");
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_the_jwks_a_bounded_number_of_times() {
    let issuer = TestIssuer::start().await;
    // The default interval: at most one refetch per 5 s.
    let app = spawn_trusting(&issuer, &[]).await;
    let attacker = SigningKey::generate();
    let tokens: Vec<String> = (0..300)
        .map(|_| attacker.sign_as(&uuid::Uuid::new_v4().to_string(), &access_claims(SUPPORT)))
        .collect();

    let started = Instant::now();
    let answers = futures_util::future::join_all(
        tokens
            .iter()
            .map(|token| get(&app, "/admin/failed-sends", token)),
    )
    .await;
    let elapsed = started.elapsed();

    for answer in &answers {
        assert!(
            answer.is(401, BAD_TOKEN),
            "{} {}",
            answer.status,
            answer.body
        );
    }
    let bound = 1 + (elapsed.as_millis() / 5000) as usize;
    let fetches = issuer.fetches();
    assert!(
        (1..=bound).contains(&fetches),
        "{fetches} JWKS fetches for 300 unknown kids in {elapsed:?} (bound {bound})"
    );
    // The real key still works, from the cache.
    assert_eq!(
        get(&app, "/admin/failed-sends", &issuer.token(SUPPORT))
            .await
            .status,
        200
    );
    assert_eq!(issuer.fetches(), fetches);
}

#[tokio::test]
async fn with_accounts_unreachable_the_api_answers_503_and_the_mailer_keeps_running() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{closed}/.well-known/jwks.json");
    // Startup does not fetch the keys, so it succeeds with accounts down.
    let app = spawn_with(&[("ACCOUNTS_JWKS_URL", &url)]).await;
    let token = SigningKey::generate().sign(&access_claims(SUPPORT));

    let answer = get(&app, "/admin/failed-sends", &token).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(
        answer.body["errors"]["server"].is_array(),
        "{}",
        answer.body
    );
    assert!(answer.headers.contains_key("retry-after"));
    // What needs no key is still refused as usual.
    assert!(
        call(&app, "GET", "/admin/failed-sends", None)
            .await
            .is(401, NO_CREDENTIALS)
    );
    assert!(
        get(&app, "/admin/failed-sends", "garbage")
            .await
            .is(401, BAD_TOKEN)
    );
    assert_eq!(app.get("/healthz").await.0, 200);
    assert_eq!(app.get("/readyz").await.0, 200);
}

#[tokio::test]
async fn cached_keys_keep_working_when_accounts_goes_down() {
    let mut issuer = TestIssuer::start().await;
    let app = spawn_trusting(&issuer, &[("MAILER_JWKS_REFETCH_INTERVAL_MS", "100")]).await;
    let token = issuer.token(SUPPORT);
    assert_eq!(get(&app, "/admin/failed-sends", &token).await.status, 200);

    issuer.stop().await;
    issuer.rotate();
    tokio::time::sleep(Duration::from_millis(150)).await;

    assert_eq!(get(&app, "/admin/failed-sends", &token).await.status, 200);
    let rotated = get(&app, "/admin/failed-sends", &issuer.token(SUPPORT)).await;
    assert_eq!(
        rotated.status, 503,
        "a new kid cannot be checked: {}",
        rotated.body
    );
    assert!(rotated.body["errors"]["server"].is_array());
}

#[tokio::test]
async fn the_raw_bytes_of_an_unreadable_message_are_never_shown() {
    let issuer = TestIssuer::start().await;
    let mut app = spawn_trusting(&issuer, &[]).await;
    let secret = "link-token-4f1c";
    let body = format!("{{not json http://localhost:8080/api/users/confirm?token={secret}");
    app.publish_raw("user-registered", body.as_bytes()).await;
    let id = eventually("the unreadable message to be recorded", || async {
        operator::list(&app.settings, false)
            .await
            .unwrap()
            .first()
            .map(|row| row.id)
    })
    .await;
    let token = issuer.token(SUPPORT);

    let list = get(&app, "/admin/failed-sends", &token).await;
    let show = get(&app, &format!("/admin/failed-sends/{id}"), &token).await;

    assert_eq!(ids(&list), [id]);
    assert_eq!(show.status, 200, "{}", show.body);
    assert!(
        show.body["failed_send"]["payload"].is_null(),
        "{}",
        show.body
    );
    for answer in [&list, &show] {
        assert!(!answer.body.to_string().contains(secret), "{}", answer.body);
    }
}

/// Issue 18, item 1: anyone can request a reset mail for any address (the superuser's); when it
/// bounces, its live reset link sits in `failed_sends`. A support agent (`mail.read`) must not be
/// able to read it there, through the API or the CLI, in the payload, the error text (a content
/// filter that quotes the URL it blocked) or anywhere else; the retry still mails the real link.
#[tokio::test]
async fn a_support_agent_never_reads_the_reset_link_of_a_bounced_reset_mail() {
    let issuer = TestIssuer::start().await;
    let mut app = spawn_trusting(&issuer, &[("MAILER_MAX_ATTEMPTS", "1")]).await;
    let reset = password_reset("root@example.com");
    let link = match &reset.event {
        events::Event::PasswordResetRequested(e) => e.reset_url.clone(),
        _ => unreachable!(),
    };
    let token = link.split("token=").nth(1).unwrap().to_string();
    app.smtp.reply_to_next_data(
        1,
        &format!(
            "554 5.7.1 Message rejected: blocked URL {link} (see https://example.net/why?id=1)"
        ),
    );
    app.publish(&reset).await;
    let id = eventually("the bounced reset mail's failed send", || async {
        let rows = operator::list(&app.settings, false).await.unwrap();
        rows.first().map(|row| row.id)
    })
    .await;
    let support = issuer.token(SUPPORT);

    let list = get(&app, "/admin/failed-sends?all=true", &support).await;
    let show = get(&app, &format!("/admin/failed-sends/{id}"), &support).await;
    assert_eq!(
        (list.status, show.status),
        (200, 200),
        "{} {}",
        list.body,
        show.body
    );
    let (_, cli_list) = app.cli(&["failed", "list", "--all"]).await;
    let (_, cli_json) = app.cli(&["failed", "list", "--json"]).await;
    let (shown, cli_show) = app.cli(&["failed", "show", &id.to_string()]).await;
    assert!(shown, "{cli_show}");
    for (seen_through, text) in [
        ("GET /admin/failed-sends", list.body.to_string()),
        ("GET /admin/failed-sends/{id}", show.body.to_string()),
        ("mailer failed list", cli_list),
        ("mailer failed list --json", cli_json),
        ("mailer failed show", cli_show),
    ] {
        assert!(
            !text.contains(&token),
            "{seen_through} shows the reset token: {text}"
        );
    }
    let shown = &show.body["failed_send"];
    assert_eq!(
        shown["payload"]["data"]["reset_url"],
        "http://localhost:8080/account/reset-password?token=[redacted]",
        "{shown}"
    );
    assert!(
        shown["error"]
            .as_str()
            .unwrap()
            .contains("blocked URL http://localhost:8080/account/reset-password?token=[redacted]"),
        "{shown}"
    );
    assert_eq!(shown["payload"]["data"]["email"], "root@example.com");

    // The retry sends what was stored, link and all.
    let retry = post(&app, &format!("/admin/failed-sends/{id}/retry"), &support).await;
    assert_eq!(retry.status, 202, "{}", retry.body);
    assert!(!retry.body.to_string().contains(&token), "{}", retry.body);
    let messages = app.smtp.wait_for_messages(1, WAIT).await.unwrap();
    let mail = String::from_utf8_lossy(&messages[0].data).replace("=\r\n", "");
    assert!(
        mail.contains(&token),
        "the retried mail lost its link: {mail}"
    );
}

/// The raw bytes of a message the mailer could not read are no safer than a payload: a link with
/// its token sits in them behind a byte that is not UTF-8, a NUL, or JSON's own escapes, which
/// escaping first and redacting after left in clear. `mailer failed show` must not print it.
#[tokio::test]
async fn mailer_failed_show_never_prints_a_token_from_an_unreadable_body() {
    let mut app = spawn_with(&[]).await;
    let bodies: [&[u8]; 3] = [
        b"{\"url\": \"http://x/reset-password?token=abc\xffSECRET1\"}",
        b"{\"url\": \"http://x/reset-password?token\\u003dSECRET2\"}\x00",
        b"{\"url\": \"http:\\/\\/x\\/reset-password?token=SECRET3\", \"nul\": \"\\u0000\"}",
    ];
    for body in bodies {
        app.publish_raw(events::Event::TYPES[0], body).await;
    }
    let rows = eventually("three unreadable rows", || async {
        let rows = operator::list(&app.settings, true).await.unwrap();
        (rows.len() == 3).then_some(rows)
    })
    .await;
    for row in rows {
        let (shown, text) = app.cli(&["failed", "show", &row.id.to_string()]).await;
        assert!(shown, "{text}");
        assert!(
            !text.contains("SECRET"),
            "mailer failed show prints a token: {text}"
        );
    }
}
