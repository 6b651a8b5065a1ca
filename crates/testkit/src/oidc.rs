//! Identity providers on loopback for social-login tests: a real OpenID Connect provider
//! (`oidc-provider` from npm, `tests/oidc/provider.mjs`) and a stand-in for GitHub's OAuth app and
//! REST API (`tests/oidc/github.mjs`), each a `node` child process killed when its fixture drops.
//! [`sign_in_at_provider`] plays the browser at the provider's own login and consent pages.
//!
//! The provider needs `npm ci --prefix tests/oidc` once; the GitHub stand-in needs only `node`.

mod browser;
mod node;

pub use browser::{
    ConsentAnswer, ProviderBrowser, ProviderVisit, deny_at_provider, sign_in_at_provider,
};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::json;
use url::Url;

use node::NodeServer;

/// A client (relying party) registered at the [`OidcProvider`]: confidential, authorization code
/// flow, PKCE required, `client_secret_basic` or `client_secret_post` at the token endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct OidcClient {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
}

impl OidcClient {
    /// A client with one redirect URI.
    pub fn new(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        redirect_uri: impl Into<String>,
    ) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            redirect_uris: vec![redirect_uri.into()],
        }
    }
}

/// A real OpenID Connect provider on `127.0.0.1` and an ephemeral port, with ephemeral keys.
///
/// It serves discovery at `{issuer}/.well-known/openid-configuration`, sends the RFC 9207 `iss`
/// with authorization responses, puts `email`/`email_verified` in userinfo (scope `email`) and
/// `name`, `preferred_username`, `picture` under `profile`. Any login name signs in at its dev login
/// form (the password is ignored): a configured account gets its claims, any other login `sub` =
/// the login, `email` = `<login>@example.test` (verified), `name` = the login.
pub struct OidcProvider {
    server: NodeServer,
    issuer: String,
    http: reqwest::Client,
}

impl OidcProvider {
    /// Starts a provider with `clients` and `accounts`, a JSON object from login name to claims
    /// (`sub`, `email`, `email_verified`, `name`, `preferred_username`, `picture`). Needs a Tokio
    /// runtime; takes about a third of a second.
    pub async fn start(
        clients: &[OidcClient],
        accounts: serde_json::Value,
    ) -> anyhow::Result<OidcProvider> {
        node::require_installed("oidc-provider")?;
        let config = json!({ "clients": clients, "accounts": accounts });
        let (server, ready) =
            NodeServer::start("provider.mjs", &[("OIDC_CONFIG", config.to_string())]).await?;
        let issuer = ready["issuer"]
            .as_str()
            .with_context(|| format!("no issuer in the provider's ready line {ready}"))?
            .to_string();
        Ok(Self {
            server,
            issuer,
            http: reqwest::Client::new(),
        })
    }

    /// `http://127.0.0.1:<port>`, exactly as the provider puts it in `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Adds the account `login`, or replaces its claims, from now on.
    pub async fn put_account(&self, login: &str, claims: serde_json::Value) -> anyhow::Result<()> {
        let mut url = Url::parse(&self.issuer)?;
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("the issuer {} cannot have a path", self.issuer))?
            .extend(["_test", "accounts", login]);
        let response = self.http.put(url).json(&claims).send().await?;
        if !response.status().is_success() {
            bail!("putting the account {login}: {}", response.status());
        }
        Ok(())
    }

    /// The provider's stderr so far (oidc-provider's warnings, and its server errors if any).
    pub fn logs(&self) -> String {
        self.server.logs()
    }
}

/// A stand-in for GitHub on `127.0.0.1` and an ephemeral port: the OAuth app endpoints (PKCE S256
/// checked when the authorization sent a challenge; codes single use, 10 minutes), and `GET /user`,
/// `GET /user/emails` under [`Self::api_url`], in the shapes and errors GitHub documents. The
/// authorization has no page: it signs in the current user at once.
pub struct GithubStandIn {
    server: NodeServer,
    base_url: String,
    http: reqwest::Client,
}

impl GithubStandIn {
    /// Starts it with `config`: `{"client_id", "client_secret", "redirect_uris": [...], "user":
    /// {"id": 123, "login", "name", "avatar_url", "email"}, "emails": [{"email", "primary",
    /// "verified", "visibility"}]}`. Needs a Tokio runtime.
    pub async fn start(config: serde_json::Value) -> anyhow::Result<GithubStandIn> {
        let (server, ready) =
            NodeServer::start("github.mjs", &[("GITHUB_CONFIG", config.to_string())]).await?;
        let base_url = ready["base_url"]
            .as_str()
            .with_context(|| format!("no base_url in the GitHub stand-in's ready line {ready}"))?
            .to_string();
        Ok(Self {
            server,
            base_url,
            http: reqwest::Client::new(),
        })
    }

    /// `http://127.0.0.1:<port>`
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `{base}/login/oauth/authorize`
    pub fn auth_url(&self) -> String {
        format!("{}/login/oauth/authorize", self.base_url)
    }

    /// `{base}/login/oauth/access_token`
    pub fn token_url(&self) -> String {
        format!("{}/login/oauth/access_token", self.base_url)
    }

    /// `{base}/api`, where `/user` and `/user/emails` are (as on GitHub Enterprise).
    pub fn api_url(&self) -> String {
        format!("{}/api", self.base_url)
    }

    /// Makes `user` and `emails` the account that later authorizations sign in (tokens already
    /// issued keep the account they were issued for).
    pub async fn set_user(
        &self,
        user: serde_json::Value,
        emails: serde_json::Value,
    ) -> anyhow::Result<()> {
        self.control("/_test/user", json!({ "user": user, "emails": emails }))
            .await
    }

    /// Ends the next authorization as GitHub does when the user cancels: a redirect with
    /// `error=access_denied` and the state.
    pub async fn deny_next_authorization(&self) -> anyhow::Result<()> {
        self.control("/_test/deny-next", json!({})).await
    }

    /// The stand-in's stderr so far.
    pub fn logs(&self) -> String {
        self.server.logs()
    }

    async fn control(&self, path: &str, body: serde_json::Value) -> anyhow::Result<()> {
        let response = self
            .http
            .put(format!("{}{path}", self.base_url))
            .json(&body)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("PUT {path} at the GitHub stand-in: {}", response.status());
        }
        Ok(())
    }
}
