//! Second factors (TOTP and recovery codes), attacked by someone who already holds the password
//! or a stolen access token: replays, parallel races, guessing, locking the owner out, stale
//! sessions, hostile bodies and a database dump. Codes come from the real `oathtool`, at chosen
//! steps, so no test waits for a 30 s window.

use std::{net::IpAddr, time::Duration};

use diesel_async::RunQueryDsl;
use futures_util::future::join_all;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    Options, PASSWORD, TestApp, base32_decode, claims_of, client, count, errors, registration,
    spawn_app, spawn_with, sql, status_counts, token_pair, totp_code_at_step, totp_step,
    unique_email,
};

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const NEW_PASSWORD: &str = "n3w-secret-pass";

const BAD_CODE: &str = "The code is invalid or expired.";
const CODE_NEEDED: &str = "Enter a code from your authenticator app or a recovery code.";
const SIGN_IN_AGAIN: &str = "Sign in again to change this.";
const REAUTHENTICATE: &str = "Enter your current password to change this.";
const WRONG_CURRENT_PASSWORD: &str = "Your current password was entered incorrectly.";
const UNVERIFIED_ADDRESS: &str = "Confirm your email address before adding a second factor.";
const NOTHING_PENDING: &str = "No authenticator setup is in progress in this session: start it again (POST /api/user/mfa/totp).";
const ONE_FACTOR: &str = "Give one of a code, a recovery code or a passkey credential.";
const REQUIRED: &str = "This field is required.";
const TOO_LARGE: &str = "The request body is too large.";

const TOTP: &str = "/api/user/mfa/totp";
const CONFIRM: &str = "/api/user/mfa/totp/confirm";
const RECOVERY_CODES: &str = "/api/user/mfa/recovery-codes";
const STATUS: &str = "/api/user/mfa";
const LOGIN_MFA: &str = "/api/users/login/mfa";

/// An app that believes `X-Forwarded-For` from 127.0.0.1, so one test plays many clients.
async fn spawn_behind_proxy() -> TestApp {
    spawn_with(Options {
        vars: vec![
            ("ACCOUNTS_TRUSTED_PROXIES", "127.0.0.1/32".into()),
            ("ACCOUNTS_HASH_QUEUE", "256".into()),
        ],
        ..Options::default()
    })
    .await
}

/// An app where no session is ever fresh: every security setting needs proof again.
async fn spawn_stale() -> TestApp {
    spawn_with(Options {
        vars: vec![("ACCOUNTS_REAUTH_SECONDS", "0".into())],
        ..Options::default()
    })
    .await
}

/// A request that claims to come from `forwarded` (believed behind the trusted proxy) and `agent`.
fn post_as(
    app: &TestApp,
    path: &str,
    forwarded: Option<&str>,
    agent: &str,
) -> reqwest::RequestBuilder {
    let request = app.client.post(app.url(path)).header("User-Agent", agent);
    match forwarded {
        Some(addr) => request.header("X-Forwarded-For", addr),
        None => request,
    }
}

/// Sends `body` as raw bytes with a JSON content type.
async fn send_raw(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: String,
) -> Response {
    let mut request = app
        .client
        .request(method, app.url(path))
        .header("Content-Type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Token {token}"));
    }
    request.send().await.expect("request")
}

async fn body_of(response: Response) -> Value {
    response.json().await.expect("a JSON body")
}

/// An account with TOTP on, as its owner left it.
pub(crate) struct Owner {
    pub(crate) email: String,
    pub(crate) id: String,
    pub(crate) secret: String,
    /// The confirming session's new access token (aal2) and its refresh token.
    pub(crate) access: String,
    pub(crate) refresh: String,
    pub(crate) recovery_codes: Vec<String>,
    /// The step the app was at when TOTP was confirmed with the previous step's code: `code(0)`
    /// stays accepted for at least 30 s after, `code(1)` for at least 60 s.
    pub(crate) base: i64,
}

impl Owner {
    pub(crate) fn code(&self, steps_after_base: i64) -> String {
        totp_code_at_step(&self.secret, self.base + steps_after_base)
    }

    /// Six digits that are no code of any step the app could accept during the test.
    fn wrong_code(&self) -> String {
        let near: Vec<String> = (-3..=4).map(|k| self.code(k)).collect();
        (0..10u32)
            .map(|d| d.to_string().repeat(6))
            .find(|candidate| !near.contains(candidate))
            .expect("ten candidates, at most eight taken")
    }
}

/// The current step, after waiting out the end of a step that has under 3 s left: the previous
/// step's code must still be accepted when the request reaches the app.
async fn step_with_room() -> i64 {
    let into_step = chrono::Utc::now().timestamp_millis().rem_euclid(30_000);
    let left = 30_000 - into_step;
    if left < 3_000 {
        let wait = u64::try_from(left + 100).expect("positive");
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    totp_step()
}

async fn enrol(app: &TestApp, access: &str, step_up: &Value) -> Response {
    app.post_authed(TOTP, access, step_up).await
}

async fn confirm(app: &TestApp, access: &str, code: &str) -> Response {
    app.post_authed(CONFIRM, access, &json!({ "code": code }))
        .await
}

async fn status(app: &TestApp, access: &str) -> Value {
    let response = app.send_authed(Method::GET, STATUS, access, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    body_of(response).await
}

async fn user_id(app: &TestApp, access: &str) -> String {
    let me = body_of(app.current_user(access).await).await;
    me["user"]["id"].as_str().expect("an id").to_string()
}

/// Enrols TOTP with `step_up` as the body and confirms it with the previous step's code.
async fn enable_totp(
    app: &TestApp,
    email: &str,
    (access, refresh): (String, String),
    step_up: &Value,
) -> Owner {
    let id = user_id(app, &access).await;
    let enrolled = enrol(app, &access, step_up).await;
    assert_eq!(enrolled.status(), StatusCode::OK);
    let enrolled = body_of(enrolled).await;
    let secret = enrolled["totp"]["secret"]
        .as_str()
        .expect("a secret")
        .to_string();
    let base = step_with_room().await;
    let confirmed = confirm(app, &access, &totp_code_at_step(&secret, base - 1)).await;
    assert_eq!(confirmed.status(), StatusCode::OK);
    let confirmed = body_of(confirmed).await;
    let recovery_codes: Vec<String> = confirmed["recovery_codes"]
        .as_array()
        .expect("recovery codes")
        .iter()
        .map(|c| c.as_str().expect("a code").to_string())
        .collect();
    Owner {
        email: email.to_string(),
        id,
        secret,
        access: confirmed["token"]
            .as_str()
            .expect("a new token")
            .to_string(),
        refresh,
        recovery_codes,
        base,
    }
}

/// A verified account, registered from this test's default client, with TOTP on.
pub(crate) async fn mfa_owner(app: &TestApp) -> Owner {
    let (email, body) = app.register_user().await;
    app.verify_address(&email).await;
    enable_totp(app, &email, token_pair(&body), &json!({})).await
}

/// A verified account registered from `forwarded` with `agent` (its first device), TOTP on.
async fn mfa_owner_from(app: &TestApp, forwarded: &str, agent: &str) -> Owner {
    let email = unique_email();
    let registered = post_as(app, "/api/users", Some(forwarded), agent)
        .json(&registration(&email, PASSWORD))
        .send()
        .await
        .expect("request");
    assert_eq!(registered.status(), StatusCode::CREATED);
    let tokens = token_pair(&body_of(registered).await);
    app.verify_address(&email).await;
    enable_totp(app, &email, tokens, &json!({})).await
}

async fn login_from(
    app: &TestApp,
    forwarded: Option<&str>,
    agent: &str,
    email: &str,
    password: &str,
) -> Response {
    post_as(app, "/api/users/login", forwarded, agent)
        .json(&json!({ "user": { "email": email, "password": password } }))
        .send()
        .await
        .expect("request")
}

/// A password login that must answer with a second-factor challenge; the challenge.
async fn challenge_from(
    app: &TestApp,
    forwarded: Option<&str>,
    agent: &str,
    email: &str,
    password: &str,
) -> String {
    let login = login_from(app, forwarded, agent, email, password).await;
    assert_eq!(login.status(), StatusCode::OK);
    let body = body_of(login).await;
    assert!(
        body.get("user").is_none(),
        "no tokens before the second factor: {body}"
    );
    body["mfa"]["challenge"]
        .as_str()
        .expect("a challenge")
        .to_string()
}

async fn challenge(app: &TestApp, email: &str) -> String {
    challenge_from(app, None, FIREFOX, email, PASSWORD).await
}

async fn second_factor_from(
    app: &TestApp,
    forwarded: Option<&str>,
    agent: &str,
    body: &Value,
) -> Response {
    post_as(app, LOGIN_MFA, forwarded, agent)
        .json(body)
        .send()
        .await
        .expect("request")
}

async fn with_code(app: &TestApp, challenge: &str, code: &str) -> Response {
    second_factor_from(
        app,
        None,
        FIREFOX,
        &json!({ "challenge": challenge, "code": code }),
    )
    .await
}

/// Asserts a 401 whose envelope names `field` with `message`.
async fn assert_refused(response: Response, field: &str, message: &str) {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        body_of(response).await,
        json!({ "errors": { field: [message] } })
    );
}

/// Asserts a 401 on the challenge (unknown, expired, spent or void).
async fn assert_bad_challenge(response: Response) {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let errors = errors(response).await;
    assert!(errors["challenge"][0].is_string(), "{errors}");
    assert_eq!(errors.as_object().map(|o| o.len()), Some(1), "{errors}");
}

/// Asserts a 429 with Retry-After and the `throttle` field.
async fn assert_throttled(response: Response) {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=900).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert!(errors(response).await["throttle"][0].is_string());
}

async fn assert_signed_in_with_two_factors(response: Response) -> (String, String) {
    assert_eq!(response.status(), StatusCode::OK);
    let tokens = token_pair(&body_of(response).await);
    let claims = claims_of(&tokens.0);
    assert_eq!(claims["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(claims["aal"], "aal2");
    tokens
}

#[tokio::test]
async fn a_second_factor_login_is_two_steps_and_its_session_stays_aal2_through_refresh() {
    let app = spawn_app().await;
    let owner = mfa_owner(&app).await;
    assert_eq!(owner.recovery_codes.len(), 10);
    let enabled = app.outbox_events("mfa-enabled").await;
    assert_eq!(enabled.len(), 1);
    assert_eq!(enabled[0]["method"], "totp");
    assert_eq!(enabled[0]["email"], owner.email.as_str());

    let login = login_from(&app, None, FIREFOX, &owner.email, PASSWORD).await;
    assert_eq!(login.status(), StatusCode::OK);
    let login = body_of(login).await;
    let keys: Vec<&String> = login.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["mfa"], "no tokens, no user: {login}");
    assert_eq!(login["mfa"]["methods"], json!(["totp", "recovery_code"]));
    let challenge = login["mfa"]["challenge"].as_str().unwrap();
    assert!(challenge.len() >= 32, "{challenge}");

    let signed_in = with_code(&app, challenge, &owner.code(0)).await;
    let (access, refresh) = assert_signed_in_with_two_factors(signed_in).await;
    let sid = claims_of(&access)["sid"].clone();

    let listed = body_of(
        app.send_authed(Method::GET, "/api/user/sessions", &access, None)
            .await,
    )
    .await;
    let current: Vec<&Value> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["current"] == true)
        .collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], sid);
    assert_eq!(current[0]["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(current[0]["aal"], "aal2");

    let refreshed = app.refresh(&refresh).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let (renewed, _) = token_pair(&body_of(refreshed).await);
    let claims = claims_of(&renewed);
    assert_eq!(claims["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(claims["aal"], "aal2");
    assert_eq!(claims["sid"], sid);
    // The contract promises the challenge's whole lifetime.
    assert_eq!(login["mfa"]["expires_in"], 300, "{login}");
}

#[tokio::test]
async fn the_enrolment_code_cannot_be_replayed_as_the_first_login_code() {
    let app = spawn_app().await;
    let owner = mfa_owner(&app).await;
    let challenge = challenge(&app, &owner.email).await;
    // The code that confirmed the enrolment (the previous step's) is spent.
    assert_refused(
        with_code(&app, &challenge, &owner.code(-1)).await,
        "code",
        BAD_CODE,
    )
    .await;
    // The refusal left the challenge alive: the next code completes it.
    assert_signed_in_with_two_factors(with_code(&app, &challenge, &owner.code(0)).await).await;
}

#[tokio::test]
async fn a_totp_code_signs_in_once_even_from_ten_parallel_challenges() {
    let app = spawn_behind_proxy().await;
    for trial in 0..3u8 {
        let owner = mfa_owner(&app).await;
        // Each request from its own address: only the replay guard may refuse them.
        let first =
            challenge_from(&app, Some("198.51.100.1"), FIREFOX, &owner.email, PASSWORD).await;
        let used = second_factor_from(
            &app,
            Some("198.51.100.1"),
            FIREFOX,
            &json!({ "challenge": first, "code": owner.code(0) }),
        )
        .await;
        assert_signed_in_with_two_factors(used).await;
        let second =
            challenge_from(&app, Some("198.51.100.2"), FIREFOX, &owner.email, PASSWORD).await;
        let replayed = second_factor_from(
            &app,
            Some("198.51.100.2"),
            FIREFOX,
            &json!({ "challenge": second, "code": owner.code(0) }),
        )
        .await;
        assert_refused(replayed, "code", BAD_CODE).await;

        let addresses: Vec<String> = (0..10).map(|i| format!("198.51.100.{}", 10 + i)).collect();
        let mut challenges = Vec::new();
        for addr in &addresses {
            challenges.push(
                challenge_from(&app, Some(addr.as_str()), FIREFOX, &owner.email, PASSWORD).await,
            );
        }
        let code = owner.code(1);
        let attempts = addresses.iter().zip(&challenges).map(|(addr, challenge)| {
            let body = json!({ "challenge": challenge, "code": code });
            let app = &app;
            async move { second_factor_from(app, Some(addr.as_str()), FIREFOX, &body).await }
        });
        let responses = join_all(attempts).await;
        let statuses: Vec<StatusCode> = responses.iter().map(Response::status).collect();
        let counts = status_counts(&statuses);
        // One success; the others are refused, as wrong codes (401) or, once their network has
        // failed 5 times, unchecked (429).
        assert_eq!(counts.get(&200), Some(&1), "trial {trial}: {counts:?}");
        let refused = counts.get(&401).unwrap_or(&0) + counts.get(&429).unwrap_or(&0);
        assert_eq!(refused, 9, "trial {trial}: {counts:?}");
        for response in responses {
            if response.status() == StatusCode::UNAUTHORIZED {
                assert_eq!(errors(response).await["code"][0], BAD_CODE, "trial {trial}");
            }
        }
    }
}

#[tokio::test]
async fn a_recovery_code_signs_in_once_even_from_twenty_parallel_challenges() {
    let app = spawn_behind_proxy().await;
    // The owner's own network and browser: a known device, so no per-account delay muddles the count.
    let owner = mfa_owner_from(&app, "203.0.113.10", FIREFOX).await;
    let addresses: Vec<String> = (0..20).map(|i| format!("203.0.113.{}", 20 + i)).collect();
    let mut challenges = Vec::new();
    for addr in &addresses {
        challenges
            .push(challenge_from(&app, Some(addr.as_str()), FIREFOX, &owner.email, PASSWORD).await);
    }
    let recovery_code = &owner.recovery_codes[0];
    let attempts = addresses.iter().zip(&challenges).map(|(addr, challenge)| {
        let body = json!({ "challenge": challenge, "recovery_code": recovery_code });
        let app = &app;
        async move { second_factor_from(app, Some(addr.as_str()), FIREFOX, &body).await }
    });
    let responses = join_all(attempts).await;
    let statuses: Vec<StatusCode> = responses.iter().map(Response::status).collect();
    let counts = status_counts(&statuses);
    // One success; the others are refused, as wrong codes (401) or, once the network has failed
    // 5 times, unchecked (429).
    assert_eq!(counts.get(&200), Some(&1), "{counts:?}");
    let refused = counts.get(&401).unwrap_or(&0) + counts.get(&429).unwrap_or(&0);
    assert_eq!(refused, 19, "{counts:?}");
    let mut winner = None;
    for response in responses {
        match response.status() {
            StatusCode::OK => winner = Some(assert_signed_in_with_two_factors(response).await),
            StatusCode::TOO_MANY_REQUESTS => assert_throttled(response).await,
            _ => assert_eq!(
                body_of(response).await,
                json!({ "errors": { "recovery_code": [BAD_CODE] } })
            ),
        }
    }
    let (access, _) = winner.expect("one sign-in");

    let used = app.outbox_events("recovery-code-used").await;
    assert_eq!(used.len(), 1, "{used:?}");
    assert_eq!(used[0]["codes_left"], 9);
    assert_eq!(used[0]["email"], owner.email.as_str());
    assert_eq!(
        status(&app, &access).await,
        json!({ "mfa": { "totp": true, "passkeys": 0, "recovery_codes_left": 9 } })
    );
}

#[tokio::test]
async fn five_wrong_codes_lock_the_client_even_on_a_fresh_challenge() {
    let app = spawn_app().await;
    let owner = mfa_owner(&app).await;
    let first = challenge(&app, &owner.email).await;
    for _ in 0..5 {
        assert_refused(
            with_code(&app, &first, &owner.wrong_code()).await,
            "code",
            BAD_CODE,
        )
        .await;
    }
    // Someone knows the password: the owner is told once, from the third failure.
    let mailed = app.outbox_events("mfa-failures").await;
    assert_eq!(mailed.len(), 1, "{mailed:?}");
    assert_eq!(mailed[0]["failures"], 3);

    // A fresh password login (the password is right) does not reset the count.
    let fresh = challenge(&app, &owner.email).await;
    assert_throttled(with_code(&app, &fresh, &owner.code(0)).await).await;
    assert_throttled(with_code(&app, &first, &owner.code(0)).await).await;
    assert_eq!(
        count(
            &app,
            "SELECT count(*) AS n FROM mfa_challenges WHERE spent_at IS NOT NULL"
        )
        .await,
        0
    );

    // The 429 checked nothing and spent nothing: from another client, the same code works.
    let elsewhere = client(Some(IpAddr::from([127, 0, 3, 7])));
    let signed_in = elsewhere
        .post(app.url(LOGIN_MFA))
        .json(&json!({ "challenge": fresh, "code": owner.code(0) }))
        .send()
        .await
        .unwrap();
    assert_signed_in_with_two_factors(signed_in).await;
}

#[tokio::test]
async fn an_intruder_with_the_password_cannot_lock_the_owner_out_of_a_known_device() {
    let app = spawn_behind_proxy().await;
    let owner = mfa_owner_from(&app, "203.0.113.5", FIREFOX).await;
    // The intruder even copies the owner's browser, but not the owner's network.
    let mut statuses = Vec::new();
    for i in 0..50 {
        let addr = format!("198.18.{i}.7");
        let challenge =
            challenge_from(&app, Some(addr.as_str()), FIREFOX, &owner.email, PASSWORD).await;
        let guess = second_factor_from(
            &app,
            Some(addr.as_str()),
            FIREFOX,
            &json!({ "challenge": challenge, "code": owner.wrong_code() }),
        )
        .await;
        statuses.push(guess.status());
    }
    let counts = status_counts(&statuses);
    assert!(
        statuses[..10]
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED),
        "10 free failures: {statuses:?}"
    );
    let checked = counts.get(&401).copied().unwrap_or(0);
    // Then one guess per delay (1 s, 2 s, 4 s, ...) while the burst lasts.
    assert!((10..=14).contains(&checked), "{counts:?}");
    assert_eq!(
        checked + counts.get(&429).copied().unwrap_or(0),
        50,
        "{counts:?}"
    );

    // The owner, from the network and browser that registered, signs in at once.
    let mine = challenge_from(&app, Some("203.0.113.9"), FIREFOX, &owner.email, PASSWORD).await;
    let signed_in = second_factor_from(
        &app,
        Some("203.0.113.9"),
        FIREFOX,
        &json!({ "challenge": mine, "code": owner.code(0) }),
    )
    .await;
    assert_signed_in_with_two_factors(signed_in).await;
    assert_eq!(app.outbox_events("mfa-failures").await.len(), 1);
}

#[tokio::test]
async fn a_password_reset_voids_challenges_taken_before_it_and_clears_the_failures() {
    let app = spawn_app().await;
    let owner = mfa_owner(&app).await;
    let intruders = challenge(&app, &owner.email).await;
    for _ in 0..5 {
        let guess = with_code(&app, &intruders, &owner.wrong_code()).await;
        assert_eq!(guess.status(), StatusCode::UNAUTHORIZED);
    }
    let asked = app
        .post(
            "/api/users/password/forgot",
            &json!({ "user": { "email": owner.email } }),
        )
        .await;
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    let token = app
        .link_token("password-reset-requested", "reset_url")
        .await;
    let reset = app
        .post(
            "/api/users/password/reset",
            &json!({ "token": token, "password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD }),
        )
        .await;
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);

    // A valid code does not revive the challenge the old password earned.
    assert_bad_challenge(with_code(&app, &intruders, &owner.code(0)).await).await;
    assert_eq!(
        login_from(&app, None, FIREFOX, &owner.email, PASSWORD)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // The reset cleared the failures that locked this client: the owner signs in from it.
    let owners = challenge_from(&app, None, FIREFOX, &owner.email, NEW_PASSWORD).await;
    assert_signed_in_with_two_factors(with_code(&app, &owners, &owner.code(0)).await).await;
}

#[tokio::test]
async fn a_password_change_voids_challenges_taken_before_it() {
    let app = spawn_app().await;
    let owner = mfa_owner(&app).await;
    let intruders = challenge(&app, &owner.email).await;
    // The owner's session is fresh and aal2: the current password is enough.
    let changed = app
        .update_user(
            &owner.access,
            json!({ "password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD, "current_password": PASSWORD }),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    let (access, _) = token_pair(&body_of(changed).await);
    assert_eq!(claims_of(&access)["aal"], "aal2", "as strong as before");

    assert_bad_challenge(with_code(&app, &intruders, &owner.code(0)).await).await;
    let owners = challenge_from(&app, None, FIREFOX, &owner.email, NEW_PASSWORD).await;
    assert_signed_in_with_two_factors(with_code(&app, &owners, &owner.code(0)).await).await;
}

#[tokio::test]
async fn a_stale_stolen_token_changes_no_second_factor_without_password_and_code() {
    let app = spawn_stale().await;
    let (email, body) = app.register_user().await;
    app.verify_address(&email).await;
    let (access, refresh) = token_pair(&body);
    let reauthenticate = json!({ "errors": { "reauthentication": [SIGN_IN_AGAIN] } });
    let bare = enrol(&app, &access, &json!({})).await;
    assert_eq!(bare.status(), StatusCode::FORBIDDEN);
    assert_eq!(body_of(bare).await, reauthenticate);
    let wrong = enrol(
        &app,
        &access,
        &json!({ "current_password": "wr0ng-passw0rd" }),
    )
    .await;
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body_of(wrong).await,
        json!({ "errors": { "current_password": [WRONG_CURRENT_PASSWORD] } })
    );
    // Without a second factor yet, the password is the whole proof.
    let owner = enable_totp(
        &app,
        &email,
        (access, refresh),
        &json!({ "current_password": PASSWORD }),
    )
    .await;

    // The confirming session is aal2, but not recent: a thief holding its token gets nowhere.
    let settings = [
        (Method::DELETE, TOTP),
        (Method::POST, RECOVERY_CODES),
        (Method::POST, TOTP),
    ];
    for (method, path) in &settings {
        let bare = app
            .send_authed(method.clone(), path, &owner.access, Some(&json!({})))
            .await;
        assert_eq!(bare.status(), StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(body_of(bare).await, reauthenticate, "{method} {path}");
        let password_only = app
            .send_authed(
                method.clone(),
                path,
                &owner.access,
                Some(&json!({ "current_password": PASSWORD })),
            )
            .await;
        assert_eq!(
            password_only.status(),
            StatusCode::BAD_REQUEST,
            "{method} {path}"
        );
        assert_eq!(
            body_of(password_only).await,
            json!({ "errors": { "code": [CODE_NEEDED] } }),
            "{method} {path}"
        );
    }
    let no_body = app
        .send_authed(Method::DELETE, TOTP, &owner.access, None)
        .await;
    assert_eq!(no_body.status(), StatusCode::FORBIDDEN);
    assert_eq!(body_of(no_body).await, reauthenticate);
    let wrong_code = app
        .send_authed(
            Method::POST,
            RECOVERY_CODES,
            &owner.access,
            Some(&json!({ "current_password": PASSWORD, "code": owner.wrong_code() })),
        )
        .await;
    assert_eq!(wrong_code.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body_of(wrong_code).await,
        json!({ "errors": { "code": [BAD_CODE] } })
    );

    // The email and the password need the code too.
    let new_email = unique_email();
    let bare = app
        .update_user(&owner.access, json!({ "email": new_email }))
        .await;
    assert_eq!(bare.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body_of(bare).await,
        json!({ "errors": { "current_password": [REAUTHENTICATE], "code": [CODE_NEEDED] } })
    );
    for change in [
        json!({ "email": new_email, "current_password": PASSWORD }),
        json!({ "password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD, "current_password": PASSWORD }),
    ] {
        let refused = app.update_user(&owner.access, change.clone()).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{change}");
        assert_eq!(
            body_of(refused).await,
            json!({ "errors": { "code": [CODE_NEEDED] } }),
            "{change}"
        );
    }
    let me = body_of(app.current_user(&owner.access).await).await;
    assert_eq!(me["user"]["email"], owner.email.as_str());
    assert_eq!(
        status(&app, &owner.access).await,
        json!({ "mfa": { "totp": true, "passkeys": 0, "recovery_codes_left": 10 } })
    );

    // With both, the owner gets through: a recovery code for the email, a TOTP code for removal.
    let moved = app
        .update_user(
            &owner.access,
            json!({ "email": new_email, "current_password": PASSWORD, "code": owner.recovery_codes[0] }),
        )
        .await;
    assert_eq!(moved.status(), StatusCode::OK);
    let removed = app
        .send_authed(
            Method::DELETE,
            TOTP,
            &owner.access,
            Some(&json!({ "current_password": PASSWORD, "code": owner.code(0) })),
        )
        .await;
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_recent_aal1_session_of_an_mfa_account_must_still_step_up() {
    let app = spawn_app().await;
    let owner = mfa_owner(&app).await;
    // A one-factor session that outlived the enrolment (a stolen aal1 token), refreshed so its
    // token says so; its auth_time is recent.
    sql(
        &app,
        &format!(
            "UPDATE sessions SET amr = ARRAY['pwd'] WHERE user_id = '{}'",
            owner.id
        ),
    )
    .await;
    let refreshed = app.refresh(&owner.refresh).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let (weak, _) = token_pair(&body_of(refreshed).await);
    assert_eq!(claims_of(&weak)["aal"], "aal1");

    let reauthenticate = json!({ "errors": { "reauthentication": [SIGN_IN_AGAIN] } });
    for (method, path) in [
        (Method::DELETE, TOTP),
        (Method::POST, RECOVERY_CODES),
        (Method::POST, TOTP),
    ] {
        let bare = app
            .send_authed(method.clone(), path, &weak, Some(&json!({})))
            .await;
        assert_eq!(bare.status(), StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(body_of(bare).await, reauthenticate, "{method} {path}");
    }
    let email = app
        .update_user(&weak, json!({ "email": unique_email() }))
        .await;
    assert_eq!(email.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body_of(email).await,
        json!({ "errors": { "current_password": [REAUTHENTICATE], "code": [CODE_NEEDED] } })
    );
    let password_only = app
        .post_authed(
            RECOVERY_CODES,
            &weak,
            &json!({ "current_password": PASSWORD }),
        )
        .await;
    assert_eq!(password_only.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body_of(password_only).await,
        json!({ "errors": { "code": [CODE_NEEDED] } })
    );
    let proven = app
        .post_authed(
            RECOVERY_CODES,
            &weak,
            &json!({ "current_password": PASSWORD, "code": owner.code(0) }),
        )
        .await;
    assert_eq!(proven.status(), StatusCode::OK);
    assert_eq!(
        body_of(proven).await["recovery_codes"]
            .as_array()
            .map(Vec::len),
        Some(10)
    );
}

#[tokio::test]
async fn a_challenge_takes_only_its_own_accounts_code_and_dies_spent_or_expired() {
    let app = spawn_app().await;
    let a = mfa_owner(&app).await;
    let b = mfa_owner(&app).await;

    let from_a = challenge(&app, &a.email).await;
    // B's valid code is no code of A's.
    assert_refused(with_code(&app, &from_a, &b.code(0)).await, "code", BAD_CODE).await;
    assert_signed_in_with_two_factors(with_code(&app, &from_a, &a.code(0)).await).await;
    // Spent by its success, whatever code comes next.
    assert_bad_challenge(with_code(&app, &from_a, &a.code(1)).await).await;
    assert_bad_challenge(
        second_factor_from(
            &app,
            None,
            FIREFOX,
            &json!({ "challenge": from_a, "recovery_code": a.recovery_codes[0] }),
        )
        .await,
    )
    .await;

    let expiring = challenge(&app, &a.email).await;
    sql(
        &app,
        &format!(
            "UPDATE mfa_challenges SET expires_at = now() - interval '1 second' \
             WHERE user_id = '{}' AND spent_at IS NULL",
            a.id
        ),
    )
    .await;
    assert_bad_challenge(with_code(&app, &expiring, &a.code(1)).await).await;
    assert_bad_challenge(with_code(&app, "not-a-challenge-at-all", &a.code(1)).await).await;

    // Neither refusal spent anything: A's next code and B's code still sign them in.
    let again = challenge(&app, &a.email).await;
    assert_signed_in_with_two_factors(with_code(&app, &again, &a.code(1)).await).await;
    let from_b = challenge(&app, &b.email).await;
    assert_signed_in_with_two_factors(with_code(&app, &from_b, &b.code(0)).await).await;
    assert_eq!(
        app.outbox_events("recovery-code-used").await.len(),
        0,
        "the spent challenge spent no recovery code"
    );
}

#[tokio::test]
async fn turning_totp_on_ends_every_other_session_and_hands_the_caller_an_aal2_token() {
    let app = spawn_app().await;
    let (email, body) = app.register_user().await;
    app.verify_address(&email).await;
    let (first_access, first_refresh) = token_pair(&body);
    let (other_access, other_refresh) = app.login_as(&email, FIREFOX).await;
    assert_eq!(
        app.current_user(&other_access).await.status(),
        StatusCode::OK
    );
    let first_sid = claims_of(&first_access)["sid"].clone();

    let owner = enable_totp(
        &app,
        &email,
        (first_access.clone(), first_refresh.clone()),
        &json!({}),
    )
    .await;
    assert_eq!(
        app.current_user(&other_access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&other_refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // The caller's own old token stopped too: the client uses the one it was handed.
    assert_eq!(
        app.current_user(&first_access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.current_user(&owner.access).await.status(),
        StatusCode::OK
    );
    let claims = claims_of(&owner.access);
    assert_eq!(claims["aal"], "aal2");
    assert_eq!(claims["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(claims["sid"], first_sid);

    let listed = body_of(
        app.send_authed(Method::GET, "/api/user/sessions", &owner.access, None)
            .await,
    )
    .await;
    let sessions = listed["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{listed}");
    assert_eq!(sessions[0]["current"], true);
    assert_eq!(sessions[0]["aal"], "aal2");

    let refreshed = app.refresh(&first_refresh).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let (renewed, _) = token_pair(&body_of(refreshed).await);
    assert_eq!(claims_of(&renewed)["aal"], "aal2");
    assert_eq!(claims_of(&renewed)["sid"], first_sid);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every row of every table of the app's database, as text (bytea shows as `\x` and hex).
async fn dump(app: &TestApp) -> String {
    #[derive(diesel::QueryableByName)]
    struct Table {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    #[derive(diesel::QueryableByName)]
    struct Rows {
        #[diesel(sql_type = diesel::sql_types::Text)]
        text: String,
    }
    let mut conn = app.conn().await;
    let tables: Vec<Table> = diesel::sql_query(
        "SELECT table_name::text AS name FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .load(&mut conn)
    .await
    .expect("tables");
    let mut dump = String::new();
    for table in tables {
        let rows: Rows = diesel::sql_query(format!(
            "SELECT coalesce(string_agg(t::text, E'\\n'), '') AS text FROM \"{}\" t",
            table.name
        ))
        .get_result(&mut conn)
        .await
        .expect("rows");
        dump.push_str(&rows.text);
        dump.push('\n');
    }
    dump
}

/// Asserts the base32 `secret` appears in `dump` in no form: as shown, in lower case, its bytes in
/// hex (bytea's text form) or base64.
fn assert_holds_no_secret(dump: &str, secret: &str) {
    let raw = base32_decode(secret);
    for needle in [
        secret.to_string(),
        secret.to_lowercase(),
        hex(&raw),
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &raw),
    ] {
        assert!(!dump.contains(&needle), "the dump holds {needle}");
    }
}

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_database_dump_holds_no_usable_totp_secret_or_recovery_code() {
    let app = spawn_app().await;
    let (email, body) = app.register_user().await;
    app.verify_address(&email).await;
    let (access, _) = token_pair(&body);
    // A pending secret is as secret as a confirmed one.
    let pending = body_of(enrol(&app, &access, &json!({})).await).await;
    let pending_secret = pending["totp"]["secret"].as_str().unwrap().to_string();
    assert_holds_no_secret(&dump(&app).await, &pending_secret);
    let owner = enable_totp(&app, &email, token_pair(&body), &json!({})).await;

    #[derive(diesel::QueryableByName)]
    struct Stored {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Bytea>)]
        secret: Option<Vec<u8>>,
    }
    let stored: Stored = diesel::sql_query(format!(
        "SELECT secret FROM totp_authenticators WHERE user_id = '{}'",
        owner.id
    ))
    .get_result(&mut app.conn().await)
    .await
    .expect("the authenticator");
    let stored = stored.secret.expect("a confirmed secret");
    let raw = base32_decode(&owner.secret);
    assert_eq!(raw.len(), 20, "160 bits");
    assert!(!holds(&stored, &raw));
    assert!(!holds(&stored, owner.secret.as_bytes()));

    let dump = dump(&app).await;
    assert_holds_no_secret(&dump, &owner.secret);
    for code in &owner.recovery_codes {
        for needle in [code.clone(), code.replace('-', "")] {
            assert!(!dump.contains(&needle), "the dump holds a recovery code");
        }
    }
}

#[tokio::test]
async fn hostile_bodies_on_the_second_factor_routes_get_the_error_envelope() {
    let app = spawn_stale().await;
    let (email, body) = app.register_user().await;
    app.verify_address(&email).await;
    let owner = enable_totp(
        &app,
        &email,
        token_pair(&body),
        &json!({ "current_password": PASSWORD }),
    )
    .await;
    let token = Some(owner.access.as_str());
    let routes = [
        (Method::POST, TOTP, token),
        (Method::POST, CONFIRM, token),
        (Method::DELETE, TOTP, token),
        (Method::POST, RECOVERY_CODES, token),
        (Method::POST, LOGIN_MFA, None),
    ];
    let malformed = [
        r#"{"code":"#.to_string(),
        "[]".to_string(),
        r#"{"code": 123456}"#.to_string(),
        r#"{"current_password": ["tutad1234"], "challenge": {}}"#.to_string(),
        r#"{"code": "123456", "is_admin": true}"#.to_string(),
    ];
    // Every refusal that went wrong, so one run names them all.
    let mut wrong = Vec::new();
    for (method, path, token) in &routes {
        for raw in &malformed {
            let response = send_raw(&app, method.clone(), path, *token, raw.clone()).await;
            let status = response.status();
            let body = response.text().await.expect("a body");
            let named_body = serde_json::from_str::<Value>(&body)
                .is_ok_and(|answer| answer["errors"]["body"][0].is_string());
            if status != StatusCode::BAD_REQUEST || !named_body {
                wrong.push(format!("{method} {path} {raw} -> {status} {body}"));
            }
        }
        let huge = json!({ "code": "1".repeat(100_000) }).to_string();
        let response = send_raw(&app, method.clone(), path, *token, huge).await;
        assert_eq!(
            response.status(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "{method} {path}"
        );
        assert_eq!(
            body_of(response).await,
            json!({ "errors": { "body": [TOO_LARGE] } }),
            "{method} {path}"
        );
    }
    assert!(
        wrong.is_empty(),
        "malformed bodies not refused with 400 body:\n{}",
        wrong.join("\n")
    );

    // NUL bytes are wrong values, never a 500.
    let nul_password = app
        .send_authed(
            Method::DELETE,
            TOTP,
            &owner.access,
            Some(&json!({ "current_password": "tutad\u{0}1234", "code": owner.wrong_code() })),
        )
        .await;
    assert_eq!(nul_password.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body_of(nul_password).await,
        json!({ "errors": { "current_password": [WRONG_CURRENT_PASSWORD] } })
    );
    let nul_code = app
        .post_authed(
            RECOVERY_CODES,
            &owner.access,
            &json!({ "current_password": PASSWORD, "code": "12345\u{0}" }),
        )
        .await;
    assert_eq!(nul_code.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body_of(nul_code).await,
        json!({ "errors": { "code": [BAD_CODE] } })
    );
    let nul_confirm = confirm(&app, &owner.access, "12345\u{0}").await;
    assert_eq!(nul_confirm.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body_of(nul_confirm).await,
        json!({ "errors": { "code": [NOTHING_PENDING] } })
    );

    let live = challenge(&app, &owner.email).await;
    let login_mfa = |body: Value| {
        let app = &app;
        async move { second_factor_from(app, None, FIREFOX, &body).await }
    };
    assert_refused(
        login_mfa(json!({ "challenge": live, "code": "\u{0}" })).await,
        "code",
        BAD_CODE,
    )
    .await;
    assert_refused(
        login_mfa(json!({ "challenge": live, "recovery_code": "abcd-\u{0}efg-hjkm" })).await,
        "recovery_code",
        BAD_CODE,
    )
    .await;
    assert_bad_challenge(login_mfa(json!({ "challenge": "\u{0}", "code": owner.code(0) })).await)
        .await;

    // Exactly one factor, and the challenge.
    let both = login_mfa(json!({
        "challenge": live, "code": owner.code(0), "recovery_code": owner.recovery_codes[0],
    }))
    .await;
    assert_eq!(both.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body_of(both).await,
        json!({ "errors": { "recovery_code": [ONE_FACTOR] } })
    );
    let neither = login_mfa(json!({ "challenge": live })).await;
    assert_eq!(neither.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body_of(neither).await,
        json!({ "errors": { "code": [REQUIRED] } })
    );
    let no_challenge = login_mfa(json!({ "code": owner.code(0) })).await;
    assert_eq!(no_challenge.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body_of(no_challenge).await,
        json!({ "errors": { "challenge": [REQUIRED] } })
    );
    // None of it spent the challenge or the code.
    assert_signed_in_with_two_factors(with_code(&app, &live, &owner.code(0)).await).await;
}

#[tokio::test]
async fn an_unverified_address_cannot_add_a_second_factor() {
    let app = spawn_app().await;
    let (email, body) = app.register_user().await;
    let (access, _) = token_pair(&body);
    let unverified = json!({ "errors": { "account": [UNVERIFIED_ADDRESS] } });
    let enrolled = enrol(&app, &access, &json!({})).await;
    assert_eq!(enrolled.status(), StatusCode::FORBIDDEN);
    assert_eq!(body_of(enrolled).await, unverified);
    let confirmed = confirm(&app, &access, "123456").await;
    assert_eq!(confirmed.status(), StatusCode::FORBIDDEN);
    assert_eq!(body_of(confirmed).await, unverified);
    assert_eq!(
        count(&app, "SELECT count(*) AS n FROM totp_authenticators").await,
        0
    );
    assert_eq!(
        status(&app, &access).await,
        json!({ "mfa": { "totp": false, "passkeys": 0, "recovery_codes_left": 0 } })
    );
    let login = body_of(app.login(&email, PASSWORD).await).await;
    assert!(login["user"]["token"].is_string(), "{login}");
}

#[tokio::test]
async fn removing_totp_mails_the_owner_drops_the_recovery_codes_and_login_is_one_step_again() {
    let app = spawn_app().await;
    let owner = mfa_owner(&app).await;
    let removed = app
        .send_authed(Method::DELETE, TOTP, &owner.access, None)
        .await;
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    let disabled = app.outbox_events("mfa-disabled").await;
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0]["email"], owner.email.as_str());
    assert_eq!(
        status(&app, &owner.access).await,
        json!({ "mfa": { "totp": false, "passkeys": 0, "recovery_codes_left": 0 } })
    );
    assert_eq!(
        count(
            &app,
            &format!(
                "SELECT count(*) AS n FROM recovery_codes WHERE user_id = '{}'",
                owner.id
            )
        )
        .await,
        0
    );
    assert_eq!(
        count(&app, "SELECT count(*) AS n FROM totp_authenticators").await,
        0
    );

    let login = app.login(&owner.email, PASSWORD).await;
    assert_eq!(login.status(), StatusCode::OK);
    let (access, _) = token_pair(&body_of(login).await);
    assert_eq!(claims_of(&access)["amr"], json!(["pwd"]));
    assert_eq!(claims_of(&access)["aal"], "aal1");
    // The session that removed it keeps what it began with.
    let refreshed = app.refresh(&owner.refresh).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let (renewed, _) = token_pair(&body_of(refreshed).await);
    assert_eq!(claims_of(&renewed)["aal"], "aal2");

    // Removing nothing is no news.
    let again = app
        .send_authed(Method::DELETE, TOTP, &owner.access, None)
        .await;
    assert_eq!(again.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.outbox_events("mfa-disabled").await.len(), 1);
}

#[tokio::test]
async fn a_code_spent_or_failed_at_step_up_counts_like_a_login_code() {
    let app = spawn_stale().await;
    let (email, body) = app.register_user().await;
    app.verify_address(&email).await;
    let owner = enable_totp(
        &app,
        &email,
        token_pair(&body),
        &json!({ "current_password": PASSWORD }),
    )
    .await;
    let regenerated = app
        .post_authed(
            RECOVERY_CODES,
            &owner.access,
            &json!({ "current_password": PASSWORD, "code": owner.code(0) }),
        )
        .await;
    assert_eq!(regenerated.status(), StatusCode::OK);
    // The step-up spent the code: a thief who saw it type it cannot sign in with it.
    let challenge = challenge(&app, &owner.email).await;
    assert_refused(
        with_code(&app, &challenge, &owner.code(0)).await,
        "code",
        BAD_CODE,
    )
    .await;
    for _ in 0..4 {
        let wrong = app
            .post_authed(
                RECOVERY_CODES,
                &owner.access,
                &json!({ "current_password": PASSWORD, "code": owner.wrong_code() }),
            )
            .await;
        assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            body_of(wrong).await,
            json!({ "errors": { "code": [BAD_CODE] } })
        );
    }
    // Five failures from this client, at login and at step-up together: both are locked.
    let step_up = app
        .post_authed(
            RECOVERY_CODES,
            &owner.access,
            &json!({ "current_password": PASSWORD, "code": owner.code(1) }),
        )
        .await;
    assert_throttled(step_up).await;
    assert_throttled(with_code(&app, &challenge, &owner.code(1)).await).await;
}

#[tokio::test]
async fn a_second_enrolment_replaces_the_pending_secret_and_nothing_changes_before_confirmation() {
    let app = spawn_app().await;
    let (email, body) = app.register_user().await;
    app.verify_address(&email).await;
    let (access, _) = token_pair(&body);
    let first = body_of(enrol(&app, &access, &json!({})).await).await;
    let second = body_of(enrol(&app, &access, &json!({})).await).await;
    let (first, second) = (
        first["totp"]["secret"].as_str().unwrap().to_string(),
        second["totp"]["secret"].as_str().unwrap().to_string(),
    );
    assert_ne!(first, second);
    assert_eq!(base32_decode(&second).len(), 20);

    // Pending is not on: the password alone still signs in, and the first secret is dead.
    let login = body_of(app.login(&email, PASSWORD).await).await;
    assert!(login["user"]["token"].is_string(), "{login}");
    assert_eq!(
        status(&app, &access).await,
        json!({ "mfa": { "totp": false, "passkeys": 0, "recovery_codes_left": 0 } })
    );
    let base = step_with_room().await;
    let stale = confirm(&app, &access, &totp_code_at_step(&first, base)).await;
    assert_eq!(stale.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body_of(stale).await,
        json!({ "errors": { "code": [BAD_CODE] } })
    );
    let confirmed = confirm(&app, &access, &totp_code_at_step(&second, base)).await;
    assert_eq!(confirmed.status(), StatusCode::OK);
    let fresh = body_of(confirmed).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    // Nothing is pending any more: the same code confirms nothing twice.
    let again = confirm(&app, &fresh, &totp_code_at_step(&second, base)).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body_of(again).await,
        json!({ "errors": { "code": [NOTHING_PENDING] } })
    );
}

#[tokio::test]
async fn a_new_set_of_recovery_codes_voids_the_old_one() {
    let app = spawn_app().await;
    let owner = mfa_owner(&app).await;
    let replaced = app
        .post_authed(RECOVERY_CODES, &owner.access, &json!({}))
        .await;
    assert_eq!(replaced.status(), StatusCode::OK);
    let replaced = body_of(replaced).await;
    let new_codes: Vec<String> = replaced["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(new_codes.len(), 10);
    assert!(new_codes.iter().all(|c| !owner.recovery_codes.contains(c)));
    // The owner is told: whoever holds a session could have done it, and the old set is dead.
    let notices = app.outbox_events("recovery-codes-replaced").await;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0]["email"], owner.email.as_str());
    let text = notices[0].to_string();
    assert!(
        new_codes.iter().all(|c| !text.contains(c.as_str())),
        "the notice carries no code"
    );

    let challenge = challenge(&app, &owner.email).await;
    let old = second_factor_from(
        &app,
        None,
        FIREFOX,
        &json!({ "challenge": challenge, "recovery_code": owner.recovery_codes[1] }),
    )
    .await;
    assert_refused(old, "recovery_code", BAD_CODE).await;
    // Typed in capitals with spaces, as a person copies it from paper.
    let typed = new_codes[3].to_uppercase().replace('-', " ");
    let new = second_factor_from(
        &app,
        None,
        FIREFOX,
        &json!({ "challenge": challenge, "recovery_code": typed }),
    )
    .await;
    assert_signed_in_with_two_factors(new).await;
    let used = app.outbox_events("recovery-code-used").await;
    assert_eq!(used.len(), 1);
    assert_eq!(used[0]["codes_left"], 9);
}

// What a live attack on the first version found (each failed before its fix).

/// F1: a pending secret could be confirmed from any session of the user, with unlimited guesses:
/// a stolen, stale session brute-forced the owner's setup in minutes and took the account's
/// second factor and recovery codes.
#[tokio::test]
async fn only_the_session_that_began_a_setup_confirms_it_and_its_wrong_codes_are_guesses() {
    let app = spawn_app().await;
    let (email, registered) = app.register_user().await;
    app.verify_address(&email).await;
    let (owner, _) = token_pair(&registered);
    let (thief, _) = app.login_as(&email, "stolen-laptop").await;
    let enrolled = body_of(enrol(&app, &owner, &json!({})).await).await;
    let secret = enrolled["totp"]["secret"].as_str().unwrap().to_string();
    // Even the right code does not let another session confirm it.
    let base = step_with_room().await;
    let stolen = confirm(&app, &thief, &totp_code_at_step(&secret, base)).await;
    assert_eq!(stolen.status(), StatusCode::BAD_REQUEST);
    assert!(errors(stolen).await["code"][0].is_string());
    assert_eq!(status(&app, &owner).await["mfa"]["totp"], false);
    // The owner's own wrong codes are counted: the sixth attempt is refused unchecked.
    for _ in 0..5 {
        let wrong = confirm(&app, &owner, "000000").await;
        assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    }
    assert_throttled(confirm(&app, &owner, &totp_code_at_step(&secret, base)).await).await;
    assert_eq!(
        count(
            &app,
            "SELECT count(*) AS n FROM audit_log WHERE action = 'mfa.failed'"
        )
        .await,
        5
    );
}

/// F2 and F5: a rejected sign-in left the recovery codes the intruder generated in it (and a
/// setup the intruder began): after the reset, the intruder's codes still signed in.
#[tokio::test]
async fn rejecting_a_sign_in_takes_the_recovery_codes_and_the_setup_it_began() {
    let app = spawn_behind_proxy().await;
    let owner = mfa_owner_from(&app, "203.0.113.10", FIREFOX).await;
    // The intruder knows the password and one code, and signs in from elsewhere.
    let challenge = challenge_from(
        &app,
        Some("198.51.100.7"),
        "curl/8.5.0",
        &owner.email,
        PASSWORD,
    )
    .await;
    let body = json!({ "challenge": challenge, "code": owner.code(0) });
    let signed_in = second_factor_from(&app, Some("198.51.100.7"), "curl/8.5.0", &body).await;
    let (intruder, _) = assert_signed_in_with_two_factors(signed_in).await;
    let regenerated = app
        .send_authed(Method::POST, RECOVERY_CODES, &intruder, Some(&json!({})))
        .await;
    assert_eq!(regenerated.status(), StatusCode::OK);
    let intruders_codes = body_of(regenerated).await["recovery_codes"].clone();
    assert_eq!(
        enrol(&app, &intruder, &json!({})).await.status(),
        StatusCode::OK
    );
    // The owner rejects that sign-in from the new-sign-in mail.
    let reject = app.link_token("new-sign-in", "reject_url").await;
    let rejected = app
        .post("/api/users/sign-in/reject", &json!({ "token": reject }))
        .await;
    assert_eq!(rejected.status(), StatusCode::NO_CONTENT);
    let left = count(
        &app,
        &format!(
            "SELECT count(*) AS n FROM recovery_codes WHERE user_id = '{}'",
            owner.id
        ),
    )
    .await;
    assert_eq!(left, 0, "the intruder's set {intruders_codes} is gone");
    let pending = count(
        &app,
        "SELECT count(*) AS n FROM totp_authenticators WHERE pending_secret IS NOT NULL",
    )
    .await;
    assert_eq!(pending, 0, "the intruder's setup is gone");
    let kept = count(
        &app,
        "SELECT count(*) AS n FROM totp_authenticators WHERE secret IS NOT NULL",
    )
    .await;
    assert_eq!(
        kept, 1,
        "the owner's authenticator predates the rejected sign-in"
    );
}

/// F3: a password change already past its checks outlived a logout of every session (and a
/// session's end) committed meanwhile: its new token worked afterwards.
#[tokio::test]
async fn a_password_change_racing_a_logout_of_every_session_never_leaves_a_working_token() {
    let app = spawn_app().await;
    for trial in 0..8 {
        let (email, registered) = app.register_user().await;
        let (token, _) = token_pair(&registered);
        let (other, _) = app.login_as(&email, "owners-phone").await;
        let new_password = format!("n3w-secret-{trial}x");
        let change = app.update_user(
            &token,
            json!({ "password": new_password, "confirm_password": new_password, "current_password": PASSWORD }),
        );
        let all = json!({ "all": true });
        let logout = app.post_authed("/api/users/logout", &other, &all);
        let (changed, logged_out) = tokio::join!(change, logout);
        if logged_out.status() == StatusCode::UNAUTHORIZED {
            // The change committed first and ended every other session, the logout's included:
            // its new session is the only one, and legitimately so.
            assert_eq!(changed.status(), StatusCode::OK, "trial {trial}");
            continue;
        }
        assert_eq!(logged_out.status(), StatusCode::NO_CONTENT, "trial {trial}");
        if changed.status() == StatusCode::OK {
            let new_token = token_pair(&body_of(changed).await).0;
            assert_eq!(
                app.current_user(&new_token).await.status(),
                StatusCode::UNAUTHORIZED,
                "trial {trial}: the change's token outlived the logout of every session"
            );
        } else {
            assert_eq!(changed.status(), StatusCode::UNAUTHORIZED, "trial {trial}");
        }
    }
}

/// F4: the device exempt from the per-user delay is a user agent family and a /24, but the
/// per-client lock counted single addresses: 254 neighbours had 5 guesses each.
#[tokio::test]
async fn wrong_codes_from_one_network_share_one_budget() {
    let app = spawn_behind_proxy().await;
    let owner = mfa_owner_from(&app, "198.51.100.10", FIREFOX).await;
    for host in 1..=5 {
        let forwarded = format!("198.51.100.{host}");
        let challenge =
            challenge_from(&app, Some(&forwarded), FIREFOX, &owner.email, PASSWORD).await;
        let body = json!({ "challenge": challenge, "code": owner.wrong_code() });
        let wrong = second_factor_from(&app, Some(&forwarded), FIREFOX, &body).await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{forwarded}");
    }
    let challenge =
        challenge_from(&app, Some("198.51.100.77"), FIREFOX, &owner.email, PASSWORD).await;
    let body = json!({ "challenge": challenge, "code": owner.code(0) });
    assert_throttled(second_factor_from(&app, Some("198.51.100.77"), FIREFOX, &body).await).await;
    // Another network is another client.
    let challenge = challenge_from(&app, Some("192.0.2.5"), FIREFOX, &owner.email, PASSWORD).await;
    let body = json!({ "challenge": challenge, "code": owner.code(0) });
    assert_signed_in_with_two_factors(
        second_factor_from(&app, Some("192.0.2.5"), FIREFOX, &body).await,
    )
    .await;
}

/// F6: an admin's stolen token removed the admin's own second factor through the admin API,
/// where the user route demands step-up.
#[tokio::test]
async fn an_operator_cannot_reset_its_own_second_factor_through_the_admin_api() {
    let app = spawn_app().await;
    let owner = mfa_owner(&app).await;
    sql(
        &app,
        &format!(
            "UPDATE users SET is_superuser = true WHERE id = '{}'",
            owner.id
        ),
    )
    .await;
    let refused = app
        .send_authed(
            Method::DELETE,
            &format!("/api/admin/users/{}/mfa", owner.id),
            &owner.access,
            None,
        )
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(status(&app, &owner.access).await["mfa"]["totp"], true);
}

/// N1 (second attack): a set of recovery codes regenerated with a stolen session before the
/// rejected sign-in (no mail tells of it) survived the reject and signed the intruder in after the
/// owner's reset. A reject takes every recovery code.
#[tokio::test]
async fn a_reject_takes_even_recovery_codes_regenerated_before_the_rejected_sign_in() {
    let app = spawn_behind_proxy().await;
    let owner = mfa_owner_from(&app, "203.0.113.10", FIREFOX).await;
    // A copy of the owner's fresh aal2 token regenerates the set: the owner's is dead, unknowingly.
    let stolen = app
        .send_authed(
            Method::POST,
            RECOVERY_CODES,
            &owner.access,
            Some(&json!({})),
        )
        .await;
    let thiefs_codes = body_of(stolen).await["recovery_codes"].clone();
    // With the password too, the thief signs in from elsewhere with one of them.
    let challenge = challenge_from(
        &app,
        Some("198.51.100.7"),
        "curl/8.5.0",
        &owner.email,
        PASSWORD,
    )
    .await;
    let body = json!({ "challenge": challenge, "recovery_code": thiefs_codes[0] });
    let signed_in = second_factor_from(&app, Some("198.51.100.7"), "curl/8.5.0", &body).await;
    assert_signed_in_with_two_factors(signed_in).await;
    let reject = app.link_token("new-sign-in", "reject_url").await;
    let rejected = app
        .post("/api/users/sign-in/reject", &json!({ "token": reject }))
        .await;
    assert_eq!(rejected.status(), StatusCode::NO_CONTENT);
    let left = count(
        &app,
        &format!(
            "SELECT count(*) AS n FROM recovery_codes WHERE user_id = '{}'",
            owner.id
        ),
    )
    .await;
    assert_eq!(left, 0, "none of {thiefs_codes} is left");
}

/// N3 (second attack): typos while setting up an authenticator are counted, but they are not
/// news that someone knows the password.
#[tokio::test]
async fn typos_while_setting_up_an_authenticator_mail_no_alarm() {
    let app = spawn_app().await;
    let (email, registered) = app.register_user().await;
    app.verify_address(&email).await;
    let (access, _) = token_pair(&registered);
    assert_eq!(
        enrol(&app, &access, &json!({})).await.status(),
        StatusCode::OK
    );
    for _ in 0..4 {
        let typo = confirm(&app, &access, "000000").await;
        assert_eq!(typo.status(), StatusCode::BAD_REQUEST);
    }
    assert!(app.outbox_events("mfa-failures").await.is_empty());
    assert_eq!(
        count(&app, "SELECT count(*) AS n FROM mfa_failures").await,
        4,
        "counted all the same"
    );
}

/// Residual risk of the second attack: a network where the intruder once signed in with the
/// password alone, before the second factor turned on, passed as the owner's device and was
/// exempt from the per-user delay for 90 days. Only devices seen since the factor turned on (so
/// with it) are exempt now.
#[tokio::test]
async fn a_device_seen_only_before_the_second_factor_is_not_exempt_from_the_delay() {
    let app = spawn_behind_proxy().await;
    let email = unique_email();
    let registered = post_as(&app, "/api/users", Some("203.0.113.10"), FIREFOX)
        .json(&registration(&email, PASSWORD))
        .send()
        .await
        .expect("request");
    let tokens = token_pair(&body_of(registered).await);
    app.verify_address(&email).await;
    // The intruder, with the password, signs in before the owner turns MFA on.
    let early = login_from(&app, Some("198.51.100.7"), "curl/8.5.0", &email, PASSWORD).await;
    assert_eq!(early.status(), StatusCode::OK);
    let owner = enable_totp(&app, &email, tokens, &json!({})).await;
    // Ten failures from two other networks (5 each) start the per-user delay.
    for network in ["198.18.1.7", "198.18.2.7"] {
        for _ in 0..5 {
            let challenge =
                challenge_from(&app, Some(network), "curl/8.5.0", &email, PASSWORD).await;
            let body = json!({ "challenge": challenge, "code": owner.wrong_code() });
            let wrong = second_factor_from(&app, Some(network), "curl/8.5.0", &body).await;
            assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{network}");
        }
    }
    // The intruder's old network is delayed like any stranger's.
    let challenge =
        challenge_from(&app, Some("198.51.100.7"), "curl/8.5.0", &email, PASSWORD).await;
    let body = json!({ "challenge": challenge, "code": owner.wrong_code() });
    assert_throttled(second_factor_from(&app, Some("198.51.100.7"), "curl/8.5.0", &body).await)
        .await;
    // The device that turned the factor on is exempt: the owner signs in at once.
    let challenge = challenge_from(&app, Some("203.0.113.10"), FIREFOX, &email, PASSWORD).await;
    let body = json!({ "challenge": challenge, "code": owner.code(0) });
    assert_signed_in_with_two_factors(
        second_factor_from(&app, Some("203.0.113.10"), FIREFOX, &body).await,
    )
    .await;
}

/// Confirming a setup turns the factor on once: 8 parallel confirmations with the right code
/// (over 3 trials) give one 200, one set of recovery codes and one `mfa-enabled` mail; the
/// others find nothing pending or the step spent.
#[tokio::test]
async fn parallel_confirmations_turn_the_factor_on_once() {
    let app = spawn_app().await;
    for trial in 0..3 {
        let (email, registered) = app.register_user().await;
        app.verify_address(&email).await;
        let (access, _) = token_pair(&registered);
        let enrolled = body_of(enrol(&app, &access, &json!({})).await).await;
        let secret = enrolled["totp"]["secret"].as_str().unwrap().to_string();
        let code = totp_code_at_step(&secret, step_with_room().await);
        let confirmations = (0..8).map(|_| confirm(&app, &access, &code));
        let statuses: Vec<StatusCode> = join_all(confirmations)
            .await
            .iter()
            .map(Response::status)
            .collect();
        let counts = status_counts(&statuses);
        assert_eq!(counts.get(&200), Some(&1), "trial {trial}: {counts:?}");
        // The winner's confirmation moved the token version: the others fail on the token (401)
        // or find the setup gone or the step spent (400).
        let refused = counts.get(&400).unwrap_or(&0) + counts.get(&401).unwrap_or(&0);
        assert_eq!(refused, 7, "trial {trial}: {counts:?}");
        let id = claims_of(&access)["sub"].as_str().unwrap().to_string();
        let codes = count(
            &app,
            &format!("SELECT count(*) AS n FROM recovery_codes WHERE user_id = '{id}'"),
        )
        .await;
        assert_eq!(codes, 10, "trial {trial}: one set");
        let mails = app.outbox_events("mfa-enabled").await;
        let mine = mails
            .iter()
            .filter(|m| m["email"] == email.as_str())
            .count();
        assert_eq!(mine, 1, "trial {trial}: one mail");
    }
}
