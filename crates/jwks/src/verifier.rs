//! The verifier: accounts' key set, fetched on first use, cached, and refetched when a token names
//! a key we do not know (a rotation), never more than once per `min_refetch_interval`.

use std::{
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, DecodingKey};
use url::Url;

use crate::{
    claims::{ACCESS_AUDIENCE, AccessToken, Rules},
    keys::KeySet,
};

/// A JWKS document larger than this is not accounts' (it publishes a handful of keys).
const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// Where the keys are and what a valid token must say.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// accounts' `/.well-known/jwks.json`.
    pub jwks_url: Url,
    /// The `iss` accounts writes: its public URL without a trailing slash.
    pub issuer: String,
    /// The `aud` of access tokens; [`ACCESS_AUDIENCE`] unless accounts changes it.
    pub audience: String,
    /// At most one fetch per this interval, however many tokens name unknown keys.
    pub min_refetch_interval: Duration,
    /// Keys older than this are refetched on next use, so a key accounts stopped publishing stops
    /// verifying. While accounts is unreachable, the old keys keep working.
    pub max_key_age: Duration,
    /// The whole fetch, connection included.
    pub fetch_timeout: Duration,
}

impl VerifierConfig {
    /// The defaults: the access-token audience, one refetch per 5 s at most, keys kept 5 minutes,
    /// a 5 s fetch timeout.
    pub fn new(jwks_url: Url, issuer: impl Into<String>) -> Self {
        Self {
            jwks_url,
            issuer: issuer.into(),
            audience: ACCESS_AUDIENCE.to_string(),
            min_refetch_interval: Duration::from_secs(5),
            max_key_age: Duration::from_secs(300),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The token is not a valid access token (answer 401). The reason never quotes the token.
    #[error("invalid access token: {0}")]
    Invalid(&'static str),
    /// The keys could not be fetched, so the token could not be checked (answer 503).
    #[error("the token signing keys are unavailable: {0}")]
    KeysUnavailable(String),
}

/// The HTTP client could not be built (no TLS roots, say).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the JWKS HTTP client: {0}")]
pub struct ClientError(#[from] reqwest::Error);

/// Verifies access tokens. Cheap to clone; clones share one key cache.
#[derive(Clone)]
pub struct AccessTokenVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    config: VerifierConfig,
    rules: Rules,
    http: reqwest::Client,
    cache: RwLock<Cache>,
    /// Held while fetching, so concurrent misses wait for one fetch instead of starting their own.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Cache {
    keys: Arc<KeySet>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
    /// Why the latest fetch failed; `None` once one succeeds.
    last_error: Option<String>,
}

impl AccessTokenVerifier {
    /// Builds the verifier. It fetches nothing until the first token arrives, so a service starts
    /// while accounts is down.
    pub fn new(config: VerifierConfig) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(config.fetch_timeout)
            .connect_timeout(config.fetch_timeout)
            .build()?;
        Ok(Self {
            inner: Arc::new(Inner {
                rules: Rules::new(&config.issuer, &config.audience),
                config,
                http,
                cache: RwLock::new(Cache::default()),
                fetching: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Verifies `token` (the JWT alone, without `Bearer `).
    pub async fn verify(&self, token: &str) -> Result<AccessToken, VerifyError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| VerifyError::Invalid("malformed token"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(VerifyError::Invalid("wrong algorithm"));
        }
        let kid = header.kid.ok_or(VerifyError::Invalid("no key id"))?;
        let key = self.key(&kid).await?;
        self.inner.rules.check(token, &key, unix_now())
    }

    async fn key(&self, kid: &str) -> Result<Arc<DecodingKey>, VerifyError> {
        if let Some(key) = self.fresh_key(kid) {
            return Ok(key);
        }
        {
            let _one_fetch_at_a_time = self.inner.fetching.lock().await;
            // Whoever held the lock before us may have fetched the key we want.
            if let Some(key) = self.fresh_key(kid) {
                return Ok(key);
            }
            if self.may_fetch() {
                self.refresh().await;
            }
        }
        let cache = self.read();
        if let Some(key) = cache.keys.get(kid) {
            // Possibly stale: better than refusing everyone while accounts is unreachable.
            return Ok(key);
        }
        match &cache.last_error {
            Some(error) => Err(VerifyError::KeysUnavailable(error.clone())),
            None => Err(VerifyError::Invalid("unknown key id")),
        }
    }

    fn fresh_key(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        let cache = self.read();
        let fresh = cache
            .fetched_at
            .is_some_and(|at| at.elapsed() < self.inner.config.max_key_age);
        if fresh { cache.keys.get(kid) } else { None }
    }

    fn may_fetch(&self) -> bool {
        self.read()
            .last_attempt
            .is_none_or(|at| at.elapsed() >= self.inner.config.min_refetch_interval)
    }

    /// Fetches the key set and records the outcome. Call with `fetching` held.
    async fn refresh(&self) {
        self.write().last_attempt = Some(Instant::now());
        let url = &self.inner.config.jwks_url;
        match self.fetch().await {
            Ok(keys) => {
                if keys.len() == 0 {
                    tracing::warn!(%url, "the JWKS holds no Ed25519 signing key; every token will be refused");
                } else {
                    tracing::info!(%url, keys = keys.len(), "fetched the token signing keys");
                }
                let mut cache = self.write();
                cache.keys = Arc::new(keys);
                cache.fetched_at = Some(Instant::now());
                cache.last_error = None;
            }
            Err(error) => {
                tracing::warn!(%url, %error, "cannot fetch the token signing keys");
                self.write().last_error = Some(error);
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let url = self.inner.config.jwks_url.clone();
        let mut response = self
            .inner
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| telemetry::error_chain(&e))?;
        if !response.status().is_success() {
            return Err(format!("the JWKS endpoint answered {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| telemetry::error_chain(&e))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_DOCUMENT_BYTES {
                return Err(format!(
                    "the JWKS document is larger than {MAX_DOCUMENT_BYTES} bytes"
                ));
            }
        }
        KeySet::from_json(&body).map_err(|e| format!("the JWKS document is not a key set: {e}"))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.inner
            .cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.inner
            .cache
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for AccessTokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokenVerifier")
            .field("config", &self.inner.config)
            .field("keys", &self.read().keys.len())
            .finish()
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
