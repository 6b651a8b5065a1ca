//! `spawn_app()`: the real service on a random port, with its own database (and vhost when asked).

use std::{collections::HashMap, net::IpAddr, path::PathBuf, time::Duration};

use accounts::{config::Settings, startup::Application};
use diesel_async::AsyncPgConnection;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use testkit::{TestDatabase, TestVhost};

pub const PASSWORD: &str = "tutad1234";

pub struct TestApp {
    pub address: String,
    pub db: TestDatabase,
    pub client: reqwest::Client,
    pub key_file: PathBuf,
    _key_dir: TempDir,
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Default)]
pub struct Options<'a> {
    pub vhost: Option<&'a TestVhost>,
    pub amqp_url: Option<String>,
    pub database: Option<&'a TestDatabase>,
    pub key_file: Option<PathBuf>,
    pub vars: Vec<(&'static str, String)>,
}

pub async fn spawn_app() -> TestApp {
    spawn_with(Options::default()).await
}

pub async fn spawn_with_vhost(vhost: &TestVhost) -> TestApp {
    spawn_with(Options {
        vhost: Some(vhost),
        ..Options::default()
    })
    .await
}

pub async fn spawn_with(options: Options<'_>) -> TestApp {
    let db = match options.database {
        // A second replica over the same database: share the name, don't own the drop.
        Some(shared) => TestDatabase::shared(shared),
        None => TestDatabase::new("accounts"),
    };
    let amqp_url = match (options.vhost, options.amqp_url) {
        (Some(vhost), _) => vhost.url().to_string(),
        (None, Some(url)) => url,
        (None, None) => testkit::unreachable_amqp_url(),
    };
    // Named after the database: replicas over one database find the same signing and encryption
    // keys, as replicas in production share them (startup refuses another encryption key).
    let key_dir = TempDir(std::env::temp_dir().join(format!("accounts-test-{}", db.name())));
    let key_file = options
        .key_file
        .clone()
        .unwrap_or_else(|| key_dir.0.join("jwt.pem"));
    let mut vars: HashMap<&str, String> = HashMap::from([
        ("ACCOUNTS_DATABASE_URL", db.url().to_string()),
        ("AMQP_URL", amqp_url.clone()),
        ("ACCOUNTS_ADDR", "127.0.0.1:0".into()),
        ("ACCOUNTS_BCRYPT_COST", "4".into()),
        ("ACCOUNTS_OUTBOX_POLL_MS", "200".into()),
        // Every test registers from 127.0.0.1; the throttle tests turn the limit back on.
        ("ACCOUNTS_REGISTRATIONS_PER_HOUR", "0".into()),
    ]);
    vars.extend(options.vars.iter().map(|(k, v)| (*k, v.clone())));
    let mut settings =
        Settings::from_lookup(|name| vars.get(name).cloned()).expect("valid test settings");
    settings.jwt_key_file = key_file.clone();
    settings.jwt_key_is_default = true;
    // Replicas that share a signing key share the encryption key beside it.
    settings.encryption_key_file = key_file.with_extension("key");
    settings.encryption_key_is_default = true;
    let app = Application::build(settings).await.expect("the app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        db,
        client: client(None),
        key_file,
        _key_dir: key_dir,
    }
}

/// An HTTP client that does not follow redirects, optionally bound to a local address
/// (127.0.0.x) to look like a different client IP.
pub fn client(local: Option<IpAddr>) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(local)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a client")
}

pub fn registration(email: &str, password: &str) -> Value {
    json!({ "user": {
        "email": email,
        "password": password,
        "confirm_password": password,
        "username": null,
        "first_name": "Tutu",
        "last_name": "Tester",
        "address": "1 Test Street",
        "terms_accepted": true,
    }})
}

pub fn unique_email() -> String {
    format!(
        "user{}@example.com",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn post_authed(&self, path: &str, token: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .header("Authorization", format!("Token {token}"))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn register(&self, body: &Value) -> Response {
        self.post("/api/users", body).await
    }

    /// Registers a fresh user and returns (email, response body).
    pub async fn register_user(&self) -> (String, Value) {
        let email = unique_email();
        let response = self.register(&registration(&email, PASSWORD)).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        (email, response.json().await.expect("json"))
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post(
            "/api/users/login",
            &json!({ "user": { "email": email, "password": password } }),
        )
        .await
    }

    pub async fn current_user(&self, token: &str) -> Response {
        self.client
            .get(self.url("/api/user"))
            .header("Authorization", format!("Token {token}"))
            .send()
            .await
            .expect("request")
    }

    pub async fn update_user(&self, token: &str, user: Value) -> Response {
        self.client
            .put(self.url("/api/user"))
            .header("Authorization", format!("Bearer {token}"))
            .json(&json!({ "user": user }))
            .send()
            .await
            .expect("request")
    }

    /// Exchanges a refresh token.
    pub async fn refresh(&self, token: &str) -> Response {
        self.post(
            "/api/users/token/refresh",
            &json!({ "refresh_token": token }),
        )
        .await
    }

    /// Logs in as `email` with `password` from `user_agent`; the 200 body.
    pub async fn login_from(&self, email: &str, password: &str, user_agent: &str) -> Value {
        let response = self
            .client
            .post(self.url("/api/users/login"))
            .header("User-Agent", user_agent)
            .json(&json!({ "user": { "email": email, "password": password } }))
            .send()
            .await
            .expect("request");
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{email} from {user_agent}"
        );
        response.json().await.expect("json")
    }

    /// Logs in with a given User-Agent and returns the (access, refresh) pair.
    pub async fn login_as(&self, email: &str, user_agent: &str) -> (String, String) {
        token_pair(&self.login_from(email, PASSWORD, user_agent).await)
    }

    /// The token of the `url_field` link of every outbox event of `kind`, oldest first.
    pub async fn link_tokens(&self, kind: &str, url_field: &str) -> Vec<String> {
        self.outbox_events(kind)
            .await
            .iter()
            .map(|data| token_of(data[url_field].as_str().expect("a link")))
            .collect()
    }

    /// The token from the `url_field` link of the newest outbox event of `kind`.
    pub async fn link_token(&self, kind: &str, url_field: &str) -> String {
        self.link_tokens(kind, url_field)
            .await
            .pop()
            .expect("an event")
    }

    pub async fn conn(&self) -> AsyncPgConnection {
        self.db.connect().await.expect("a database connection")
    }

    /// The `data` of every outbox event of `kind`, oldest first.
    pub async fn outbox_events(&self, kind: &str) -> Vec<Value> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Jsonb)]
            envelope: Value,
        }
        use diesel_async::RunQueryDsl;
        let rows: Vec<Row> =
            diesel::sql_query("SELECT envelope FROM outbox WHERE event_type = $1 ORDER BY id")
                .bind::<diesel::sql_types::Text, _>(kind)
                .load(&mut self.conn().await)
                .await
                .expect("outbox rows");
        rows.into_iter()
            .map(|r| r.envelope["data"].clone())
            .collect()
    }

    /// Signs arbitrary claims with the app's own key, for hostile-token tests.
    pub fn sign(&self, header: jsonwebtoken::Header, claims: &Value) -> String {
        let pem = std::fs::read(&self.key_file).expect("key file");
        let key = jsonwebtoken::EncodingKey::from_ed_pem(&pem).expect("ed key");
        jsonwebtoken::encode(&header, claims, &key).expect("sign")
    }

    /// GETs `path` and parses the JSON body.
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request");
        response.json().await.expect("a JSON body")
    }

    /// The kid the app signs with, read from its JWKS.
    pub async fn kid(&self) -> String {
        let jwks = self.get_json("/.well-known/jwks.json").await;
        jwks["keys"][0]["kid"].as_str().expect("kid").to_string()
    }
}

/// The `token` query parameter of a mailed link.
pub fn token_of(url: &str) -> String {
    url::Url::parse(url)
        .expect("a URL")
        .query_pairs()
        .find(|(k, _)| k == "token")
        .expect("a token parameter")
        .1
        .into_owned()
}

/// The (access, refresh) tokens of a `{"user": {...}}` body.
pub fn token_pair(body: &Value) -> (String, String) {
    (
        body["user"]["token"].as_str().expect("token").to_string(),
        body["user"]["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_string(),
    )
}

/// The claims of a JWT, read without verifying it (the app verified it already).
pub fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

pub async fn errors(response: Response) -> Value {
    let body: Value = response.json().await.expect("a JSON error body");
    body["errors"].clone()
}

/// The 30 s TOTP step of now (RFC 6238's T).
pub fn totp_step() -> i64 {
    chrono::Utc::now().timestamp() / 30
}

/// The code an authenticator app (the real `oathtool`) shows for the base32 `secret` at `step`.
pub fn totp_code_at_step(secret: &str, step: i64) -> String {
    let output = std::process::Command::new("oathtool")
        .args(["--totp", "-b", secret, "-N", &format!("@{}", step * 30)])
        .output()
        .expect("oathtool runs (make test installs it)");
    assert!(output.status.success(), "oathtool: {output:?}");
    String::from_utf8(output.stdout)
        .expect("digits")
        .trim()
        .to_string()
}

/// The code for `secret` at the step `offset_steps` away from now: 0 is the app's current code,
/// 1 the next one (still accepted: one step of skew).
pub fn totp_code(secret: &str, offset_steps: i64) -> String {
    totp_code_at_step(secret, totp_step() + offset_steps)
}

impl TestApp {
    /// Confirms `email` through the link its registration mailed, as the owner would.
    pub async fn verify_address(&self, email: &str) {
        let link = self
            .outbox_events("user-registered")
            .await
            .into_iter()
            .find(|data| data["email"] == email)
            .expect("a user-registered event for the address");
        let token = token_of(link["confirmation_url"].as_str().expect("a link"));
        let confirmed = self
            .client
            .get(self.url(&format!("/api/users/confirm?token={token}")))
            .header("Accept", "application/json")
            .send()
            .await
            .expect("request");
        assert_eq!(confirmed.status(), StatusCode::OK, "confirming {email}");
    }

    /// Sends `method` to `path` with the access token and, when given, a JSON body.
    pub async fn send_authed(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Response {
        let mut request = self
            .client
            .request(method, self.url(path))
            .header("Authorization", format!("Token {token}"));
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("request")
    }
}

/// Runs one SQL statement against the app's database (test set-up the API does not offer).
pub async fn sql(app: &TestApp, statement: &str) {
    use diesel_async::RunQueryDsl;
    diesel::sql_query(statement)
        .execute(&mut app.conn().await)
        .await
        .expect(statement);
}

/// The `n` of a `SELECT count(*) AS n ...`.
pub async fn count(app: &TestApp, query: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    use diesel_async::RunQueryDsl;
    let row: Count = diesel::sql_query(query)
        .get_result(&mut app.conn().await)
        .await
        .expect(query);
    row.n
}

/// RFC 4648 base32 (no padding needed), as authenticator apps read a TOTP secret.
pub fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits = 0u64;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|c| *c != b'=') {
        let value = ALPHABET.iter().position(|a| *a == c).expect("base32") as u64;
        bits = (bits << 5) | value;
        count += 5;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

/// An app whose hashing queue holds a flood (256), so throttles, not the queue, answer; `database`
/// makes it a second replica of another app's.
pub async fn spawn_roomy(
    database: Option<&TestDatabase>,
    extra: &[(&'static str, &str)],
) -> TestApp {
    let mut vars = vec![("ACCOUNTS_HASH_QUEUE", "256".to_string())];
    vars.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    spawn_with(Options {
        vars,
        database,
        ..Options::default()
    })
    .await
}

/// A password login by email through `from` (a client bound to its own local address).
pub async fn login_via(
    app: &TestApp,
    from: &reqwest::Client,
    email: &str,
    password: &str,
) -> Response {
    from.post(app.url("/api/users/login"))
        .json(&json!({ "user": { "email": email, "password": password } }))
        .send()
        .await
        .expect("request")
}

/// How many responses had each status.
pub fn status_counts(statuses: &[StatusCode]) -> std::collections::BTreeMap<u16, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for status in statuses {
        *counts.entry(status.as_u16()).or_default() += 1;
    }
    counts
}

/// A fresh superuser: id and access token.
pub async fn superuser(app: &TestApp) -> (String, String) {
    let (email, body) = app.register_user().await;
    let id = body["user"]["id"].as_str().unwrap().to_string();
    sql(
        app,
        &format!("UPDATE users SET is_superuser = true WHERE id = '{id}'"),
    )
    .await;
    let (access, _) = app.login_as(&email, "root-console").await;
    (id, access)
}
