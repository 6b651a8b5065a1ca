use std::time::Duration;

use jsonwebtoken::{Algorithm, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    Options, PASSWORD, client, errors, registration, spawn_app, spawn_with, unique_email,
};

const BAD_TOKEN: &str = "Invalid authentication. Could not decode token.";

#[tokio::test]
async fn conduit_flow_register_login_me_update_me() {
    let app = spawn_app().await;
    let email = unique_email();
    let mut body = registration(&email, PASSWORD);
    body["user"]["username"] = json!("jacob");
    assert_eq!(app.register(&body).await.status(), StatusCode::CREATED);

    let login = app.login(&email, PASSWORD).await;
    assert_eq!(login.status(), StatusCode::OK);
    let login: Value = login.json().await.unwrap();
    let token = login["user"]["token"].as_str().unwrap().to_string();
    for field in [
        "email",
        "username",
        "bio",
        "image",
        "token",
        "refresh_token",
    ] {
        assert!(
            login["user"].get(field).is_some(),
            "login lacks {field}: {login}"
        );
    }

    let me: Value = app.current_user(&token).await.json().await.unwrap();
    assert_eq!(me["user"]["email"], email);
    assert_eq!(me["user"]["username"], "jacob");
    assert_eq!(me["user"]["bio"], Value::Null);
    assert_eq!(me["user"]["image"], Value::Null);
    assert!(me["user"]["token"].is_string());

    let new_email = unique_email();
    let updated = app
        .update_user(&token, json!({ "email": new_email, "bio": "I like <b>tags</b>", "image": "https://example.com/a.png" }))
        .await;
    assert_eq!(updated.status(), StatusCode::OK);
    let updated: Value = updated.json().await.unwrap();
    assert_eq!(updated["user"]["email"], new_email);
    assert_eq!(updated["user"]["bio"], "I like <b>tags</b>");
    assert_eq!(updated["user"]["verified"], false);

    // The token from before the update still works: tokens are keyed on the user id.
    let me = app.current_user(&token).await;
    assert_eq!(me.status(), StatusCode::OK);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["user"]["email"], new_email);
    assert_eq!(me["user"]["image"], "https://example.com/a.png");

    // Null clears a nullable field; the old address no longer logs in, the new one does.
    let cleared: Value = app
        .update_user(&token, json!({ "bio": null }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cleared["user"]["bio"], Value::Null);
    assert_eq!(
        app.login(&email, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login(&new_email, PASSWORD).await.status(),
        StatusCode::OK
    );
    // The change of address asked for a new confirmation.
    assert_eq!(
        app.outbox_events("email-confirmation-requested")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn wrong_password_and_unknown_email_look_the_same() {
    let app = spawn_app().await;
    let (email, _) = app.register_user().await;
    let wrong = app.login(&email, "wrong-password-1").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let wrong: Value = wrong.json().await.unwrap();
    assert_eq!(
        wrong,
        json!({ "errors": { "credentials": ["Incorrect email or password."] } })
    );

    let unknown = app.login("nobody@example.com", "wrong-password-1").await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.json::<Value>().await.unwrap(), wrong);

    let missing = app
        .post("/api/users/login", &json!({ "user": { "email": email } }))
        .await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        errors(missing).await["password"][0],
        "This field is required."
    );
}

#[tokio::test]
async fn deactivated_accounts_are_refused() {
    let app = spawn_app().await;
    let (email, body) = app.register_user().await;
    let token = body["user"]["token"].as_str().unwrap().to_string();
    let refresh = body["user"]["refresh_token"].as_str().unwrap().to_string();
    let mut conn = app.conn().await;
    testkit::execute_with(
        &mut conn,
        "UPDATE users SET active = false, token_version = token_version + 1 WHERE email = $1",
        &email,
    )
    .await
    .unwrap();

    // The right password gets the wrong-password answer: no oracle (see deactivated.rs).
    let login = app.login(&email, PASSWORD).await;
    assert_eq!(login.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        errors(login).await["credentials"][0],
        "Incorrect email or password."
    );
    assert_eq!(
        app.current_user(&token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let refreshed = app
        .post(
            "/api/users/token/refresh",
            &json!({ "refresh_token": refresh }),
        )
        .await;
    assert_eq!(refreshed.status(), StatusCode::FORBIDDEN);

    // An inactive user whose token version did not move is still refused by the extractor.
    testkit::execute_with(
        &mut conn,
        "UPDATE users SET active = true WHERE email = $1",
        &email,
    )
    .await
    .unwrap();
    let fresh: Value = app.login(&email, PASSWORD).await.json().await.unwrap();
    testkit::execute_with(
        &mut conn,
        "UPDATE users SET active = false WHERE email = $1",
        &email,
    )
    .await
    .unwrap();
    let me = app
        .current_user(fresh["user"]["token"].as_str().unwrap())
        .await;
    assert_eq!(me.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn hostile_tokens_are_rejected() {
    let app = spawn_app().await;
    let (_, body) = app.register_user().await;
    let good = body["user"]["token"].as_str().unwrap().to_string();
    let user_id = body["user"]["id"].as_str().unwrap().to_string();
    assert_eq!(app.current_user(&good).await.status(), StatusCode::OK);

    let kid = app.kid().await;
    let now = chrono::Utc::now().timestamp();
    let sid = crate::helpers::claims_of(&good)["sid"].clone();
    let claims = |overrides: Value| {
        let mut base = json!({
            "iss": "http://localhost:8080", "aud": "accounts-api", "sub": user_id,
            "iat": now, "exp": now + 600, "jti": uuid::Uuid::new_v4(), "typ": "access", "ver": 0,
            "sid": sid, "auth_time": now,
        });
        for (k, v) in overrides.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.clone());
    // Our own signature over valid claims works, which proves the cases below fail for their reason.
    assert_eq!(
        app.current_user(&app.sign(header.clone(), &claims(json!({}))))
            .await
            .status(),
        StatusCode::OK
    );

    let mut tampered = good.clone();
    let payload_start = tampered.find('.').unwrap() + 1;
    tampered.replace_range(payload_start..payload_start + 4, "eyJz");
    let (head, _) = good.rsplit_once('.').unwrap();
    let unsigned_header =
        base64url(&json!({ "alg": "none", "typ": "JWT", "kid": kid }).to_string());
    let payload = good.split('.').nth(1).unwrap();
    let alg_none = format!("{unsigned_header}.{payload}.");
    let cases = [
        ("tampered", tampered),
        ("signature stripped", format!("{head}.")),
        ("alg none", alg_none),
        (
            "expired",
            app.sign(
                header.clone(),
                &claims(json!({ "iat": now - 3600, "exp": now - 1800 })),
            ),
        ),
        (
            "wrong audience",
            app.sign(header.clone(), &claims(json!({ "aud": "someone-else" }))),
        ),
        (
            "wrong issuer",
            app.sign(
                header.clone(),
                &claims(json!({ "iss": "https://evil.example" })),
            ),
        ),
        (
            "string exp",
            app.sign(
                header.clone(),
                &claims(json!({ "exp": (now + 600).to_string() })),
            ),
        ),
        (
            "wrong typ",
            app.sign(
                header.clone(),
                &claims(json!({ "typ": "email-confirmation" })),
            ),
        ),
        (
            "confirmation audience",
            app.sign(
                header.clone(),
                &claims(
                    json!({ "aud": "accounts:email-confirmation", "typ": "email-confirmation" }),
                ),
            ),
        ),
        (
            "old token version",
            app.sign(header.clone(), &claims(json!({ "ver": 7 }))),
        ),
        (
            "no exp",
            app.sign(header.clone(), &without(claims(json!({})), "exp")),
        ),
        ("unknown kid", {
            let mut h = header.clone();
            h.kid = Some("not-a-key".into());
            app.sign(h, &claims(json!({})))
        }),
        ("garbage", "not.a.jwt".to_string()),
        ("hostile", "'; DROP TABLE users; --\u{202e}".to_string()),
    ];
    for (name, token) in cases {
        let response = app
            .client
            .get(app.url("/api/user"))
            .header("Authorization", format!("Token {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name}");
        assert_eq!(errors(response).await["token"][0], BAD_TOKEN, "{name}");
    }

    let none = app.client.get(app.url("/api/user")).send().await.unwrap();
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        errors(none).await["token"][0],
        "Authentication credentials were not provided."
    );
    let wrong_scheme = app
        .client
        .get(app.url("/api/user"))
        .header("Authorization", format!("Basic {good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_scheme.status(), StatusCode::UNAUTHORIZED);
}

fn without(mut value: Value, key: &str) -> Value {
    value.as_object_mut().unwrap().remove(key);
    value
}

fn base64url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[tokio::test]
async fn jwks_publishes_the_signing_key() {
    let app = spawn_app().await;
    let jwks = app.get_json("/.well-known/jwks.json").await;
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    // A third party can verify our token with nothing but the JWKS.
    let (_, body) = app.register_user().await;
    let token = body["user"]["token"].as_str().unwrap();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.clone()).unwrap();
    let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
    validation.set_audience(&["accounts-api"]);
    let data = jsonwebtoken::decode::<Value>(token, &decoding, &validation).unwrap();
    assert_eq!(data.claims["sub"], body["user"]["id"]);
    assert_eq!(data.header.kid.as_deref(), key["kid"].as_str());
    for claim in ["iss", "aud", "sub", "exp", "iat", "jti", "typ"] {
        assert!(data.claims.get(claim).is_some(), "missing {claim}");
    }
}

#[tokio::test]
async fn a_full_hashing_queue_answers_429_at_once() {
    let app = spawn_with(Options {
        vars: vec![
            ("ACCOUNTS_BCRYPT_COST", "10".into()),
            ("ACCOUNTS_HASH_CONCURRENCY", "1".into()),
            ("ACCOUNTS_HASH_QUEUE", "1".into()),
        ],
        ..Options::default()
    })
    .await;
    let (email, _) = app.register_user().await;
    let logins = (0..12).map(|_| app.login(&email, PASSWORD));
    let responses = futures_util::future::join_all(logins).await;
    let throttled: Vec<_> = responses
        .iter()
        .filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    let ok = responses
        .iter()
        .filter(|r| r.status() == StatusCode::OK)
        .count();
    assert!(ok >= 1, "some logins must get through");
    assert!(
        !throttled.is_empty(),
        "a queue of one must turn some of 12 away"
    );
    for response in throttled {
        let retry_after: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry_after));
    }
    // Token-authenticated requests need no hashing and are never throttled by it.
    let (_, body) = app.register_user().await;
    let token = body["user"]["token"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(app.current_user(&token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_token_request_is_served_while_every_hashing_worker_is_busy() {
    let app = spawn_with(Options {
        vars: vec![
            // About a tenth of a second a hash: the logins below keep every worker busy for a
            // second or more, and more of them wait than the database pool has connections.
            ("ACCOUNTS_BCRYPT_COST", "11".into()),
            ("ACCOUNTS_HASH_QUEUE", "64".into()),
        ],
        ..Options::default()
    })
    .await;
    let (email, body) = app.register_user().await;
    let token = body["user"]["token"].as_str().unwrap().to_string();
    assert_eq!(app.current_user(&token).await.status(), StatusCode::OK);

    // From distinct client addresses: more than a few parallel attempts from one client on one
    // account are refused by the login throttle before they reach bcrypt.
    // 18: more than the 16 pooled connections, fewer than the 20 parallel attempts the
    // per-account throttle admits.
    let logins = futures_util::future::join_all((0..18).map(|n| {
        let client = client(Some(std::net::IpAddr::from([127, 0, 0, 2 + n as u8])));
        let (url, email) = (app.url("/api/users/login"), email.clone());
        async move {
            let body = json!({ "user": { "email": email, "password": PASSWORD } });
            let response = client.post(url).json(&body).send().await.unwrap();
            (response.status(), std::time::Instant::now())
        }
    }));
    let reads = async {
        // Let the logins reach the workers, then read the profile while they hash.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut slowest = Duration::ZERO;
        for _ in 0..20 {
            let started = std::time::Instant::now();
            assert_eq!(app.current_user(&token).await.status(), StatusCode::OK);
            slowest = slowest.max(started.elapsed());
        }
        (slowest, std::time::Instant::now())
    };
    let (logins, (slowest, reads_done)) = futures_util::join!(logins, reads);
    assert!(
        logins.iter().all(|(status, _)| *status == StatusCode::OK),
        "every login is queued and served, none turned away: {logins:?}"
    );
    let last_login = logins.iter().map(|(_, at)| *at).max().unwrap();
    assert!(
        reads_done < last_login,
        "the reads must have run while every worker was hashing"
    );
    assert!(
        slowest < Duration::from_millis(500),
        "a token request waited {slowest:?} behind hashing"
    );
}
