//! The identity-provider fixtures work end to end: a relying party written by hand (PKCE S256,
//! nonce, state) signs in at the OpenID Connect provider and at the GitHub stand-in, redeems the
//! code and reads the user. These prove the fixtures; the social-login tests live with accounts.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use reqwest::{StatusCode, header, redirect::Policy};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use testkit::{
    ConsentAnswer, GithubStandIn, OidcClient, OidcProvider, ProviderBrowser, deny_at_provider,
    sign_in_at_provider,
};
use url::Url;

const CLIENT_ID: &str = "accounts-test";
const CLIENT_SECRET: &str = "client-secret-for-tests";
const REDIRECT_URI: &str = "http://127.0.0.1:9/api/auth/test/callback";

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What a relying party keeps between the authorize redirect and the callback.
struct Authorization {
    url: String,
    state: String,
    nonce: String,
    verifier: String,
}

impl Authorization {
    fn new(endpoint: &str, scope: &str, extra: &[(&str, &str)]) -> Self {
        let (state, nonce, verifier) = (random_token(), random_token(), random_token());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let mut url = Url::parse(endpoint).unwrap();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", CLIENT_ID)
            .append_pair("redirect_uri", REDIRECT_URI)
            .append_pair("scope", scope)
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .extend_pairs(extra);
        Self {
            url: url.into(),
            state,
            nonce,
            verifier,
        }
    }
}

fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

struct Rp {
    provider: OidcProvider,
    discovery: Value,
    http: reqwest::Client,
}

impl Rp {
    async fn start(accounts: Value) -> Self {
        let client = OidcClient::new(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI);
        let provider = OidcProvider::start(&[client], accounts).await.unwrap();
        let http = reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap();
        let discovery = http
            .get(format!(
                "{}/.well-known/openid-configuration",
                provider.issuer()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Self {
            provider,
            discovery,
            http,
        }
    }

    fn endpoint(&self, name: &str) -> &str {
        self.discovery[name].as_str().unwrap()
    }

    fn authorize(&self, extra: &[(&str, &str)]) -> Authorization {
        Authorization::new(
            self.endpoint("authorization_endpoint"),
            "openid email profile",
            extra,
        )
    }

    /// Checks the callback as a relying party must, and returns its code.
    fn code_from(&self, callback: &Url, authorization: &Authorization) -> String {
        assert!(callback.as_str().starts_with(REDIRECT_URI), "{callback}");
        assert_eq!(param(callback, "state"), Some(authorization.state.clone()));
        assert_eq!(
            param(callback, "iss").as_deref(),
            Some(self.provider.issuer()),
            "RFC 9207 iss on the authorization response"
        );
        param(callback, "code").expect("a code in the callback")
    }

    /// Redeems `code` with client_secret_basic (or _post), returning the status and the JSON body.
    async fn redeem(&self, code: &str, verifier: Option<&str>, post: bool) -> (StatusCode, Value) {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT_URI),
        ];
        if let Some(verifier) = verifier {
            form.push(("code_verifier", verifier));
        }
        let mut request = self.http.post(self.endpoint("token_endpoint"));
        if post {
            form.extend([("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)]);
        } else {
            request = request.basic_auth(CLIENT_ID, Some(CLIENT_SECRET));
        }
        let response = request.form(&form).send().await.unwrap();
        (response.status(), response.json().await.unwrap())
    }

    async fn userinfo(&self, access_token: &str) -> Value {
        let response = self
            .http
            .get(self.endpoint("userinfo_endpoint"))
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// The whole flow in a fresh browser: the ID token's claims and userinfo.
    async fn sign_in(&self, login: &str, post: bool) -> (Value, Value) {
        let authorization = self.authorize(&[]);
        let callback = sign_in_at_provider(&authorization.url, login)
            .await
            .unwrap();
        let code = self.code_from(&callback, &authorization);
        let (status, tokens) = self
            .redeem(&code, Some(&authorization.verifier), post)
            .await;
        assert_eq!(status, StatusCode::OK, "{tokens}");
        let id_token = jwt_claims(tokens["id_token"].as_str().expect("an ID token"));
        assert_eq!(id_token["iss"], self.provider.issuer());
        assert_eq!(id_token["aud"], CLIENT_ID);
        assert_eq!(id_token["nonce"], authorization.nonce.as_str());
        let userinfo = self
            .userinfo(tokens["access_token"].as_str().unwrap())
            .await;
        (id_token, userinfo)
    }
}

#[tokio::test]
async fn a_configured_account_signs_in_with_pkce_and_userinfo_has_its_email() {
    let rp = Rp::start(json!({
        "alice": {
            "sub": "alice-subject", "email": "alice@example.com", "email_verified": true,
            "name": "Alice Liddell", "preferred_username": "alice", "picture": "https://example.com/a.png"
        }
    }))
    .await;

    let (id_token, userinfo) = rp.sign_in("alice", false).await;

    assert_eq!(id_token["sub"], "alice-subject");
    assert_eq!(
        id_token.get("email"),
        None,
        "email claims go to userinfo only"
    );
    assert_eq!(userinfo["sub"], "alice-subject");
    assert_eq!(userinfo["email"], "alice@example.com");
    assert_eq!(userinfo["email_verified"], true);
    assert_eq!(userinfo["preferred_username"], "alice");
    assert_eq!(userinfo["picture"], "https://example.com/a.png");
}

#[tokio::test]
async fn any_other_login_signs_in_with_client_secret_post_and_an_example_address() {
    let rp = Rp::start(json!({})).await;

    let (id_token, userinfo) = rp.sign_in("zoe", true).await;

    assert_eq!(id_token["sub"], "zoe");
    assert_eq!(userinfo["email"], "zoe@example.test");
    assert_eq!(userinfo["email_verified"], true);
    assert_eq!(userinfo["name"], "zoe");
}

#[tokio::test]
async fn an_account_put_at_run_time_signs_in_with_its_claims() {
    let rp = Rp::start(json!({})).await;
    rp.provider
        .put_account(
            "carol",
            json!({"sub": "c-1", "email": "carol@corp.example", "email_verified": false}),
        )
        .await
        .unwrap();

    let (id_token, userinfo) = rp.sign_in("carol", false).await;

    assert_eq!(id_token["sub"], "c-1");
    assert_eq!(userinfo["email"], "carol@corp.example");
    assert_eq!(userinfo["email_verified"], false);
}

#[tokio::test]
async fn a_code_is_refused_without_its_verifier_and_redeemed_once() {
    let rp = Rp::start(json!({})).await;
    let authorization = rp.authorize(&[]);
    let callback = sign_in_at_provider(&authorization.url, "mallory")
        .await
        .unwrap();
    let code = rp.code_from(&callback, &authorization);

    let (status, body) = rp.redeem(&code, Some(&random_token()), false).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    let (status, body) = rp.redeem(&code, None, false).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // A refused redemption does not spend the code at oidc-provider; a successful one does.
    let (status, body) = rp.redeem(&code, Some(&authorization.verifier), false).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = rp.redeem(&code, Some(&authorization.verifier), false).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");

    // PKCE is required: an authorization request without a challenge comes back as an error.
    let mut url = Url::parse(rp.endpoint("authorization_endpoint")).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", REDIRECT_URI)
        .append_pair("scope", "openid")
        .append_pair("state", "s");
    let callback = sign_in_at_provider(url.as_str(), "mallory").await.unwrap();
    assert_eq!(
        param(&callback, "error").as_deref(),
        Some("invalid_request")
    );
}

#[tokio::test]
async fn cancelling_at_the_consent_page_redirects_with_access_denied() {
    let rp = Rp::start(json!({})).await;
    let authorization = rp.authorize(&[]);

    let callback = deny_at_provider(&authorization.url, "bob").await.unwrap();

    assert!(callback.as_str().starts_with(REDIRECT_URI), "{callback}");
    assert_eq!(param(&callback, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&callback, "state"), Some(authorization.state));
    assert_eq!(
        param(&callback, "iss").as_deref(),
        Some(rp.provider.issuer())
    );
    assert_eq!(param(&callback, "code"), None);
}

#[tokio::test]
async fn a_second_visit_is_single_sign_on_unless_prompt_login_or_max_age_asks_again() {
    let rp = Rp::start(json!({})).await;
    let browser = ProviderBrowser::new().unwrap();
    let visit = |authorization: Authorization| {
        let browser = &browser;
        let rp = &rp;
        async move {
            let visit = browser
                .visit(&authorization.url, "dana", ConsentAnswer::Allow)
                .await
                .unwrap();
            let code = rp.code_from(&visit.callback, &authorization);
            let (status, tokens) = rp.redeem(&code, Some(&authorization.verifier), false).await;
            assert_eq!(status, StatusCode::OK, "{tokens}");
            (visit, jwt_claims(tokens["id_token"].as_str().unwrap()))
        }
    };

    let (first, _) = visit(rp.authorize(&[])).await;
    assert!(first.login_form_shown && first.consent_shown);

    let (again, _) = visit(rp.authorize(&[])).await;
    assert!(!again.login_form_shown, "the provider's session signs in");
    assert!(!again.consent_shown, "consent was given once");

    let (forced, id_token) = visit(rp.authorize(&[("prompt", "login")])).await;
    assert!(forced.login_form_shown, "prompt=login asks for the login");
    let auth_time = id_token["auth_time"]
        .as_i64()
        .expect("auth_time after prompt=login");

    let (young, id_token) = visit(rp.authorize(&[("max_age", "60")])).await;
    assert!(
        !young.login_form_shown,
        "the last login is younger than max_age"
    );
    assert_eq!(id_token["auth_time"].as_i64(), Some(auth_time));
    // The provider counts whole seconds and asks again only when more than max_age passed, so even
    // max_age=0 needs the next second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (old, id_token) = visit(rp.authorize(&[("max_age", "0")])).await;
    assert!(old.login_form_shown, "the last login is older than max_age");
    assert!(id_token["auth_time"].as_i64().unwrap() > auth_time);
}

const GITHUB_REDIRECT_URI: &str = "http://127.0.0.1:9/api/auth/github/callback";

async fn github() -> GithubStandIn {
    GithubStandIn::start(json!({
        "client_id": "gh-client",
        "client_secret": "gh-secret",
        "redirect_uris": [GITHUB_REDIRECT_URI],
        "user": {"id": 123, "login": "octocat", "name": "The Octocat", "avatar_url": "https://example.com/o.png", "email": null},
        "emails": [
            {"email": "octocat@example.com", "primary": true, "verified": true, "visibility": "private"},
            {"email": "old@example.com", "primary": false, "verified": false, "visibility": null}
        ]
    }))
    .await
    .unwrap()
}

/// GitHub's authorize without a page: the redirect to the callback, and the verifier.
async fn github_code(github: &GithubStandIn, http: &reqwest::Client) -> (String, String) {
    let (state, verifier) = (random_token(), random_token());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let response = http
        .get(github.auth_url())
        .query(&[
            ("client_id", "gh-client"),
            ("redirect_uri", GITHUB_REDIRECT_URI),
            ("state", &state),
            ("scope", "read:user user:email"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()[header::LOCATION].to_str().unwrap();
    let callback = Url::parse(location).unwrap();
    assert!(location.starts_with(GITHUB_REDIRECT_URI), "{location}");
    assert_eq!(param(&callback, "state"), Some(state));
    (param(&callback, "code").unwrap(), verifier)
}

async fn github_token(
    github: &GithubStandIn,
    http: &reqwest::Client,
    code: &str,
    verifier: &str,
) -> Value {
    http.post(github.token_url())
        .header(header::ACCEPT, "application/json")
        .basic_auth("gh-client", Some("gh-secret"))
        .form(&[
            ("code", code),
            ("redirect_uri", GITHUB_REDIRECT_URI),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn github_get(
    github: &GithubStandIn,
    http: &reqwest::Client,
    path: &str,
    token: &str,
) -> (StatusCode, Value) {
    let response = http
        .get(format!("{}{path}", github.api_url()))
        .header(header::USER_AGENT, "testkit")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test]
async fn the_github_stand_in_signs_in_its_user_with_pkce_and_shows_the_emails() {
    let github = github().await;
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();

    let (code, verifier) = github_code(&github, &http).await;
    let token = github_token(&github, &http, &code, &verifier).await;
    assert_eq!(token["token_type"], "bearer");
    assert_eq!(token["scope"], "read:user,user:email");
    let access_token = token["access_token"].as_str().unwrap();

    let (status, user) = github_get(&github, &http, "/user", access_token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user["id"], 123);
    assert_eq!(user["login"], "octocat");
    let (status, emails) = github_get(&github, &http, "/user/emails", access_token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(emails[0]["email"], "octocat@example.com");
    assert_eq!(emails[0]["primary"], true);

    // A new user for the next sign-in; the token issued keeps its own.
    github
        .set_user(
            json!({"id": 456, "login": "hubot"}),
            json!([{"email": "hubot@example.com", "primary": true, "verified": true, "visibility": "public"}]),
        )
        .await
        .unwrap();
    let (code, verifier) = github_code(&github, &http).await;
    let token = github_token(&github, &http, &code, &verifier).await;
    let (_, user) = github_get(
        &github,
        &http,
        "/user",
        token["access_token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(user["id"], 456);
    let (_, user) = github_get(&github, &http, "/user", access_token).await;
    assert_eq!(user["id"], 123);
}

#[tokio::test]
async fn the_github_stand_in_refuses_as_github_does() {
    let github = github().await;
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();

    let (code, verifier) = github_code(&github, &http).await;
    let wrong = github_token(&github, &http, &code, &random_token()).await;
    assert_eq!(wrong["error"], "bad_verification_code", "{wrong}");
    let spent = github_token(&github, &http, &code, &verifier).await;
    assert_eq!(
        spent["error"], "bad_verification_code",
        "a code is single use"
    );

    let (code, verifier) = github_code(&github, &http).await;
    let response = http
        .post(github.token_url())
        .header(header::ACCEPT, "application/json")
        .form(&[
            ("client_id", "gh-client"),
            ("client_secret", "not-the-secret"),
            ("code", &code),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "GitHub answers 200 with an error"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "incorrect_client_credentials");

    let (status, body) = github_get(&github, &http, "/user", "gho_unknown").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["message"], "Bad credentials");
    let status = http
        .get(format!("{}/user", github.api_url()))
        .bearer_auth("gho_unknown")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::FORBIDDEN, "no User-Agent");

    github.deny_next_authorization().await.unwrap();
    let response = http
        .get(github.auth_url())
        .query(&[("client_id", "gh-client"), ("state", "s1")])
        .send()
        .await
        .unwrap();
    let callback = Url::parse(response.headers()[header::LOCATION].to_str().unwrap()).unwrap();
    assert_eq!(param(&callback, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&callback, "state").as_deref(), Some("s1"));
}
