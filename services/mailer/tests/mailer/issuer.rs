//! A stand-in for accounts' token issuing: Ed25519 keys generated at test time (no private key
//! is committed), published as a JWKS by a small actix-web server on 127.0.0.1:0 that counts its
//! requests, and access tokens with the claims accounts writes, signed with jsonwebtoken.

use std::{
    net::TcpListener,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use actix_web::{App, HttpResponse, HttpServer, dev::ServerHandle, web};
use aws_lc_rs::signature::Ed25519KeyPair;
use jsonwebtoken::{
    Algorithm, EncodingKey, Header,
    jwk::{Jwk, ThumbprintHash},
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// accounts' issuer with the test settings (ACCOUNTS_PUBLIC_URL unset).
pub const ISSUER: &str = "http://localhost:8080";

/// What the built-in `support` role grants.
pub const SUPPORT: &[&str] = &["users.read", "sessions.revoke", "mail.read", "mail.retry"];

/// An Ed25519 signing key and its public JWK, with accounts' kind of `kid` (a thumbprint).
pub struct SigningKey {
    pub kid: String,
    encoding: EncodingKey,
    pub jwk: Jwk,
}

impl SigningKey {
    pub fn generate() -> Self {
        let pair = Ed25519KeyPair::generate().expect("generating an Ed25519 key");
        let pkcs8 = pair.to_pkcs8v1().expect("encoding the key");
        let encoding = EncodingKey::from_ed_der(pkcs8.as_ref());
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::EdDSA).expect("a public JWK");
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .expect("a thumbprint");
        jwk.common.key_id = Some(kid.clone());
        Self { kid, encoding, jwk }
    }

    /// Signs `claims` with this key, naming `kid` in the header.
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_string());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signing a token")
    }

    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }
}

/// The claims of an access token accounts would issue now, granting `permissions`.
pub fn access_claims(permissions: &[&str]) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "iss": ISSUER,
        "aud": "accounts-api",
        "sub": Uuid::new_v4(),
        "exp": now + 900,
        "iat": now,
        "jti": Uuid::new_v4(),
        "typ": "access",
        "ver": 0,
        "sid": Uuid::new_v4(),
        "auth_time": now,
    });
    if !permissions.is_empty() {
        claims["roles"] = json!(["support"]);
        claims["permissions"] = json!(permissions);
    }
    claims
}

/// `access_claims(permissions)` changed by `change`.
pub fn claims_with(permissions: &[&str], change: impl FnOnce(&mut Map<String, Value>)) -> Value {
    let mut claims = access_claims(permissions);
    change(claims.as_object_mut().expect("an object"));
    claims
}

struct Published {
    keys: Mutex<Vec<Jwk>>,
    fetches: AtomicUsize,
}

pub struct TestIssuer {
    published: Arc<Published>,
    /// The key new tokens are signed with.
    pub current: SigningKey,
    port: u16,
    server: ServerHandle,
}

impl TestIssuer {
    /// Serves a JWKS holding one fresh key.
    pub async fn start() -> Self {
        let current = SigningKey::generate();
        let published = Arc::new(Published {
            keys: Mutex::new(vec![current.jwk.clone()]),
            fetches: AtomicUsize::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the JWKS server");
        let port = listener.local_addr().unwrap().port();
        let state = web::Data::from(published.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route("/.well-known/jwks.json", web::get().to(jwks))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listening")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            published,
            current,
            port,
            server: handle,
        }
    }

    pub fn jwks_url(&self) -> String {
        format!("http://127.0.0.1:{}/.well-known/jwks.json", self.port)
    }

    /// How many times the JWKS was fetched.
    pub fn fetches(&self) -> usize {
        self.published.fetches.load(Ordering::SeqCst)
    }

    /// A token signed with the current key, granting `permissions`.
    pub fn token(&self, permissions: &[&str]) -> String {
        self.current.sign(&access_claims(permissions))
    }

    /// Rotates as accounts does: a new key signs, and the old one stays published.
    pub fn rotate(&mut self) {
        let next = SigningKey::generate();
        self.published
            .keys
            .lock()
            .unwrap()
            .insert(0, next.jwk.clone());
        self.current = next;
    }

    /// Stops serving, as accounts going down would.
    pub async fn stop(&self) {
        self.server.stop(false).await;
    }
}

async fn jwks(published: web::Data<Published>) -> HttpResponse {
    published.fetches.fetch_add(1, Ordering::SeqCst);
    let keys = published.keys.lock().unwrap().clone();
    HttpResponse::Ok().json(json!({ "keys": keys }))
}
