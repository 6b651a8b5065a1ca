//! Social login against a real OpenID Connect provider (`oidc-provider` from npm, on loopback)
//! and a stand-in for GitHub: the whole trip (our authorize, the provider's login and consent
//! pages, our callback with the browser's cookie, the app's code redemption), whom it signs in,
//! linking from the account, and the attacks on each step.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::{Response, StatusCode, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use testkit::{GithubStandIn, OidcClient, OidcProvider, deny_at_provider, sign_in_at_provider};
use url::Url;

use crate::helpers::{
    Options, PASSWORD, TestApp, count, errors, spawn_with, sql, token_pair, unique_email,
};

const PUBLIC: &str = "http://localhost:8080";
const APP: &str = "https://app.example.com/signed-in";

/// The service with a trusted OIDC provider `dev`, an untrusted one `corp` (same real provider,
/// another client) and `github` on the stand-in.
struct World {
    app: TestApp,
    idp: OidcProvider,
    github: GithubStandIn,
}

fn callback_of(provider: &str) -> String {
    format!("{PUBLIC}/api/auth/{provider}/callback")
}

async fn world() -> World {
    world_with(&[]).await
}

async fn world_with(extra: &[(&'static str, &str)]) -> World {
    let idp = OidcProvider::start(
        &[
            OidcClient::new("dev-client", "dev-secret", callback_of("dev")),
            OidcClient::new("corp-client", "corp-secret", callback_of("corp")),
        ],
        json!({}),
    )
    .await
    .expect("the OpenID provider starts");
    let github = GithubStandIn::start(json!({
        "client_id": "gh-client",
        "client_secret": "gh-secret",
        "redirect_uris": [callback_of("github")],
        "user": {"id": 4242, "login": "octo", "name": "Octo Cat", "avatar_url": "https://avatars.example.com/u/4242", "email": null},
        "emails": [{"email": "octo@example.com", "primary": true, "verified": true, "visibility": "public"}],
    }))
    .await
    .expect("the GitHub stand-in starts");
    let mut vars: Vec<(&'static str, String)> = vec![
        ("ACCOUNTS_PUBLIC_URL", PUBLIC.into()),
        ("ACCOUNTS_SOCIAL_PROVIDERS", "dev,corp,github".into()),
        ("ACCOUNTS_SOCIAL_DEV_ISSUER", idp.issuer().into()),
        ("ACCOUNTS_SOCIAL_DEV_CLIENT_ID", "dev-client".into()),
        ("ACCOUNTS_SOCIAL_DEV_CLIENT_SECRET", "dev-secret".into()),
        ("ACCOUNTS_SOCIAL_DEV_TRUST_EMAIL", "true".into()),
        ("ACCOUNTS_SOCIAL_CORP_ISSUER", idp.issuer().into()),
        ("ACCOUNTS_SOCIAL_CORP_CLIENT_ID", "corp-client".into()),
        ("ACCOUNTS_SOCIAL_CORP_CLIENT_SECRET", "corp-secret".into()),
        ("ACCOUNTS_SOCIAL_GITHUB_CLIENT_ID", "gh-client".into()),
        ("ACCOUNTS_SOCIAL_GITHUB_CLIENT_SECRET", "gh-secret".into()),
        ("ACCOUNTS_SOCIAL_GITHUB_AUTH_URL", github.auth_url()),
        ("ACCOUNTS_SOCIAL_GITHUB_TOKEN_URL", github.token_url()),
        ("ACCOUNTS_SOCIAL_GITHUB_API_URL", github.api_url()),
        (
            "ACCOUNTS_SOCIAL_REDIRECTS",
            format!("{APP},{PUBLIC}/account/signed-in"),
        ),
    ];
    vars.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let app = spawn_with(Options {
        vars,
        ..Options::default()
    })
    .await;
    // Discovery runs in the background: wait until the provider is known.
    for _ in 0..100 {
        let probe = start_at(&app, "dev", &App::new(), None).await;
        if probe.status() == StatusCode::FOUND {
            return World { app, idp, github };
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the provider was never discovered");
}

/// What the app keeps while a sign-in runs: its PKCE verifier and its state.
struct App {
    verifier: String,
    state: String,
}

impl App {
    fn new() -> Self {
        Self {
            verifier: URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes().repeat(2)),
            state: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    fn challenge(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.verifier.as_bytes()))
    }
}

/// A browser: its binding cookie with us, once it has one.
#[derive(Default, Clone)]
struct Browser {
    cookie: Option<String>,
}

async fn start_at(app: &TestApp, provider: &str, with: &App, cookie: Option<&str>) -> Response {
    let mut url = Url::parse(&app.url(&format!("/api/auth/{provider}/authorize"))).unwrap();
    url.query_pairs_mut()
        .append_pair("redirect_to", APP)
        .append_pair("code_challenge", &with.challenge())
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", &with.state);
    get_with_cookie(app, url.as_str(), cookie).await
}

async fn get_with_cookie(app: &TestApp, url: &str, cookie: Option<&str>) -> Response {
    let mut request = app.client.get(url);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, format!("accounts-social={cookie}"));
    }
    request.send().await.expect("request")
}

fn location(response: &Response) -> Url {
    let value = response
        .headers()
        .get(header::LOCATION)
        .unwrap_or_else(|| panic!("a redirect, got {}", response.status()))
        .to_str()
        .unwrap();
    Url::parse(value).expect("an absolute Location")
}

fn set_cookie(response: &Response) -> Option<String> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("accounts-social="))
        .map(|v| v.split(';').next().unwrap().to_string())
}

fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

impl World {
    /// Our authorize in `browser` (keeping the cookie it gets), then the provider's pages as
    /// `login`: the callback URL the provider sends the browser to.
    async fn to_provider_and_back(
        &self,
        provider: &str,
        with: &App,
        browser: &mut Browser,
        login: &str,
    ) -> Url {
        let started = start_at(&self.app, provider, with, browser.cookie.as_deref()).await;
        assert_eq!(
            started.status(),
            StatusCode::FOUND,
            "authorize answered {}",
            started.status()
        );
        if let Some(cookie) = set_cookie(&started) {
            browser.cookie = Some(cookie);
        }
        self.at_provider(location(&started).as_str(), login).await
    }

    async fn at_provider(&self, url: &str, login: &str) -> Url {
        if url.starts_with(self.github.base_url()) {
            // The stand-in has no pages: it answers at once.
            let answer = crate::helpers::client(None)
                .get(url)
                .send()
                .await
                .expect("GitHub");
            return location(&answer);
        }
        sign_in_at_provider(url, login)
            .await
            .expect("the provider's pages")
    }

    /// Our callback, reached by `browser`: where we send it next (the app's URL).
    async fn callback(&self, callback: &Url, browser: &Browser) -> Response {
        let path = &callback.as_str()[PUBLIC.len()..];
        get_with_cookie(&self.app, &self.app.url(path), browser.cookie.as_deref()).await
    }

    /// The whole trip for `login`: the app's URL we send the browser back to.
    async fn sign_in(&self, provider: &str, with: &App, login: &str) -> Url {
        let mut browser = Browser::default();
        let callback = self
            .to_provider_and_back(provider, with, &mut browser, login)
            .await;
        let back = self.callback(&callback, &browser).await;
        assert_eq!(
            back.status(),
            StatusCode::FOUND,
            "the callback answered {}",
            back.status()
        );
        let back = location(&back);
        assert!(back.as_str().starts_with(APP), "sent to {back}");
        assert_eq!(param(&back, "state").as_deref(), Some(with.state.as_str()));
        back
    }

    async fn redeem(&self, code: &str, verifier: &str) -> Response {
        self.app
            .post(
                "/api/auth/token",
                &json!({ "code": code, "code_verifier": verifier }),
            )
            .await
    }

    /// Signs `login` in through `provider` and redeems the code: the login answer.
    async fn social_login(&self, provider: &str, login: &str) -> Value {
        let with = App::new();
        let back = self.sign_in(provider, &with, login).await;
        let code = param(&back, "code").unwrap_or_else(|| panic!("a code, got {back}"));
        let answer = self.redeem(&code, &with.verifier).await;
        assert_eq!(answer.status(), StatusCode::OK);
        answer.json().await.unwrap()
    }

    async fn put_account(&self, login: &str, email: &str, verified: bool) {
        self.idp
            .put_account(
                login,
                json!({"sub": format!("sub-{login}"), "email": email, "email_verified": verified,
                       "name": "Ada Lovelace", "preferred_username": login}),
            )
            .await
            .expect("an account at the provider");
    }
}

fn new_login() -> String {
    format!("u{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

#[tokio::test]
async fn a_vouched_for_provider_account_becomes_a_verified_account_without_a_password() {
    let w = world().await;
    let login = new_login();
    let email = format!("{login}@example.org");
    w.put_account(&login, &email, true).await;
    let first = w.social_login("dev", &login).await;
    let user = &first["user"];
    assert_eq!(user["email"], email);
    assert_eq!(user["verified"], true);
    assert_eq!(user["has_password"], false);
    assert_eq!(user["username"], login.as_str());
    assert_eq!(user["first_name"], "Ada");
    assert_eq!(user["last_name"], "Lovelace");
    let (access, _) = token_pair(&first);
    let claims = crate::helpers::claims_of(&access);
    assert_eq!(claims["amr"], json!(["oauth"]));
    assert_eq!(claims["aal"], "aal1");
    // Registered without a confirmation link: the provider vouched for the address.
    let registered = w.app.outbox_events("user-registered").await;
    assert_eq!(registered.len(), 1);
    // The browser that signed up is the account's first device: no new-sign-in notice.
    assert!(w.app.outbox_events("new-sign-in").await.is_empty());
    assert!(registered[0].get("confirmation_url").is_none());
    // The same provider account signs in to the same account again; the list shows it.
    let again = w.social_login("dev", &login).await;
    assert_eq!(again["user"]["id"], user["id"]);
    let listed: Value = w
        .app
        .client
        .get(w.app.url("/api/user/identities"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["identities"][0]["provider"], "dev");
    assert_eq!(listed["identities"][0]["email"], email);
    // A password login to a password-less account is a wrong password.
    let by_password = w.app.login(&email, PASSWORD).await;
    assert_eq!(by_password.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_callback_planted_in_another_browser_signs_no_one_in() {
    let w = world().await;
    let login = new_login();
    w.put_account(&login, &format!("{login}@example.org"), true)
        .await;
    let with = App::new();
    let mut victim = Browser::default();
    let callback = w
        .to_provider_and_back("dev", &with, &mut victim, &login)
        .await;
    // Without the cookie, and with another browser's cookie: 400 and no redirect.
    let mut stranger = Browser::default();
    let _ = w
        .to_provider_and_back("dev", &App::new(), &mut stranger, &login)
        .await;
    for browser in [Browser::default(), stranger] {
        let planted = w.callback(&callback, &browser).await;
        assert_eq!(planted.status(), StatusCode::BAD_REQUEST);
        assert!(planted.headers().get(header::LOCATION).is_none());
        assert!(errors(planted).await["state"].is_array());
    }
    assert_eq!(
        count(&w.app, "SELECT count(*) AS n FROM social_codes").await,
        0
    );
    // The browser that started it still completes, once; a replay of its state is refused.
    let back = w.callback(&callback, &victim).await;
    assert_eq!(back.status(), StatusCode::FOUND);
    assert!(param(&location(&back), "code").is_some());
    let replay = w.callback(&callback, &victim).await;
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn our_code_works_once_only_with_its_verifier_and_only_for_sixty_seconds() {
    let w = world().await;
    let login = new_login();
    w.put_account(&login, &format!("{login}@example.org"), true)
        .await;
    let code_of = |back: Url| param(&back, "code").expect("a code");

    // A wrong verifier spends the code: the right one comes too late.
    let with = App::new();
    let code = code_of(w.sign_in("dev", &with, &login).await);
    let wrong = w.redeem(&code, &App::new().verifier).await;
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    assert!(errors(wrong).await["code_verifier"].is_array());
    assert_eq!(
        w.redeem(&code, &with.verifier).await.status(),
        StatusCode::BAD_REQUEST
    );

    // A missing verifier is refused too.
    let with = App::new();
    let code = code_of(w.sign_in("dev", &with, &login).await);
    let missing = w
        .app
        .post("/api/auth/token", &json!({ "code": code }))
        .await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);

    // Used twice: the second is refused.
    let with = App::new();
    let code = code_of(w.sign_in("dev", &with, &login).await);
    assert_eq!(
        w.redeem(&code, &with.verifier).await.status(),
        StatusCode::OK
    );
    let twice = w.redeem(&code, &with.verifier).await;
    assert_eq!(twice.status(), StatusCode::BAD_REQUEST);
    assert!(errors(twice).await["code"].is_array());

    // After 60 seconds.
    let with = App::new();
    let code = code_of(w.sign_in("dev", &with, &login).await);
    sql(
        &w.app,
        "UPDATE social_codes SET expires_at = now() - interval '1 second'",
    )
    .await;
    assert_eq!(
        w.redeem(&code, &with.verifier).await.status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn authorize_needs_a_listed_redirect_and_an_s256_challenge() {
    let w = world().await;
    let with = App::new();
    let authorize = |redirect: &str, challenge: Option<&str>| {
        let mut url = Url::parse(&w.app.url("/api/auth/dev/authorize")).unwrap();
        url.query_pairs_mut().append_pair("redirect_to", redirect);
        if let Some(challenge) = challenge {
            url.query_pairs_mut()
                .append_pair("code_challenge", challenge);
        }
        url
    };
    let challenge = with.challenge();
    // (Waiting for discovery started flows of its own.)
    let states = "SELECT count(*) AS n FROM social_states";
    let before = count(&w.app, states).await;
    let refused = [
        authorize(APP, None),
        authorize(APP, Some("short")),
        authorize(
            "https://app.example.com.evil.test/signed-in",
            Some(&challenge),
        ),
        authorize(
            "https://app.example.com@evil.test/signed-in",
            Some(&challenge),
        ),
        authorize(
            "https://evil.test/?https://app.example.com/signed-in",
            Some(&challenge),
        ),
        authorize("http://app.example.com/signed-in", Some(&challenge)),
        authorize("https://app.example.com/signed-in/", Some(&challenge)),
        authorize("https://APP.example.com/signed-in", Some(&challenge)),
        authorize("//app.example.com/signed-in", Some(&challenge)),
    ];
    for url in refused {
        let answer = get_with_cookie(&w.app, url.as_str(), None).await;
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{url}");
        assert!(answer.headers().get(header::LOCATION).is_none());
    }
    let mut plain = authorize(APP, Some(&challenge));
    plain
        .query_pairs_mut()
        .append_pair("code_challenge_method", "plain");
    assert_eq!(
        get_with_cookie(&w.app, plain.as_str(), None).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        count(&w.app, states).await,
        before,
        "a refused request wrote a flow"
    );
    let unknown = get_with_cookie(&w.app, &w.app.url("/api/auth/nope/authorize"), None).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    // The listed one goes to the provider with our own state, nonce and S256 challenge.
    let started = get_with_cookie(&w.app, authorize(APP, Some(&challenge)).as_str(), None).await;
    assert_eq!(started.status(), StatusCode::FOUND);
    let to = location(&started);
    assert!(to.as_str().starts_with(w.idp.issuer()));
    assert_eq!(param(&to, "code_challenge_method").as_deref(), Some("S256"));
    assert_ne!(param(&to, "code_challenge"), Some(challenge));
    assert!(param(&to, "nonce").is_some_and(|n| n.len() >= 43));
    let cookie = started
        .headers()
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
}

#[tokio::test]
async fn an_address_that_an_account_has_is_never_linked_silently() {
    let w = world().await;
    for verified in [true, false] {
        let (email, _) = w.app.register_user().await;
        if verified {
            w.app.verify_address(&email).await;
        }
        let login = new_login();
        w.put_account(&login, &email, true).await;
        let back = w.sign_in("dev", &App::new(), &login).await;
        assert_eq!(param(&back, "error").as_deref(), Some("account_exists"));
        assert!(param(&back, "code").is_none());
        // Nothing linked, and the owner's password still works.
        assert_eq!(w.app.login(&email, PASSWORD).await.status(), StatusCode::OK);
    }
    assert_eq!(
        count(&w.app, "SELECT count(*) AS n FROM identities").await,
        0
    );
}

#[tokio::test]
async fn an_untrusted_or_unverified_address_signs_no_one_in_whatever_exists_here() {
    let w = world().await;
    let (taken, _) = w.app.register_user().await;
    for (provider, email, verified) in [
        ("corp", unique_email(), true),
        ("corp", taken.clone(), true),
        ("dev", unique_email(), false),
        ("dev", taken, false),
    ] {
        let login = new_login();
        w.put_account(&login, &email, verified).await;
        let back = w.sign_in(provider, &App::new(), &login).await;
        assert_eq!(
            param(&back, "error").as_deref(),
            Some("email_unverified"),
            "{provider} {verified}"
        );
    }
    assert_eq!(
        count(&w.app, "SELECT count(*) AS n FROM identities").await,
        0
    );
    assert_eq!(count(&w.app, "SELECT count(*) AS n FROM users").await, 1);
}

#[tokio::test]
async fn one_providers_state_on_another_providers_callback_is_refused() {
    let w = world().await;
    let login = new_login();
    w.put_account(&login, &format!("{login}@example.org"), true)
        .await;
    let mut browser = Browser::default();
    let callback = w
        .to_provider_and_back("dev", &App::new(), &mut browser, &login)
        .await;
    let mixed = Url::parse(&callback.as_str().replace("/auth/dev/", "/auth/corp/")).unwrap();
    let answer = w.callback(&mixed, &browser).await;
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    // An `iss` that is not the provider's is a mix-up too.
    let mut forged = callback.clone();
    let pairs: Vec<(String, String)> = callback
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "iss" {
                "https://evil.test".into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    forged.query_pairs_mut().clear().extend_pairs(pairs);
    let back = location(&w.callback(&forged, &browser).await);
    assert_eq!(param(&back, "error").as_deref(), Some("invalid_request"));
    assert_eq!(
        count(&w.app, "SELECT count(*) AS n FROM social_codes").await,
        0
    );
}

#[tokio::test]
async fn cancelling_at_the_provider_comes_back_as_access_denied() {
    let w = world().await;
    let with = App::new();
    let started = start_at(&w.app, "dev", &with, None).await;
    let browser = Browser {
        cookie: set_cookie(&started),
    };
    let callback = deny_at_provider(location(&started).as_str(), &new_login())
        .await
        .expect("the provider's pages");
    let back = location(&w.callback(&callback, &browser).await);
    assert_eq!(param(&back, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&back, "state").as_deref(), Some(with.state.as_str()));
}

/// A password account that just logged in (a fresh session): its access token.
async fn password_account(w: &World) -> (String, String) {
    let (email, _) = w.app.register_user().await;
    w.app.verify_address(&email).await;
    let login: Value = w.app.login(&email, PASSWORD).await.json().await.unwrap();
    (email, token_pair(&login).0)
}

impl World {
    /// Asks for a link of `provider` for the account of `access`, for the app `with`, and opens
    /// the authorize URL in a browser without our cookie: the URL (a path here) and the answer.
    async fn open_link(&self, access: &str, provider: &str, with: &App) -> (String, Response) {
        let answer: Value = self
            .app
            .post_authed(
                &format!("/api/user/identities/{provider}"),
                access,
                &json!({ "redirect_to": APP, "code_challenge": with.challenge() }),
            )
            .await
            .json()
            .await
            .unwrap();
        let authorize = answer["authorize_url"].as_str().expect("an authorize_url");
        let path = authorize[PUBLIC.len()..].to_string();
        let started = get_with_cookie(&self.app, &self.app.url(&path), None).await;
        (path, started)
    }

    /// Links `provider` to the account of `access` as `login` (the app's URL it ends at).
    async fn link(&self, access: &str, provider: &str, login: &str, browser: &mut Browser) -> Url {
        let with = App::new();
        let answer = self
            .app
            .post_authed(
                &format!("/api/user/identities/{provider}"),
                access,
                &json!({ "redirect_to": APP, "code_challenge": with.challenge(), "state": with.state }),
            )
            .await;
        assert_eq!(answer.status(), StatusCode::OK);
        let body: Value = answer.json().await.unwrap();
        let authorize = body["authorize_url"].as_str().expect("an authorize_url");
        assert!(authorize.starts_with(&format!("{PUBLIC}/api/auth/{provider}/authorize?link=")));
        let started = get_with_cookie(
            &self.app,
            &self.app.url(&authorize[PUBLIC.len()..]),
            browser.cookie.as_deref(),
        )
        .await;
        assert_eq!(started.status(), StatusCode::FOUND);
        if let Some(cookie) = set_cookie(&started) {
            browser.cookie = Some(cookie);
        }
        let callback = self.at_provider(location(&started).as_str(), login).await;
        let back = location(&self.callback(&callback, browser).await);
        // The app that asked for the link redeems the code: that is when the link is made.
        if let Some(code) = param(&back, "code") {
            let redeemed = self.redeem(&code, &with.verifier).await;
            assert_eq!(redeemed.status(), StatusCode::OK);
        }
        back
    }
}

#[tokio::test]
async fn a_signed_in_owner_links_a_provider_account_and_then_signs_in_with_it() {
    let w = world().await;
    let (email, access) = password_account(&w).await;
    let login = new_login();
    // The provider's address may be any: the owner proved both sides.
    w.put_account(&login, &unique_email(), false).await;
    let back = w
        .link(&access, "dev", &login, &mut Browser::default())
        .await;
    assert!(param(&back, "code").is_some(), "{back}");
    let linked = w.app.outbox_events("identity-linked").await;
    assert_eq!(linked.len(), 1);
    assert_eq!(linked[0]["email"], email);
    assert!(
        linked[0]["reject_url"]
            .as_str()
            .unwrap()
            .contains("reject-sign-in")
    );
    let signed_in = w.social_login("dev", &login).await;
    assert_eq!(signed_in["user"]["email"], email);
    assert_eq!(signed_in["user"]["has_password"], true);
    assert_eq!(
        count(
            &w.app,
            "SELECT count(*) AS n FROM audit_log WHERE action = 'identity.linked'"
        )
        .await,
        1
    );

    // The provider account is this user's: another account linking it gets identity_taken.
    let (_, other) = password_account(&w).await;
    let taken = w.link(&other, "dev", &login, &mut Browser::default()).await;
    assert_eq!(param(&taken, "error").as_deref(), Some("identity_taken"));
    assert_eq!(
        count(&w.app, "SELECT count(*) AS n FROM identities").await,
        1
    );
}

#[tokio::test]
async fn a_link_started_by_one_account_and_completed_in_another_browser_links_nothing() {
    let w = world().await;
    let (_, access) = password_account(&w).await;
    let with = App::new();
    // The intruder's browser opens the link and gets the provider's URL; the victim is lured to
    // complete it at the provider, then to our callback in the victim's own browser.
    let (authorize, started) = w.open_link(&access, "dev", &with).await;
    let login = new_login();
    w.put_account(&login, &unique_email(), true).await;
    let callback = w.at_provider(location(&started).as_str(), &login).await;
    let mut victim = Browser::default();
    let _ = w
        .to_provider_and_back("dev", &App::new(), &mut victim, &login)
        .await;
    assert_eq!(
        w.callback(&callback, &victim).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        count(&w.app, "SELECT count(*) AS n FROM identities").await,
        0
    );
    // The ticket worked once.
    let again = get_with_cookie(&w.app, &w.app.url(&authorize), None).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unlinking_never_removes_the_last_way_in() {
    let w = world().await;
    let login = new_login();
    w.put_account(&login, &format!("{login}@example.org"), true)
        .await;
    let social = w.social_login("dev", &login).await;
    let (access, _) = token_pair(&social);
    let delete = |provider: &str| {
        w.app
            .client
            .delete(w.app.url(&format!("/api/user/identities/{provider}")))
            .bearer_auth(&access)
            .send()
    };
    let last = delete("dev").await.unwrap();
    assert_eq!(last.status(), StatusCode::BAD_REQUEST);
    assert!(errors(last).await["provider"].is_array());
    // With a second provider linked, one may go.
    let gh_email = unique_email();
    w.github
        .set_user(json!({"id": 777, "login": new_login(), "name": null, "avatar_url": null, "email": null}),
                  json!([{"email": gh_email, "primary": true, "verified": true, "visibility": null}]))
        .await
        .unwrap();
    let back = w.link(&access, "github", "", &mut Browser::default()).await;
    assert!(param(&back, "code").is_some(), "{back}");
    assert_eq!(
        delete("dev").await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        delete("github").await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(w.app.outbox_events("identity-unlinked").await.len(), 1);
}

#[tokio::test]
async fn a_code_or_a_link_taken_before_a_password_reset_is_refused_after_it() {
    let w = world().await;
    let (email, access) = password_account(&w).await;
    let login = new_login();
    w.put_account(&login, &unique_email(), true).await;
    let _ = w
        .link(&access, "dev", &login, &mut Browser::default())
        .await;
    // A code from the linked provider account, then a reset: the code is void.
    let with = App::new();
    let code = param(&w.sign_in("dev", &with, &login).await, "code").unwrap();
    // A link ticket taken before the reset too.
    let (other_access, _) = {
        let login: Value = w.app.login(&email, PASSWORD).await.json().await.unwrap();
        token_pair(&login)
    };
    let ticket: Value = w
        .app
        .post_authed(
            "/api/user/identities/github",
            &other_access,
            &json!({ "redirect_to": APP, "code_challenge": App::new().challenge() }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(ticket["authorize_url"].is_string(), "{ticket}");
    w.app
        .post(
            "/api/users/password/forgot",
            &json!({ "user": { "email": email } }),
        )
        .await;
    let reset = w
        .app
        .link_token("password-reset-requested", "reset_url")
        .await;
    let done = w
        .app
        .post("/api/users/password/reset", &json!({ "token": reset, "password": "n3w-Passw0rd!", "confirm_password": "n3w-Passw0rd!" }))
        .await;
    assert_eq!(done.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        w.redeem(&code, &with.verifier).await.status(),
        StatusCode::BAD_REQUEST
    );
    let authorize = ticket["authorize_url"].as_str().unwrap();
    let started = get_with_cookie(&w.app, &w.app.url(&authorize[PUBLIC.len()..]), None).await;
    let browser = Browser {
        cookie: set_cookie(&started),
    };
    let callback = w.at_provider(location(&started).as_str(), "").await;
    let back = location(&w.callback(&callback, &browser).await);
    assert_eq!(param(&back, "error").as_deref(), Some("invalid_request"));
    assert_eq!(
        count(
            &w.app,
            "SELECT count(*) AS n FROM identities WHERE provider = 'github'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn rejecting_the_sign_in_that_linked_a_provider_unlinks_it() {
    let w = world().await;
    let (_, access) = password_account(&w).await;
    let login = new_login();
    // An address the provider does not vouch for: after the reject it signs no one in.
    w.put_account(&login, &unique_email(), false).await;
    let _ = w
        .link(&access, "dev", &login, &mut Browser::default())
        .await;
    let reject = w.app.link_token("identity-linked", "reject_url").await;
    let rejected = w
        .app
        .post("/api/users/sign-in/reject", &json!({ "token": reject }))
        .await;
    assert_eq!(rejected.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        count(&w.app, "SELECT count(*) AS n FROM identities").await,
        0
    );
    let back = w.sign_in("dev", &App::new(), &login).await;
    assert_eq!(param(&back, "error").as_deref(), Some("email_unverified"));
}

#[tokio::test]
async fn github_signs_in_by_numeric_id_with_its_verified_primary_address() {
    let w = world().await;
    let first = w.social_login("github", "").await;
    assert_eq!(first["user"]["email"], "octo@example.com");
    assert_eq!(first["user"]["username"], "octo");
    assert_eq!(first["user"]["image"], "https://avatars.example.com/u/4242");
    // A renamed login keeps the account (the id is the subject).
    w.github
        .set_user(json!({"id": 4242, "login": "octo-renamed", "name": "Octo", "avatar_url": null, "email": null}),
                  json!([{"email": "octo@example.com", "primary": true, "verified": true, "visibility": null}]))
        .await
        .unwrap();
    let renamed = w.social_login("github", "").await;
    assert_eq!(renamed["user"]["id"], first["user"]["id"]);
    // An unverified primary address is not vouched for.
    w.github
        .set_user(json!({"id": 5151, "login": "newbie", "name": null, "avatar_url": null, "email": null}),
                  json!([{"email": "verified-but-secondary@example.com", "primary": false, "verified": true, "visibility": null},
                         {"email": "newbie@example.com", "primary": true, "verified": false, "visibility": null}]))
        .await
        .unwrap();
    let back = w.sign_in("github", &App::new(), "").await;
    assert_eq!(param(&back, "error").as_deref(), Some("email_unverified"));
}

#[tokio::test]
async fn a_deactivated_user_is_refused_and_a_second_factor_still_asks_for_its_code() {
    let w = world().await;
    let owner = crate::mfa::mfa_owner(&w.app).await;
    let login = new_login();
    w.put_account(&login, &unique_email(), true).await;
    // Link with a fresh aal2 session (the owner just turned TOTP on in it).
    let back = w
        .link(&owner.access, "dev", &login, &mut Browser::default())
        .await;
    assert!(param(&back, "code").is_some(), "{back}");
    let answer = w.social_login("dev", &login).await;
    assert!(answer.get("user").is_none(), "{answer}");
    assert_eq!(answer["mfa"]["methods"], json!(["totp", "recovery_code"]));
    // Deactivated: the callback refuses.
    sql(
        &w.app,
        &format!("UPDATE users SET active = false WHERE id = '{}'", owner.id),
    )
    .await;
    let refused = w.sign_in("dev", &App::new(), &login).await;
    assert_eq!(param(&refused, "error").as_deref(), Some("access_denied"));
}

#[tokio::test]
async fn the_signed_in_page_starts_a_flow_and_serves_its_script_under_the_pages_policy() {
    let w = world().await;
    let page = w
        .app
        .client
        .get(w.app.url("/account/signed-in"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("data-providers=\"corp,dev,github\""));
    let script = w
        .app
        .client
        .get(w.app.url("/account/assets/signed-in.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), StatusCode::OK);
}

#[tokio::test]
async fn parallel_first_sign_ins_of_one_provider_account_make_one_account() {
    let w = world().await;
    for trial in 0..3 {
        let login = new_login();
        let email = format!("{login}@example.org");
        w.put_account(&login, &email, true).await;
        let mut flows = Vec::new();
        for _ in 0..6 {
            let with = App::new();
            let mut browser = Browser::default();
            let callback = w
                .to_provider_and_back("dev", &with, &mut browser, &login)
                .await;
            flows.push((with, browser, callback));
        }
        let backs = futures_util::future::join_all(
            flows
                .iter()
                .map(|(_, browser, callback)| w.callback(callback, browser)),
        )
        .await;
        let mut users = std::collections::BTreeSet::new();
        for ((with, _, _), back) in flows.iter().zip(backs) {
            let back = location(&back);
            let code = param(&back, "code").unwrap_or_else(|| panic!("trial {trial}: {back}"));
            let answer: Value = w.redeem(&code, &with.verifier).await.json().await.unwrap();
            users.insert(answer["user"]["id"].as_str().unwrap().to_string());
        }
        assert_eq!(users.len(), 1, "trial {trial}: {users:?}");
        let same = format!("SELECT count(*) AS n FROM users WHERE email = '{email}'");
        assert_eq!(count(&w.app, &same).await, 1);
    }
}

#[tokio::test]
async fn one_code_redeemed_twenty_times_at_once_signs_in_once() {
    let w = world().await;
    let login = new_login();
    w.put_account(&login, &format!("{login}@example.org"), true)
        .await;
    for trial in 0..3 {
        let with = App::new();
        let code = param(&w.sign_in("dev", &with, &login).await, "code").unwrap();
        let answers =
            futures_util::future::join_all((0..20).map(|_| w.redeem(&code, &with.verifier))).await;
        let statuses: Vec<StatusCode> = answers.iter().map(|a| a.status()).collect();
        let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        let refused = statuses
            .iter()
            .filter(|s| **s == StatusCode::BAD_REQUEST)
            .count();
        assert_eq!((ok, refused), (1, 19), "trial {trial}: {statuses:?}");
    }
}

#[tokio::test]
async fn a_client_starting_too_many_sign_ins_is_refused_without_a_write() {
    let w = world().await;
    let flooder = crate::helpers::client(Some("127.0.0.77".parse().unwrap()));
    let with = App::new();
    let mut url = Url::parse(&w.app.url("/api/auth/dev/authorize")).unwrap();
    url.query_pairs_mut()
        .append_pair("redirect_to", APP)
        .append_pair("code_challenge", &with.challenge());
    let states = "SELECT count(*) AS n FROM social_states";
    let before = count(&w.app, states).await;
    let mut started = 0;
    let mut refused = 0;
    for _ in 0..150 {
        match flooder.get(url.as_str()).send().await.unwrap().status() {
            StatusCode::FOUND => started += 1,
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("answered {other}"),
        }
    }
    assert!(refused > 0, "never refused after {started}");
    assert!(started <= 120, "{started} flows started in under an hour");
    assert_eq!(count(&w.app, states).await - before, started);
}

#[tokio::test]
async fn hostile_input_on_the_social_routes_gets_a_400_never_a_500() {
    let w = world().await;
    let with = App::new();
    let long = "x".repeat(600);
    let authorize = |pairs: &[(&str, &str)]| {
        let mut url = Url::parse(&w.app.url("/api/auth/dev/authorize")).unwrap();
        url.query_pairs_mut().extend_pairs(pairs);
        url.to_string()
    };
    let challenge = with.challenge();
    let urls = [
        authorize(&[
            ("redirect_to", APP),
            ("code_challenge", &challenge),
            ("state", &long),
        ]),
        authorize(&[
            ("redirect_to", "https://app.example.com/signed-in\0"),
            ("code_challenge", &challenge),
        ]),
        authorize(&[("redirect_to", APP), ("code_challenge", "\u{0}\u{202e}")]),
        authorize(&[("link", "not-a-ticket")]),
        format!(
            "{}&redirect_to=%FF%FE",
            authorize(&[("code_challenge", &challenge)])
        ),
        w.app.url("/api/auth/dev/callback"),
        w.app
            .url(&format!("/api/auth/dev/callback?state={long}&code=x")),
        w.app.url("/api/auth/dev/callback?state=%00&code=%00"),
        w.app.url("/api/auth/dev/callback?state=%FF"),
    ];
    for url in urls {
        let answer = get_with_cookie(&w.app, &url, Some("garbage")).await;
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{url}");
        assert!(errors(answer).await.is_object());
    }
    let bodies = [
        json!([]),
        json!({ "code": 5, "code_verifier": with.verifier }),
        json!({ "code": "x".repeat(10_000), "code_verifier": with.verifier }),
        json!({ "code": "\u{0}", "code_verifier": "\u{0}" }),
        json!({ "code": "abc", "code_verifier": with.verifier, "extra": true }),
        json!({}),
    ];
    for body in bodies {
        let answer = w.app.post("/api/auth/token", &body).await;
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{body}");
        assert!(errors(answer).await.is_object());
    }
    let raw = w
        .app
        .client
        .post(w.app.url("/api/auth/token"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(b"{\"code\": \"\xff\xfe\"}".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_link_ticket_completed_in_the_victims_browser_links_nothing_without_the_apps_verifier() {
    let w = world().await;
    let (_, intruder) = password_account(&w).await;
    let with = App::new();
    // The victim, lured to the URL, goes through it in the victim's own browser.
    let victim_login = new_login();
    w.put_account(&victim_login, &unique_email(), true).await;
    let (_, started) = w.open_link(&intruder, "dev", &with).await;
    let victim = Browser {
        cookie: set_cookie(&started),
    };
    let callback = w
        .at_provider(location(&started).as_str(), &victim_login)
        .await;
    let back = location(&w.callback(&callback, &victim).await);
    let code = param(&back, "code").expect("a code in the victim's browser");
    assert_eq!(
        count(&w.app, "SELECT count(*) AS n FROM identities").await,
        0
    );
    // The victim's app cannot redeem it (another verifier); nothing is linked, ever.
    let redeemed = w.redeem(&code, &App::new().verifier).await;
    assert_eq!(redeemed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        count(&w.app, "SELECT count(*) AS n FROM identities").await,
        0
    );
    assert!(w.app.outbox_events("identity-linked").await.is_empty());
}

#[tokio::test]
async fn an_unverified_address_cannot_link_a_provider() {
    let w = world().await;
    let (_, body) = w.app.register_user().await;
    let (access, _) = token_pair(&body);
    let answer = w
        .app
        .post_authed(
            "/api/user/identities/dev",
            &access,
            &json!({ "redirect_to": APP, "code_challenge": App::new().challenge() }),
        )
        .await;
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    assert!(errors(answer).await["email"].is_array());
    assert_eq!(
        count(&w.app, "SELECT count(*) AS n FROM social_link_tickets").await,
        0
    );
}

#[tokio::test]
async fn a_link_dies_with_the_session_that_asked_for_it() {
    let w = world().await;
    let (_, access) = password_account(&w).await;
    let with = App::new();
    let (_, started) = w.open_link(&access, "dev", &with).await;
    let browser = Browser {
        cookie: set_cookie(&started),
    };
    let login = new_login();
    w.put_account(&login, &unique_email(), true).await;
    let callback = w.at_provider(location(&started).as_str(), &login).await;
    let logout = w
        .app
        .post_authed("/api/users/logout", &access, &json!({}))
        .await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let back = location(&w.callback(&callback, &browser).await);
    assert_eq!(param(&back, "error").as_deref(), Some("invalid_request"));
    assert_eq!(
        count(&w.app, "SELECT count(*) AS n FROM identities").await,
        0
    );
}

#[tokio::test]
async fn a_refused_callback_writes_nothing() {
    let w = world().await;
    let login = new_login();
    w.put_account(&login, &format!("{login}@example.org"), true)
        .await;
    let mut browser = Browser::default();
    let callback = w
        .to_provider_and_back("dev", &App::new(), &mut browser, &login)
        .await;
    let audit = "SELECT count(*) AS n FROM audit_log";
    let before = count(&w.app, audit).await;
    let stranger = Browser {
        cookie: Some("B".repeat(43)),
    };
    let mixed = Url::parse(&callback.as_str().replace("/auth/dev/", "/auth/corp/")).unwrap();
    for _ in 0..10 {
        assert_eq!(
            w.callback(&callback, &stranger).await.status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            w.callback(&mixed, &browser).await.status(),
            StatusCode::BAD_REQUEST
        );
    }
    assert_eq!(count(&w.app, audit).await, before);
}

#[tokio::test]
async fn a_providers_old_session_is_not_a_fresh_sign_in_until_it_asks_again() {
    let w = world_with(&[("ACCOUNTS_REAUTH_SECONDS", "2")]).await;
    let login = new_login();
    w.put_account(&login, &format!("{login}@example.org"), true)
        .await;
    let browser_at_provider = testkit::ProviderBrowser::new().unwrap();
    let sign_in = async |prompt: Option<&str>| {
        let with = App::new();
        let mut url = Url::parse(&w.app.url("/api/auth/dev/authorize")).unwrap();
        url.query_pairs_mut()
            .append_pair("redirect_to", APP)
            .append_pair("code_challenge", &with.challenge())
            .append_pair("state", &with.state);
        if let Some(prompt) = prompt {
            url.query_pairs_mut().append_pair("prompt", prompt);
        }
        let started = get_with_cookie(&w.app, url.as_str(), None).await;
        let browser = Browser {
            cookie: set_cookie(&started),
        };
        let visit = browser_at_provider
            .visit(
                location(&started).as_str(),
                &login,
                testkit::ConsentAnswer::Allow,
            )
            .await
            .unwrap();
        let back = location(&w.callback(&visit.callback, &browser).await);
        let code = param(&back, "code").unwrap_or_else(|| panic!("{back}"));
        let answer: Value = w.redeem(&code, &with.verifier).await.json().await.unwrap();
        (token_pair(&answer).0, visit.login_form_shown)
    };
    let (_, first_login_shown) = sign_in(None).await;
    assert!(first_login_shown);
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    // Single sign-on from the provider's session of 3 s ago: signed in, but not fresh.
    let (stale, shown) = sign_in(None).await;
    assert!(!shown, "the provider asked again without prompt=login");
    let unlink = |token: String| {
        w.app
            .client
            .delete(w.app.url("/api/user/identities/dev"))
            .bearer_auth(token)
            .send()
    };
    let refused = unlink(stale).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(errors(refused).await["reauthentication"].is_array());
    // prompt=login: the provider asks again; that session is fresh (the unlink then meets the
    // last-way-in rule, not the step-up).
    let (fresh, shown) = sign_in(Some("login")).await;
    assert!(shown, "prompt=login did not ask again");
    let last = unlink(fresh).await.unwrap();
    assert_eq!(last.status(), StatusCode::BAD_REQUEST);
    assert!(errors(last).await["provider"].is_array());
    // GitHub cannot be asked again.
    let mut url = Url::parse(&w.app.url("/api/auth/github/authorize")).unwrap();
    url.query_pairs_mut()
        .append_pair("redirect_to", APP)
        .append_pair("code_challenge", &App::new().challenge())
        .append_pair("prompt", "login");
    assert_eq!(
        get_with_cookie(&w.app, url.as_str(), None).await.status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn an_answer_without_iss_from_a_provider_that_always_sends_it_is_refused() {
    let w = world().await;
    let login = new_login();
    w.put_account(&login, &format!("{login}@example.org"), true)
        .await;
    let mut browser = Browser::default();
    let callback = w
        .to_provider_and_back("dev", &App::new(), &mut browser, &login)
        .await;
    assert!(param(&callback, "iss").is_some(), "the provider sends iss");
    let mut stripped = callback.clone();
    let pairs: Vec<(String, String)> = callback
        .query_pairs()
        .filter(|(k, _)| k != "iss")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    stripped.query_pairs_mut().clear().extend_pairs(pairs);
    let back = location(&w.callback(&stripped, &browser).await);
    assert_eq!(param(&back, "error").as_deref(), Some("invalid_request"));
    assert_eq!(
        count(&w.app, "SELECT count(*) AS n FROM social_codes").await,
        0
    );
}

#[tokio::test]
async fn a_passkey_is_a_way_in_so_the_last_social_account_may_go() {
    let w = world().await;
    let login = new_login();
    w.put_account(&login, &format!("{login}@example.org"), true)
        .await;
    let social = w.social_login("dev", &login).await;
    assert_eq!(social["user"]["has_password"], false);
    let (access, _) = token_pair(&social);
    let mut token = crate::passkeys::authenticator();
    let added = crate::passkeys::register(&w.app, &access, &mut token).await;
    assert_eq!(added.status(), StatusCode::CREATED);
    let added: Value = added.json().await.unwrap();
    let raised = added["token"].as_str().expect("an aal2 token").to_string();
    let unlink = w
        .app
        .client
        .delete(w.app.url("/api/user/identities/dev"))
        .bearer_auth(&raised)
        .send()
        .await
        .unwrap();
    assert_eq!(unlink.status(), StatusCode::NO_CONTENT);
    // Now the passkey is the last way in: it stays.
    let passkey = added["passkey"]["id"].as_str().unwrap();
    let last = w
        .app
        .client
        .delete(w.app.url(&format!("/api/user/passkeys/{passkey}")))
        .bearer_auth(&raised)
        .send()
        .await
        .unwrap();
    assert_eq!(last.status(), StatusCode::BAD_REQUEST);
}
