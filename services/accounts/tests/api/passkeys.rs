//! Passkeys against a software authenticator (`webauthn-authenticator-rs`'s SoftToken, which
//! signs with a real key and counts its signatures): registration, passwordless sign-in, the
//! second factor, and the attacks on each (replays, other origins, other ceremonies, cloned
//! authenticators, a credential id claimed by a second account, hostile bytes).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use url::Url;
use webauthn_authenticator_rs::{WebauthnAuthenticator, softtoken::SoftToken};
use webauthn_rs::prelude::{
    CreationChallengeResponse, RegisterPublicKeyCredential, RequestChallengeResponse,
};

use crate::helpers::{
    Options, PASSWORD, TestApp, claims_of, count, errors, spawn_with, sql, token_pair,
};

const ORIGIN: &str = "http://localhost:8080";

async fn spawn(extra: &[(&'static str, &str)]) -> TestApp {
    let mut vars: Vec<(&'static str, String)> = vec![("ACCOUNTS_PUBLIC_URL", ORIGIN.into())];
    vars.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    spawn_with(Options {
        vars,
        ..Options::default()
    })
    .await
}

/// A software authenticator that verifies its user (as a platform authenticator with a PIN would).
pub(crate) fn authenticator() -> SoftToken {
    SoftToken::new(true).expect("a soft token").0
}

/// A confirmed account, just signed in with its password: (email, id, access token).
async fn account(app: &TestApp) -> (String, String, String) {
    let (email, _) = app.register_user().await;
    app.verify_address(&email).await;
    let login: Value = app.login(&email, PASSWORD).await.json().await.unwrap();
    let id = login["user"]["id"].as_str().unwrap().to_string();
    (email, id, token_pair(&login).0)
}

async fn json_of(response: Response) -> Value {
    response.json().await.unwrap()
}

/// Registration options as the authenticator takes them (SoftToken keeps no resident keys, so the
/// discoverable-credential request is relaxed on its side only).
fn creation(options: &Value) -> CreationChallengeResponse {
    let mut public_key = options["publicKey"].clone();
    public_key["authenticatorSelection"]["requireResidentKey"] = json!(false);
    public_key["authenticatorSelection"]["residentKey"] = json!("discouraged");
    serde_json::from_value(json!({ "publicKey": public_key })).expect("creation options")
}

fn request(public_key: &Value) -> RequestChallengeResponse {
    serde_json::from_value(json!({ "publicKey": public_key })).expect("request options")
}

/// A registration ceremony for the account of `access`, and `token`'s answer to it: the options
/// (with the ceremony id) and the credential.
async fn registration(
    app: &TestApp,
    access: &str,
    token: &mut SoftToken,
) -> (Value, RegisterPublicKeyCredential) {
    let options = app
        .post_authed("/api/user/passkeys/options", access, &json!({}))
        .await;
    assert_eq!(options.status(), StatusCode::OK);
    let options = json_of(options).await;
    let credential = token
        .do_registration(Url::parse(ORIGIN).unwrap(), creation(&options))
        .expect("the authenticator registers");
    (options, credential)
}

/// Registers a passkey for the account of `access` with `token`: the answer.
pub(crate) async fn register(app: &TestApp, access: &str, token: &mut SoftToken) -> Response {
    let (options, credential) = registration(app, access, token).await;
    app.post_authed(
        "/api/user/passkeys",
        access,
        &json!({ "ceremony": options["ceremony"], "credential": credential, "name": "Laptop" }),
    )
    .await
}

/// An assertion by `token` for `public_key` options at `origin`; for a discoverable ceremony the
/// credential and the user handle a resident-key authenticator would pick are filled in.
fn assert_with(
    token: &mut SoftToken,
    public_key: &Value,
    origin: &str,
    discover: Option<(&str, &str)>,
) -> Value {
    let mut public_key = public_key.clone();
    if let Some((credential_id, _)) = discover {
        public_key["allowCredentials"] = json!([{ "type": "public-key", "id": credential_id }]);
    }
    let assertion = token
        .do_authentication(Url::parse(origin).unwrap(), request(&public_key))
        .expect("the authenticator signs");
    let mut assertion = serde_json::to_value(assertion).unwrap();
    if let Some((_, user_id)) = discover {
        let handle = uuid::Uuid::parse_str(user_id).unwrap();
        assertion["response"]["userHandle"] = json!(URL_SAFE_NO_PAD.encode(handle.as_bytes()));
    }
    assertion
}

async fn credential_id(app: &TestApp) -> String {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Bytea)]
        credential_id: Vec<u8>,
    }
    use diesel_async::RunQueryDsl;
    let row: Row =
        diesel::sql_query("SELECT credential_id FROM passkeys ORDER BY created_at DESC LIMIT 1")
            .get_result(&mut app.conn().await)
            .await
            .expect("a passkey");
    URL_SAFE_NO_PAD.encode(row.credential_id)
}

/// A passwordless sign-in: the login answer.
async fn passkey_login(
    app: &TestApp,
    token: &mut SoftToken,
    user_id: &str,
    origin: &str,
) -> Response {
    let id = credential_id(app).await;
    passkey_login_with(app, token, user_id, &id, origin).await
}

/// A passwordless sign-in with the credential `id`; at another origin, for that origin's relying
/// party (what a phishing page would get signed).
async fn passkey_login_with(
    app: &TestApp,
    token: &mut SoftToken,
    user_id: &str,
    id: &str,
    origin: &str,
) -> Response {
    let mut options = json_of(
        app.post("/api/users/login/passkey/options", &json!({}))
            .await,
    )
    .await;
    if origin != ORIGIN {
        let host = Url::parse(origin).unwrap().host_str().unwrap().to_string();
        options["publicKey"]["rpId"] = json!(host);
    }
    let credential = assert_with(token, &options["publicKey"], origin, Some((id, user_id)));
    app.post(
        "/api/users/login/passkey",
        &json!({ "ceremony": options["ceremony"], "credential": credential }),
    )
    .await
}

#[tokio::test]
async fn a_passkey_registers_turns_the_second_factor_on_and_signs_in_without_a_password() {
    let app = spawn(&[]).await;
    let (email, id, access) = account(&app).await;
    let mut token = authenticator();
    let added = register(&app, &access, &mut token).await;
    assert_eq!(added.status(), StatusCode::CREATED);
    let added = json_of(added).await;
    assert_eq!(added["passkey"]["name"], "Laptop");
    assert_eq!(added["recovery_codes"].as_array().unwrap().len(), 10);
    let raised = claims_of(added["token"].as_str().unwrap());
    assert_eq!(raised["aal"], "aal2");
    assert_eq!(app.outbox_events("passkey-added").await.len(), 1);
    assert_eq!(app.outbox_events("mfa-enabled").await.len(), 1);
    let listed = app
        .client
        .get(app.url("/api/user/passkeys"))
        .bearer_auth(added["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(listed).await["passkeys"][0]["name"], "Laptop");

    // The passwordless options name nobody.
    let options = json_of(
        app.post("/api/users/login/passkey/options", &json!({}))
            .await,
    )
    .await;
    let text = options.to_string();
    assert!(!text.contains(&email) && !text.contains(&id), "{text}");
    assert!(
        options["publicKey"]["allowCredentials"]
            .as_array()
            .is_none_or(Vec::is_empty)
    );
    assert_eq!(options["publicKey"]["userVerification"], "required");

    let signed_in = passkey_login(&app, &mut token, &id, ORIGIN).await;
    assert_eq!(signed_in.status(), StatusCode::OK);
    let signed_in = json_of(signed_in).await;
    assert_eq!(signed_in["user"]["email"], email);
    let claims = claims_of(&token_pair(&signed_in).0);
    assert_eq!(claims["amr"], json!(["swk", "user", "mfa"]));
    assert_eq!(claims["aal"], "aal2");
}

#[tokio::test]
async fn after_a_password_the_challenge_offers_the_passkey_and_takes_its_assertion() {
    let app = spawn(&[]).await;
    let (email, _, access) = account(&app).await;
    let mut token = authenticator();
    assert_eq!(
        register(&app, &access, &mut token).await.status(),
        StatusCode::CREATED
    );
    let login = json_of(app.login(&email, PASSWORD).await).await;
    let mfa = &login["mfa"];
    assert_eq!(mfa["methods"], json!(["recovery_code", "passkey"]));
    let public_key = &mfa["passkey_options"]["publicKey"];
    assert_eq!(public_key["allowCredentials"].as_array().unwrap().len(), 1);
    let credential = assert_with(&mut token, public_key, ORIGIN, None);
    let done = app
        .post(
            "/api/users/login/mfa",
            &json!({ "challenge": mfa["challenge"], "credential": credential }),
        )
        .await;
    assert_eq!(done.status(), StatusCode::OK);
    let claims = claims_of(&token_pair(&json_of(done).await).0);
    assert_eq!(claims["amr"], json!(["pwd", "swk", "user", "mfa"]));
    // The same assertion again, on a new challenge: refused (its challenge was the old ceremony's).
    let again = json_of(app.login(&email, PASSWORD).await).await;
    let replayed = app
        .post(
            "/api/users/login/mfa",
            &json!({ "challenge": again["mfa"]["challenge"], "credential": credential }),
        )
        .await;
    assert_eq!(replayed.status(), StatusCode::UNAUTHORIZED);
    // Passkey failures never count toward the code-guessing limits.
    assert_eq!(
        count(&app, "SELECT count(*) AS n FROM mfa_failures").await,
        0
    );
}

#[tokio::test]
async fn replays_other_origins_and_other_ceremonies_are_refused() {
    let app = spawn(&[]).await;
    let (_, id, access) = account(&app).await;
    let mut token = authenticator();
    assert_eq!(
        register(&app, &access, &mut token).await.status(),
        StatusCode::CREATED
    );
    let credential_id = credential_id(&app).await;

    // A ceremony answered for another origin.
    let other = passkey_login(&app, &mut token, &id, "https://evil.example").await;
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);

    // One assertion, used twice: the ceremony is spent; on a new ceremony its challenge is wrong.
    let options = json_of(
        app.post("/api/users/login/passkey/options", &json!({}))
            .await,
    )
    .await;
    let credential = assert_with(
        &mut token,
        &options["publicKey"],
        ORIGIN,
        Some((&credential_id, &id)),
    );
    let body = json!({ "ceremony": options["ceremony"], "credential": credential });
    assert_eq!(
        app.post("/api/users/login/passkey", &body).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.post("/api/users/login/passkey", &body).await.status(),
        StatusCode::BAD_REQUEST
    );
    let fresh = json_of(
        app.post("/api/users/login/passkey/options", &json!({}))
            .await,
    )
    .await;
    let replay = json!({ "ceremony": fresh["ceremony"], "credential": credential });
    assert_eq!(
        app.post("/api/users/login/passkey", &replay).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // A registration ceremony is no sign-in ceremony; an expired one is nothing.
    let registration = json_of(
        app.post_authed("/api/user/passkeys/options", &access, &json!({}))
            .await,
    )
    .await;
    let crossed = json!({ "ceremony": registration["ceremony"], "credential": credential });
    assert_eq!(
        app.post("/api/users/login/passkey", &crossed)
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    let late = json_of(
        app.post("/api/users/login/passkey/options", &json!({}))
            .await,
    )
    .await;
    sql(
        &app,
        "UPDATE webauthn_ceremonies SET expires_at = now() - interval '1 second'",
    )
    .await;
    let credential = assert_with(
        &mut token,
        &late["publicKey"],
        ORIGIN,
        Some((&credential_id, &id)),
    );
    let expired = json!({ "ceremony": late["ceremony"], "credential": credential });
    assert_eq!(
        app.post("/api/users/login/passkey", &expired)
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn another_users_registration_ceremony_is_refused() {
    let app = spawn(&[]).await;
    let (_, _, owner) = account(&app).await;
    let (_, _, intruder) = account(&app).await;
    let (options, credential) = registration(&app, &owner, &mut authenticator()).await;
    let stolen = app
        .post_authed(
            "/api/user/passkeys",
            &intruder,
            &json!({ "ceremony": options["ceremony"], "credential": credential }),
        )
        .await;
    assert_eq!(stolen.status(), StatusCode::BAD_REQUEST);
    assert_eq!(count(&app, "SELECT count(*) AS n FROM passkeys").await, 0);
}

#[tokio::test]
async fn a_credential_id_belongs_to_one_account() {
    let app = spawn(&[]).await;
    let (_, _, first) = account(&app).await;
    let (_, _, second) = account(&app).await;
    let mut token = authenticator();
    let (options, credential) = registration(&app, &first, &mut token).await;
    let mut credential = serde_json::to_value(credential).unwrap();
    let body = json!({ "ceremony": options["ceremony"], "credential": credential });
    assert_eq!(
        app.post_authed("/api/user/passkeys", &first, &body)
            .await
            .status(),
        StatusCode::CREATED
    );
    // The same attested credential (no attestation signs the client data) answered for the
    // second account's ceremony: the client data is rewritten to carry its challenge.
    let options = json_of(
        app.post_authed("/api/user/passkeys/options", &second, &json!({}))
            .await,
    )
    .await;
    let client_data = json!({
        "type": "webauthn.create",
        "challenge": options["publicKey"]["challenge"],
        "origin": ORIGIN,
        "crossOrigin": false,
    });
    credential["response"]["clientDataJSON"] =
        json!(URL_SAFE_NO_PAD.encode(serde_json::to_vec(&client_data).unwrap()));
    let claimed = app
        .post_authed(
            "/api/user/passkeys",
            &second,
            &json!({ "ceremony": options["ceremony"], "credential": credential }),
        )
        .await;
    assert_eq!(claimed.status(), StatusCode::BAD_REQUEST);
    assert!(errors(claimed).await["credential"].is_array());
    assert_eq!(count(&app, "SELECT count(*) AS n FROM passkeys").await, 1);
}

#[tokio::test]
async fn a_cloned_authenticator_whose_counter_goes_backwards_is_refused_and_audited() {
    let app = spawn(&[]).await;
    let (_, id, access) = account(&app).await;
    let mut token = authenticator();
    assert_eq!(
        register(&app, &access, &mut token).await.status(),
        StatusCode::CREATED
    );
    let mut clone = SoftToken::from_cbor(&token.to_cbor().unwrap()).unwrap();
    for _ in 0..2 {
        assert_eq!(
            passkey_login(&app, &mut token, &id, ORIGIN).await.status(),
            StatusCode::OK
        );
    }
    let cloned = passkey_login(&app, &mut clone, &id, ORIGIN).await;
    assert_eq!(cloned.status(), StatusCode::UNAUTHORIZED);
    let audited = "SELECT count(*) AS n FROM audit_log WHERE action = 'passkey.counter_regressed'";
    assert_eq!(count(&app, audited).await, 1);
}

#[tokio::test]
async fn a_stale_stolen_token_cannot_add_a_passkey() {
    let app = spawn(&[("ACCOUNTS_REAUTH_SECONDS", "0")]).await;
    let (_, _, access) = account(&app).await;
    let refused = app
        .post_authed("/api/user/passkeys/options", &access, &json!({}))
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(errors(refused).await["reauthentication"].is_array());
    let wrong = app
        .post_authed(
            "/api/user/passkeys/options",
            &access,
            &json!({ "current_password": "not-it-123" }),
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    let proven = app
        .post_authed(
            "/api/user/passkeys/options",
            &access,
            &json!({ "current_password": PASSWORD }),
        )
        .await;
    assert_eq!(proven.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_unverified_address_cannot_add_a_passkey() {
    let app = spawn(&[]).await;
    let (_, body) = app.register_user().await;
    let access = token_pair(&body).0;
    let refused = app
        .post_authed("/api/user/passkeys/options", &access, &json!({}))
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(errors(refused).await["email"].is_array());
}

#[tokio::test]
async fn the_last_passkey_of_a_password_less_account_stays() {
    let app = spawn(&[]).await;
    let (_, id, access) = account(&app).await;
    let mut token = authenticator();
    let added = json_of(register(&app, &access, &mut token).await).await;
    let passkey = added["passkey"]["id"].as_str().unwrap().to_string();
    sql(
        &app,
        &format!("UPDATE users SET password_hash = NULL WHERE id = '{id}'"),
    )
    .await;
    let signed_in = json_of(passkey_login(&app, &mut token, &id, ORIGIN).await).await;
    let fresh = token_pair(&signed_in).0;
    let delete = app
        .client
        .delete(app.url(&format!("/api/user/passkeys/{passkey}")))
        .bearer_auth(&fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::BAD_REQUEST);
    assert!(errors(delete).await["passkey"].is_array());
    assert_eq!(count(&app, "SELECT count(*) AS n FROM passkeys").await, 1);
}

#[tokio::test]
async fn removing_the_only_passkey_turns_the_second_factor_off_and_tells_the_user() {
    let app = spawn(&[]).await;
    let (email, _, access) = account(&app).await;
    let mut token = authenticator();
    let added = json_of(register(&app, &access, &mut token).await).await;
    let passkey = added["passkey"]["id"].as_str().unwrap();
    let raised = added["token"].as_str().unwrap();
    let delete = app
        .client
        .delete(app.url(&format!("/api/user/passkeys/{passkey}")))
        .bearer_auth(raised)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.outbox_events("passkey-removed").await.len(), 1);
    assert_eq!(app.outbox_events("mfa-disabled").await.len(), 1);
    // A password alone signs in again.
    assert!(json_of(app.login(&email, PASSWORD).await).await["user"]["token"].is_string());
}

#[tokio::test]
async fn rejecting_the_sign_in_that_added_a_passkey_removes_it() {
    let app = spawn(&[]).await;
    let (_, id, access) = account(&app).await;
    let mut token = authenticator();
    assert_eq!(
        register(&app, &access, &mut token).await.status(),
        StatusCode::CREATED
    );
    let credential_id = credential_id(&app).await;
    let reject = app.link_token("passkey-added", "reject_url").await;
    let rejected = app
        .post("/api/users/sign-in/reject", &json!({ "token": reject }))
        .await;
    assert_eq!(rejected.status(), StatusCode::NO_CONTENT);
    assert_eq!(count(&app, "SELECT count(*) AS n FROM passkeys").await, 0);
    let after = passkey_login_with(&app, &mut token, &id, &credential_id, ORIGIN).await;
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_registration_ceremony_dies_when_the_account_moves() {
    let app = spawn(&[]).await;
    let (_, id, access) = account(&app).await;
    let (options, credential) = registration(&app, &access, &mut authenticator()).await;
    sql(
        &app,
        &format!("UPDATE users SET email_epoch = email_epoch + 1 WHERE id = '{id}'"),
    )
    .await;
    let late = app
        .post_authed(
            "/api/user/passkeys",
            &access,
            &json!({ "ceremony": options["ceremony"], "credential": credential }),
        )
        .await;
    assert_eq!(late.status(), StatusCode::BAD_REQUEST);
    assert_eq!(count(&app, "SELECT count(*) AS n FROM passkeys").await, 0);
}

#[tokio::test]
async fn hostile_credentials_get_a_4xx_with_the_envelope() {
    let app = spawn(&[]).await;
    let (_, id, access) = account(&app).await;
    let mut token = authenticator();
    let added = json_of(register(&app, &access, &mut token).await).await;
    let access = added["token"].as_str().unwrap().to_string();
    let credential_id = credential_id(&app).await;
    let options = json_of(
        app.post("/api/users/login/passkey/options", &json!({}))
            .await,
    )
    .await;
    let good = assert_with(
        &mut token,
        &options["publicKey"],
        ORIGIN,
        Some((&credential_id, &id)),
    );
    let mut variants = Vec::new();
    let mut huge = good.clone();
    huge["response"]["clientDataJSON"] = json!(URL_SAFE_NO_PAD.encode(vec![b'a'; 1 << 20]));
    variants.push(huge);
    let mut cbor = good.clone();
    cbor["response"]["authenticatorData"] = json!(URL_SAFE_NO_PAD.encode([0xff, 0x00, 0x13]));
    variants.push(cbor);
    let mut base64 = good.clone();
    base64["response"]["signature"] = json!("***not base64url***");
    variants.push(base64);
    let mut kind = good.clone();
    kind["type"] = json!("password");
    variants.push(kind);
    variants.push(json!("a string"));
    variants.push(json!({ "id": "\u{0}", "rawId": "", "response": {}, "type": "public-key" }));
    for credential in variants {
        let fresh = json_of(
            app.post("/api/users/login/passkey/options", &json!({}))
                .await,
        )
        .await;
        let answer = app
            .post(
                "/api/users/login/passkey",
                &json!({ "ceremony": fresh["ceremony"], "credential": credential }),
            )
            .await;
        let status = answer.status();
        assert!(status.is_client_error(), "{status}");
        assert!(errors(answer).await.is_object());
    }
    // A passkey id that is no uuid names nothing: 404 in the envelope.
    let not_an_id = app
        .client
        .delete(app.url("/api/user/passkeys/null%2Cnull"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(not_an_id.status(), StatusCode::NOT_FOUND);
    assert!(errors(not_an_id).await.is_object());
    // And on registration, an attestation object that is not CBOR.
    let (options, registration) = registration(&app, &access, &mut token).await;
    let mut registration = serde_json::to_value(registration).unwrap();
    registration["response"]["attestationObject"] = json!(URL_SAFE_NO_PAD.encode([0xa1, 0xff]));
    let answer = app
        .post_authed(
            "/api/user/passkeys",
            &access,
            &json!({ "ceremony": options["ceremony"], "credential": registration }),
        )
        .await;
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    assert!(errors(answer).await["credential"].is_array());
}

#[tokio::test]
async fn the_passkeys_page_and_its_script_are_served_under_the_pages_policy() {
    let app = spawn(&[]).await;
    let page = app
        .client
        .get(app.url("/account/passkeys"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(
        html.contains(r#"<script src="assets/passkeys.js" defer></script>"#),
        "{html}"
    );
    assert!(!html.contains("<script>"), "no inline script: {html}");
    let script = app
        .client
        .get(app.url("/account/assets/passkeys.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), StatusCode::OK);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let script = script.text().await.unwrap();
    assert!(script.contains("PublicKeyCredential.parseCreationOptionsFromJSON"));
    assert!(script.contains("PublicKeyCredential.parseRequestOptionsFromJSON"));
}

#[tokio::test]
async fn a_passkey_sign_in_in_flight_does_not_outlive_the_passkeys_removal() {
    use diesel_async::RunQueryDsl;
    let app = spawn(&[]).await;
    let (_, id, access) = account(&app).await;
    let mut token = authenticator();
    assert_eq!(
        register(&app, &access, &mut token).await.status(),
        StatusCode::CREATED
    );
    let credential_id = credential_id(&app).await;
    let options = json_of(
        app.post("/api/users/login/passkey/options", &json!({}))
            .await,
    )
    .await;
    let credential = assert_with(
        &mut token,
        &options["publicKey"],
        ORIGIN,
        Some((&credential_id, &id)),
    );
    let reject = app.link_token("passkey-added", "reject_url").await;
    // The user row is held, so that the reject and the sign-in queue behind it in that order.
    let mut holder = app.conn().await;
    diesel::sql_query("BEGIN")
        .execute(&mut holder)
        .await
        .unwrap();
    diesel::sql_query(format!("SELECT 1 FROM users WHERE id = '{id}' FOR UPDATE"))
        .execute(&mut holder)
        .await
        .unwrap();
    let rejecting = {
        let app_url = app.url("/api/users/sign-in/reject");
        let client = app.client.clone();
        tokio::spawn(async move {
            client
                .post(app_url)
                .json(&json!({ "token": reject }))
                .send()
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let signing_in = {
        let app_url = app.url("/api/users/login/passkey");
        let client = app.client.clone();
        let body = json!({ "ceremony": options["ceremony"], "credential": credential });
        tokio::spawn(async move { client.post(app_url).json(&body).send().await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    diesel::sql_query("COMMIT")
        .execute(&mut holder)
        .await
        .unwrap();
    assert_eq!(
        rejecting.await.unwrap().unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        signing_in.await.unwrap().unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let live =
        format!("SELECT count(*) AS n FROM sessions WHERE user_id = '{id}' AND ended_at IS NULL");
    assert_eq!(count(&app, &live).await, 0);
}

#[tokio::test]
async fn a_passkey_name_cannot_hide_or_reverse_text_and_a_credential_must_be_a_public_key() {
    let app = spawn(&[]).await;
    let (_, _, access) = account(&app).await;
    for name in [
        "\u{202e}evil\u{202c}",
        "\u{200b}\u{200b}",
        "a\u{2028}b",
        "\u{feff}",
    ] {
        let (options, credential) = registration(&app, &access, &mut authenticator()).await;
        let answer = app
            .post_authed(
                "/api/user/passkeys",
                &access,
                &json!({ "ceremony": options["ceremony"], "credential": credential, "name": name }),
            )
            .await;
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{name:?}");
        assert!(errors(answer).await["name"].is_array());
    }
    let (options, credential) = registration(&app, &access, &mut authenticator()).await;
    let mut credential = serde_json::to_value(credential).unwrap();
    credential["type"] = json!("password");
    let answer = app
        .post_authed(
            "/api/user/passkeys",
            &access,
            &json!({ "ceremony": options["ceremony"], "credential": credential }),
        )
        .await;
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    assert_eq!(count(&app, "SELECT count(*) AS n FROM passkeys").await, 0);
}
