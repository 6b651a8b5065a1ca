//! The configured providers at run time: where to send a browser, and what a returning code
//! proves. OpenID Connect providers are discovered in the background (a provider that fails
//! discovery is retried; the others work meanwhile); GitHub speaks OAuth 2 and its REST API.
//! Nothing here follows a redirect (the HTTP client refuses them) or keeps a provider's token.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use oauth2::{AuthType, basic::BasicClient};
use openidconnect::{
    AccessToken, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    SubjectIdentifier, TokenResponse,
    core::{
        CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreClaimName, CoreClaimType,
        CoreClient, CoreClientAuthMethod, CoreGrantType, CoreIdToken, CoreIdTokenClaims,
        CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm,
        CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType, CoreUserInfoClaims,
    },
};
use secrecy::ExposeSecret;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::config::social::{Kind, Provider as Settings, Social};

/// How long a provider's HTTP call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Discovery documents (and their keys) are read again this often...
const REDISCOVER_EVERY: Duration = Duration::from_secs(3600);
/// The oldest provider sign-in accepted without asking again (the refresh token's lifetime).
const MAX_AGE: Duration = Duration::from_secs(14 * 24 * 3600);
/// ...or sooner when an ID token names a key we lack, but not more often than this.
const REDISCOVER_AT_MOST_EVERY: Duration = Duration::from_secs(60);

/// What discovery says beyond OpenID Connect Core: whether the provider puts `iss` in its
/// authorization responses (RFC 9207). When it says so, an answer without one is refused.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
pub struct IssParameter {
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
}

impl openidconnect::AdditionalProviderMetadata for IssParameter {}

/// A provider's discovery document, with [`IssParameter`].
pub type Metadata = openidconnect::ProviderMetadata<
    IssParameter,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// An HTTP client for talking to providers: no redirects (a redirect is how an SSRF is steered),
/// bounded time.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(CALL_TIMEOUT)
        .user_agent(concat!("accounts/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the TLS backend initializes")
}

/// Every configured provider, by name. Shared by the HTTP workers.
pub struct Providers {
    by_name: HashMap<String, Arc<Provider>>,
}

pub struct Provider {
    pub settings: Settings,
    /// Our callback at the provider: `{ACCOUNTS_PUBLIC_URL}/api/auth/{name}/callback`.
    redirect_uri: RedirectUrl,
    discovered: RwLock<Option<Discovered>>,
}

#[derive(Clone)]
struct Discovered {
    metadata: Arc<Metadata>,
    at: Instant,
}

/// What a provider says about the account that signed in there.
#[derive(Debug, Clone)]
pub struct ProviderAccount {
    /// With `subject`, the provider account's name here: the ID token's issuer, or GitHub's API URL.
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    /// The provider marks the address verified (whether we believe it is the provider's setting).
    pub email_verified: bool,
    pub username: Option<String>,
    /// When the user last signed in at the provider (the ID token's `auth_time`), when it says.
    pub auth_time: Option<chrono::DateTime<chrono::Utc>>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub picture: Option<String>,
}

impl ProviderAccount {
    /// Its name here, with its address.
    pub fn subject(&self) -> super::identities::Subject {
        super::identities::Subject {
            issuer: self.issuer.clone(),
            subject: self.subject.clone(),
            email: self.email.clone(),
        }
    }
}

/// Why a provider's answer proves nothing.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider has not been discovered yet (or cannot be reached now).
    #[error("the provider is not reachable")]
    Unavailable,
    /// The provider refused the code, or its answer failed a check (signature, issuer, audience,
    /// expiry, nonce, subject). The kind is logged; the details may quote tokens and are not.
    #[error("the provider's answer failed a check: {0}")]
    Rejected(&'static str),
}

impl Providers {
    pub fn new(social: &Social, public_url: &Url) -> Self {
        let by_name = social
            .providers
            .iter()
            .map(|settings| {
                let callback = public_url
                    .join(&format!("api/auth/{}/callback", settings.name))
                    .expect("a provider name is a path segment");
                let provider = Provider {
                    settings: settings.clone(),
                    redirect_uri: RedirectUrl::from_url(callback),
                    discovered: RwLock::new(None),
                };
                (settings.name.clone(), Arc::new(provider))
            })
            .collect();
        Self { by_name }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Provider>> {
        self.by_name.get(name)
    }

    /// Discovers every OpenID Connect provider, retrying those that fail (logged) and reading
    /// them all again every hour, until `shutdown`.
    pub async fn keep_discovered(self: Arc<Self>, shutdown: CancellationToken) {
        let http = http_client();
        let mut wait = Duration::from_secs(1);
        loop {
            let mut missing = false;
            for provider in self.by_name.values() {
                if !matches!(provider.settings.kind, Kind::Oidc { .. }) {
                    continue;
                }
                let stale = provider
                    .discovered()
                    .is_none_or(|d| d.at.elapsed() >= REDISCOVER_EVERY);
                if stale && !provider.discover(&http).await {
                    missing |= provider.discovered().is_none();
                }
            }
            wait = if missing {
                (wait * 2).min(Duration::from_secs(60))
            } else {
                Duration::from_secs(60)
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

impl Provider {
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    fn discovered(&self) -> Option<Discovered> {
        self.discovered
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Reads the provider's discovery document and keys; `false` (logged) when it fails.
    async fn discover(&self, http: &reqwest::Client) -> bool {
        let Kind::Oidc { issuer } = &self.settings.kind else {
            return true;
        };
        let Ok(issuer) = IssuerUrl::new(issuer.clone()) else {
            tracing::warn!(provider = %self.name(), "the configured issuer is not a URL");
            return false;
        };
        match Metadata::discover_async(issuer, http).await {
            Ok(metadata) => {
                *self
                    .discovered
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Discovered {
                    metadata: Arc::new(metadata),
                    at: Instant::now(),
                });
                tracing::info!(provider = %self.name(), "social provider discovered");
                true
            }
            Err(error) => {
                tracing::warn!(provider = %self.name(), %error, "social provider discovery failed; retrying");
                false
            }
        }
    }

    fn oidc_client(
        &self,
        metadata: &Metadata,
    ) -> CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    > {
        CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(
                self.settings.client_secret.expose_secret().to_string(),
            )),
        )
        .set_redirect_uri(self.redirect_uri.clone())
    }

    fn github_client(
        &self,
        auth_url: &Url,
        token_url: &Url,
    ) -> BasicClient<
        oauth2::EndpointSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointSet,
    > {
        BasicClient::new(ClientId::new(self.settings.client_id.clone()))
            .set_client_secret(ClientSecret::new(
                self.settings.client_secret.expose_secret().to_string(),
            ))
            .set_auth_uri(oauth2::AuthUrl::from_url(auth_url.clone()))
            .set_token_uri(oauth2::TokenUrl::from_url(token_url.clone()))
            .set_auth_type(AuthType::RequestBody)
            .set_redirect_uri(self.redirect_uri.clone())
    }

    /// Whether the provider can be asked for a fresh sign-in (`prompt=login`): OpenID Connect ones.
    pub fn can_reauthenticate(&self) -> bool {
        matches!(self.settings.kind, Kind::Oidc { .. })
    }

    /// Where to send the browser: the provider's authorization endpoint with our `state`, the
    /// `nonce` (OpenID Connect) and the S256 challenge of `verifier`.
    pub fn authorize_url(
        &self,
        state: &str,
        nonce: &str,
        verifier: &str,
        reauth: bool,
    ) -> Result<Url, ProviderError> {
        let challenge =
            PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(verifier.into()));
        let scopes = self.settings.scopes.iter().cloned().map(Scope::new);
        let state = state.to_string();
        match &self.settings.kind {
            Kind::Oidc { .. } => {
                let discovered = self.discovered().ok_or(ProviderError::Unavailable)?;
                let nonce = nonce.to_string();
                let client = self.oidc_client(&discovered.metadata);
                // `max_age` makes the provider say when its user signed in (`auth_time`), which
                // becomes the session's: a provider's old session is not a fresh sign-in here.
                let max_age = if reauth { Duration::ZERO } else { MAX_AGE };
                let mut request = client
                    .authorize_url(
                        CoreAuthenticationFlow::AuthorizationCode,
                        move || CsrfToken::new(state),
                        move || Nonce::new(nonce),
                    )
                    .add_scopes(scopes.filter(|s| s.as_str() != "openid"))
                    .set_pkce_challenge(challenge)
                    .set_max_age(max_age);
                if reauth {
                    request = request.add_prompt(CoreAuthPrompt::Login);
                }
                let (url, _, _) = request.url();
                Ok(url)
            }
            Kind::Github {
                auth_url,
                token_url,
                ..
            } => {
                let (url, _) = self
                    .github_client(auth_url, token_url)
                    .authorize_url(move || CsrfToken::new(state))
                    .add_scopes(scopes)
                    .set_pkce_challenge(challenge)
                    .url();
                Ok(url)
            }
        }
    }

    /// Whether the provider says it sends `iss` with its authorization responses (RFC 9207).
    pub fn sends_iss(&self) -> bool {
        self.discovered().is_some_and(|d| {
            d.metadata
                .additional_metadata()
                .authorization_response_iss_parameter_supported
        })
    }

    /// The issuer an RFC 9207 `iss` parameter must equal, when the provider has one.
    pub fn issuer(&self) -> Option<String> {
        match &self.settings.kind {
            Kind::Oidc { .. } => self
                .discovered()
                .map(|d| d.metadata.issuer().as_str().to_string()),
            Kind::Github { .. } => None,
        }
    }

    /// The ID token's claims when its signature (through the provider's keys, with an algorithm the
    /// provider advertises; never `none`), issuer, audience (`azp` with several), expiry and
    /// `nonce` check out.
    fn verify(
        &self,
        metadata: &Metadata,
        id_token: &CoreIdToken,
        nonce: &str,
    ) -> Result<CoreIdTokenClaims, openidconnect::ClaimsVerificationError> {
        let client = self.oidc_client(metadata);
        id_token
            .claims(&client.id_token_verifier(), &Nonce::new(nonce.into()))
            .cloned()
    }

    /// Redeems the provider's `code` (with our PKCE `verifier`) and reads who signed in: the ID
    /// token checked (signature through the provider's keys, issuer, audience, `azp`, expiry,
    /// `nonce`) and userinfo for the same subject; for GitHub, `/user` and `/user/emails`.
    pub async fn account(
        &self,
        http: &reqwest::Client,
        code: &str,
        verifier: &str,
        nonce: &str,
    ) -> Result<ProviderAccount, ProviderError> {
        match &self.settings.kind {
            Kind::Oidc { .. } => self.oidc_account(http, code, verifier, nonce).await,
            Kind::Github {
                auth_url,
                token_url,
                api_url,
            } => {
                let token = self
                    .github_client(auth_url, token_url)
                    .exchange_code(AuthorizationCode::new(code.into()))
                    .set_pkce_verifier(PkceCodeVerifier::new(verifier.into()))
                    .request_async(http)
                    .await
                    .map_err(|e| rejected("token request", &e))?;
                github_account(http, api_url, token.access_token()).await
            }
        }
    }

    async fn oidc_account(
        &self,
        http: &reqwest::Client,
        code: &str,
        verifier: &str,
        nonce: &str,
    ) -> Result<ProviderAccount, ProviderError> {
        let discovered = self.discovered().ok_or(ProviderError::Unavailable)?;
        let client = self.oidc_client(&discovered.metadata);
        let token = client
            .exchange_code(AuthorizationCode::new(code.into()))
            .map_err(|_| ProviderError::Rejected("no token endpoint"))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.into()))
            .request_async(http)
            .await
            .map_err(|e| rejected("token request", &e))?;
        let id_token = token
            .id_token()
            .ok_or(ProviderError::Rejected("no ID token"))?;
        let claims = match self.verify(&discovered.metadata, id_token, nonce) {
            Ok(claims) => claims,
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(_))
                if discovered.at.elapsed() >= REDISCOVER_AT_MOST_EVERY =>
            {
                // The provider may have rotated its keys since we read them: read them again once.
                if !self.discover(http).await {
                    return Err(ProviderError::Unavailable);
                }
                let discovered = self.discovered().ok_or(ProviderError::Unavailable)?;
                self.verify(&discovered.metadata, id_token, nonce)
                    .map_err(|e| rejected("ID token", &e))?
            }
            Err(e) => return Err(rejected("ID token", &e)),
        };
        let subject = claims.subject().clone();
        let info: Option<CoreUserInfoClaims> = match client.user_info(
            token.access_token().clone(),
            Some(SubjectIdentifier::new(subject.as_str().into())),
        ) {
            Ok(request) => Some(
                request
                    .request_async(http)
                    .await
                    .map_err(|e| rejected("userinfo", &e))?,
            ),
            Err(_) => None,
        };
        // Userinfo (checked to be about the same subject) is the fuller source; the ID token fills gaps.
        let from_token = standard!(claims);
        let merged = match &info {
            Some(info) => standard!(info).or(from_token),
            None => from_token,
        };
        let (given_name, family_name) = merged.names();
        Ok(ProviderAccount {
            issuer: claims.issuer().as_str().to_string(),
            subject: subject.as_str().to_string(),
            email: merged.email,
            email_verified: merged.email_verified.unwrap_or(false),
            username: merged.username,
            auth_time: claims.auth_time(),
            given_name,
            family_name,
            picture: merged.picture,
        })
    }
}

/// Logs why a provider's answer was refused (the error kind only: its text can quote a token).
fn rejected(what: &'static str, error: &dyn std::fmt::Debug) -> ProviderError {
    let text = format!("{error:?}");
    let kind = text.split(['(', ' ', '{']).next().unwrap_or("");
    tracing::warn!(
        check = what,
        kind,
        "a social sign-in failed a provider check"
    );
    ProviderError::Rejected(what)
}

fn localized<T: std::ops::Deref<Target = String> + Clone>(
    claim: Option<&openidconnect::LocalizedClaim<T>>,
) -> Option<String> {
    claim
        .and_then(|c| c.get(None))
        .map(|v| v.deref().clone())
        .filter(|v| !v.trim().is_empty())
}

/// The standard claims of an ID token or a userinfo answer (the two types share the accessors,
/// not a trait).
macro_rules! standard {
    ($claims:expr) => {
        Standard {
            email: $claims.email().map(|e| e.as_str().to_string()),
            email_verified: $claims.email_verified(),
            username: $claims.preferred_username().map(|u| u.as_str().to_string()),
            given_name: localized($claims.given_name()),
            family_name: localized($claims.family_name()),
            name: localized($claims.name()),
            picture: $claims
                .picture()
                .and_then(|p| p.get(None))
                .map(|p| p.as_str().to_string()),
        }
    };
}
use standard;

struct Standard {
    email: Option<String>,
    email_verified: Option<bool>,
    username: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
    name: Option<String>,
    picture: Option<String>,
}

impl Standard {
    /// Each claim from `self`, else from `other`. The address and its verification go together.
    fn or(self, other: Self) -> Self {
        let (email, email_verified) = if self.email.is_some() {
            (self.email, self.email_verified)
        } else {
            (other.email, other.email_verified)
        };
        Self {
            email,
            email_verified,
            username: self.username.or(other.username),
            given_name: self.given_name.or(other.given_name),
            family_name: self.family_name.or(other.family_name),
            name: self.name.or(other.name),
            picture: self.picture.or(other.picture),
        }
    }

    /// Given and family names, or a full name split at its first space.
    fn names(&self) -> (Option<String>, Option<String>) {
        if self.given_name.is_some() || self.family_name.is_some() {
            return (self.given_name.clone(), self.family_name.clone());
        }
        match self.name.as_deref().map(str::trim) {
            Some(name) => match name.split_once(' ') {
                Some((given, family)) => (Some(given.into()), Some(family.trim().into())),
                None => (Some(name.into()), None),
            },
            None => (None, None),
        }
    }
}

#[derive(Deserialize)]
struct GithubUser {
    id: u64,
    login: String,
    name: Option<String>,
    avatar_url: Option<String>,
}

#[derive(Deserialize)]
struct GithubEmail {
    email: String,
    primary: bool,
    verified: bool,
}

/// GitHub's account: the numeric id is the subject (a login can be renamed and reused), the
/// address the primary one from `/user/emails`, verified as GitHub marks it.
async fn github_account(
    http: &reqwest::Client,
    api_url: &Url,
    token: &AccessToken,
) -> Result<ProviderAccount, ProviderError> {
    let base = api_url.as_str().trim_end_matches('/');
    let get = |path: &str| {
        http.get(format!("{base}{path}"))
            .bearer_auth(token.secret())
            .header(reqwest::header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
    };
    let user: GithubUser = read_json(get("/user")).await?;
    let emails: Vec<GithubEmail> = read_json(get("/user/emails")).await?;
    let primary = emails.into_iter().find(|e| e.primary);
    let (given_name, family_name) = Standard {
        email: None,
        email_verified: None,
        username: None,
        given_name: None,
        family_name: None,
        name: user.name,
        picture: None,
    }
    .names();
    Ok(ProviderAccount {
        issuer: base.to_string(),
        subject: user.id.to_string(),
        email_verified: primary.as_ref().is_some_and(|e| e.verified),
        email: primary.map(|e| e.email),
        username: Some(user.login),
        auth_time: None,
        given_name,
        family_name,
        picture: user.avatar_url,
    })
}

async fn read_json<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
) -> Result<T, ProviderError> {
    let response = request.send().await.map_err(|e| {
        tracing::warn!(error = %e.without_url(), "a GitHub API call failed");
        ProviderError::Unavailable
    })?;
    if !response.status().is_success() {
        tracing::warn!(status = %response.status(), "GitHub refused an API call");
        return Err(ProviderError::Rejected("GitHub API"));
    }
    response
        .json()
        .await
        .map_err(|e| rejected("GitHub API answer", &e.without_url()))
}

#[cfg(test)]
mod tests {
    //! ID tokens the real provider of the tests cannot be made to produce: crafted here and signed
    //! with a key of our own, published (or not) in the provider's key set.
    use aws_lc_rs::{
        rand::SystemRandom,
        signature::{Ed25519KeyPair, KeyPair},
    };
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::{Value, json};

    use super::*;
    use crate::config::social::{Kind, Provider as Settings};

    const ISSUER: &str = "https://idp.example.test";
    const CLIENT: &str = "our-client";
    const NONCE: &str = "the-nonce-we-sent";

    struct Signer {
        pkcs8: Vec<u8>,
        jwk: Value,
    }

    fn signer(kid: &str) -> Signer {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        Signer {
            pkcs8: pkcs8.as_ref().to_vec(),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig", "alg": "EdDSA"}),
        }
    }

    fn provider() -> Provider {
        Provider {
            settings: Settings {
                name: "idp".into(),
                kind: Kind::Oidc {
                    issuer: ISSUER.into(),
                },
                client_id: CLIENT.into(),
                client_secret: "secret".to_string().into(),
                trust_email: false,
                scopes: vec!["openid".into()],
            },
            redirect_uri: RedirectUrl::new("http://localhost:8080/api/auth/idp/callback".into())
                .unwrap(),
            discovered: RwLock::new(None),
        }
    }

    fn metadata(published: &[&Signer]) -> Metadata {
        let mut metadata: Metadata = serde_json::from_value(json!({
            "issuer": ISSUER,
            "authorization_endpoint": format!("{ISSUER}/auth"),
            "token_endpoint": format!("{ISSUER}/token"),
            "jwks_uri": format!("{ISSUER}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["EdDSA", "RS256"],
        }))
        .unwrap();
        let keys: Vec<Value> = published.iter().map(|s| s.jwk.clone()).collect();
        metadata = metadata.set_jwks(serde_json::from_value(json!({ "keys": keys })).unwrap());
        metadata
    }

    fn claims() -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({"iss": ISSUER, "aud": CLIENT, "sub": "user-1", "iat": now, "exp": now + 300, "nonce": NONCE})
    }

    fn sign(signer: &Signer, claims: &Value) -> CoreIdToken {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = signer.jwk["kid"].as_str().map(String::from);
        let raw = jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&signer.pkcs8))
            .unwrap();
        raw.parse().unwrap()
    }

    fn unsigned(claims: &Value) -> CoreIdToken {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
        format!("{header}.{body}.").parse().unwrap()
    }

    fn verdict(token: &CoreIdToken, published: &[&Signer]) -> Result<String, String> {
        provider()
            .verify(&metadata(published), token, NONCE)
            .map(|c| c.subject().as_str().to_string())
            .map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn a_well_formed_token_from_the_providers_key_passes() {
        let key = signer("k1");
        assert_eq!(
            verdict(&sign(&key, &claims()), &[&key]),
            Ok("user-1".into())
        );
    }

    #[test]
    fn wrong_audience_issuer_expiry_or_nonce_fail() {
        let key = signer("k1");
        let now = chrono::Utc::now().timestamp();
        let cases = [
            ("aud", json!("someone-else")),
            ("iss", json!("https://evil.example.test")),
            ("exp", json!(now - 120)),
            ("nonce", json!("a-nonce-we-never-sent")),
        ];
        for (claim, value) in cases {
            let mut crafted = claims();
            crafted[claim] = value;
            assert!(
                verdict(&sign(&key, &crafted), &[&key]).is_err(),
                "a token with a wrong {claim} passed"
            );
        }
        let mut missing_nonce = claims();
        missing_nonce.as_object_mut().unwrap().remove("nonce");
        assert!(verdict(&sign(&key, &missing_nonce), &[&key]).is_err());
    }

    #[test]
    fn several_audiences_need_us_as_the_authorized_party() {
        let key = signer("k1");
        let mut crafted = claims();
        crafted["aud"] = json!([CLIENT, "another-client"]);
        crafted["azp"] = json!("another-client");
        assert!(verdict(&sign(&key, &crafted), &[&key]).is_err());
    }

    #[test]
    fn a_key_outside_the_providers_key_set_or_no_signature_fails() {
        let published = signer("k1");
        let stranger = signer("k1");
        assert!(verdict(&sign(&stranger, &claims()), &[&published]).is_err());
        let unknown_kid = signer("k2");
        assert!(verdict(&sign(&unknown_kid, &claims()), &[&published]).is_err());
        assert!(verdict(&unsigned(&claims()), &[&published]).is_err());
    }
}
