//! Social login settings: `ACCOUNTS_SOCIAL_PROVIDERS` and, per provider `<N>` (its name
//! upper-cased, `-` as `_`), `ACCOUNTS_SOCIAL_<N>_*`; `ACCOUNTS_SOCIAL_REDIRECTS`.

use anyhow::{Context, anyhow};
use secrecy::SecretString;
use settings::Env;
use url::Url;

pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";
const GITHUB_AUTH_URL: &str = "https://github.com/login/oauth/authorize";
const GITHUB_TOKEN_URL: &str = "https://github.com/login/oauth/access_token";
const GITHUB_API_URL: &str = "https://api.github.com";

#[derive(Debug, Clone)]
pub struct Social {
    pub providers: Vec<Provider>,
    /// Where a flow may send its answer (`redirect_to`), compared byte for byte.
    pub redirects: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Provider {
    /// As it appears in URLs (`/api/auth/{name}/...`).
    pub name: String,
    pub kind: Kind,
    pub client_id: String,
    pub client_secret: SecretString,
    /// Whether the provider's `email_verified` is believed.
    pub trust_email: bool,
    pub scopes: Vec<String>,
}

// Read once at startup, one per provider: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// OpenID Connect with discovery under `issuer`, kept exactly as configured: the ID token's
    /// `iss` must equal it byte for byte (a URL parser would add a trailing slash).
    Oidc { issuer: String },
    /// GitHub's OAuth app and REST API.
    Github {
        auth_url: Url,
        token_url: Url,
        api_url: Url,
    },
}

impl Provider {
    /// How mail and pages name it: "Google", "GitHub", or the configured name.
    pub fn display_name(&self) -> String {
        match self.name.as_str() {
            "google" => "Google".into(),
            "github" => "GitHub".into(),
            other => other.into(),
        }
    }
}

pub fn from_env<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    public_url: &Url,
) -> anyhow::Result<Social> {
    let names = env.var("ACCOUNTS_SOCIAL_PROVIDERS", "");
    let mut providers: Vec<Provider> = Vec::new();
    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let valid = name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(anyhow!(
                "ACCOUNTS_SOCIAL_PROVIDERS has {name:?}; expected names of lowercase letters, digits and '-', such as google,github"
            ));
        }
        if providers.iter().any(|p| p.name == name) {
            return Err(anyhow!("ACCOUNTS_SOCIAL_PROVIDERS names {name:?} twice"));
        }
        providers.push(provider(env, name)?);
    }
    let default_redirect = public_url
        .join("account/signed-in")
        .expect("a relative path joins onto an http URL")
        .to_string();
    let redirects = env
        .var("ACCOUNTS_SOCIAL_REDIRECTS", &default_redirect)
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| {
            let url = Url::parse(r).ok().filter(|u| {
                matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.fragment().is_none()
            });
            url.map(|_| r.to_string()).ok_or_else(|| {
                anyhow!(
                    "ACCOUNTS_SOCIAL_REDIRECTS has {r:?}; expected absolute http(s) URLs without a fragment, comma-separated"
                )
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Social {
        providers,
        redirects,
    })
}

fn provider<F: Fn(&str) -> Option<String>>(env: &Env<F>, name: &str) -> anyhow::Result<Provider> {
    let prefix = format!(
        "ACCOUNTS_SOCIAL_{}_",
        name.to_ascii_uppercase().replace('-', "_")
    );
    let var = |suffix: &str| format!("{prefix}{suffix}");
    let default_kind = if name == "github" { "github" } else { "oidc" };
    let kind = match env.var(&var("KIND"), default_kind).as_str() {
        "oidc" => {
            let default_issuer = if name == "google" { GOOGLE_ISSUER } else { "" };
            let issuer = env.var(&var("ISSUER"), default_issuer);
            if issuer.is_empty() {
                return Err(anyhow!(
                    "{} is missing; an OpenID Connect provider needs its issuer URL (discovery reads <issuer>/.well-known/openid-configuration)",
                    var("ISSUER")
                ));
            }
            if issuer.contains('{') || issuer.contains("%7B") {
                return Err(anyhow!(
                    "{} is {issuer:?}, a templated (multi-tenant) issuer; configure one tenant's issuer instead",
                    var("ISSUER")
                ));
            }
            env.url(&var("ISSUER"), default_issuer, &["https", "http"])?;
            Kind::Oidc { issuer }
        }
        "github" => Kind::Github {
            auth_url: env.url(&var("AUTH_URL"), GITHUB_AUTH_URL, &["https", "http"])?,
            token_url: env.url(&var("TOKEN_URL"), GITHUB_TOKEN_URL, &["https", "http"])?,
            api_url: env.url(&var("API_URL"), GITHUB_API_URL, &["https", "http"])?,
        },
        other => {
            return Err(anyhow!(
                "{} is {other:?}; expected oidc or github",
                var("KIND")
            ));
        }
    };
    let client_id = env.optional(&var("CLIENT_ID")).ok_or_else(|| {
        anyhow!(
            "{} is missing; set the client id the provider gave this application",
            var("CLIENT_ID")
        )
    })?;
    let client_secret = match (
        env.optional(&var("CLIENT_SECRET")),
        env.optional(&var("CLIENT_SECRET_FILE")),
    ) {
        (Some(secret), None) => secret,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .with_context(|| {
                format!(
                    "{} names {path:?}, which cannot be read",
                    var("CLIENT_SECRET_FILE")
                )
            })?
            .trim()
            .to_string(),
        (Some(_), Some(_)) => {
            return Err(anyhow!(
                "both {} and {} are set; set one",
                var("CLIENT_SECRET"),
                var("CLIENT_SECRET_FILE")
            ));
        }
        (None, None) => {
            return Err(anyhow!(
                "{} (or {}) is missing; set the client secret the provider gave this application",
                var("CLIENT_SECRET"),
                var("CLIENT_SECRET_FILE")
            ));
        }
    };
    let trusted_by_default = matches!(name, "google" | "github");
    let default_scopes = match kind {
        Kind::Github { .. } => "read:user user:email",
        Kind::Oidc { .. } => "openid email profile",
    };
    Ok(Provider {
        name: name.into(),
        trust_email: env.flag(&var("TRUST_EMAIL"), trusted_by_default)?,
        scopes: env
            .var(&var("SCOPES"), default_scopes)
            .split_whitespace()
            .map(String::from)
            .collect(),
        kind,
        client_id,
        client_secret: SecretString::from(client_secret),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn social(vars: &[(&str, &str)]) -> anyhow::Result<Social> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = Env::new(move |name: &str| map.get(name).cloned());
        from_env(&env, &Url::parse("http://localhost:8080/").unwrap())
    }

    #[test]
    fn presets_follow_the_design() {
        let s = social(&[
            ("ACCOUNTS_SOCIAL_PROVIDERS", "google,github,corp"),
            ("ACCOUNTS_SOCIAL_GOOGLE_CLIENT_ID", "g"),
            ("ACCOUNTS_SOCIAL_GOOGLE_CLIENT_SECRET", "gs"),
            ("ACCOUNTS_SOCIAL_GITHUB_CLIENT_ID", "h"),
            ("ACCOUNTS_SOCIAL_GITHUB_CLIENT_SECRET", "hs"),
            ("ACCOUNTS_SOCIAL_CORP_CLIENT_ID", "c"),
            ("ACCOUNTS_SOCIAL_CORP_CLIENT_SECRET", "cs"),
            ("ACCOUNTS_SOCIAL_CORP_ISSUER", "https://sso.corp.example"),
        ])
        .unwrap();
        let [google, github, corp] = &s.providers[..] else {
            panic!("three providers")
        };
        assert_eq!(
            google.kind,
            Kind::Oidc {
                issuer: GOOGLE_ISSUER.into()
            }
        );
        assert!(google.trust_email && github.trust_email && !corp.trust_email);
        assert_eq!(github.scopes, ["read:user", "user:email"]);
        assert_eq!(corp.scopes, ["openid", "email", "profile"]);
        assert!(matches!(github.kind, Kind::Github { .. }));
        assert_eq!(s.redirects, ["http://localhost:8080/account/signed-in"]);
    }

    #[test]
    fn bad_provider_settings_name_the_variable() {
        let err = |vars: &[(&str, &str)]| social(vars).unwrap_err().to_string();
        assert!(
            err(&[("ACCOUNTS_SOCIAL_PROVIDERS", "corp")]).contains("ACCOUNTS_SOCIAL_CORP_ISSUER")
        );
        assert!(
            err(&[
                ("ACCOUNTS_SOCIAL_PROVIDERS", "ms"),
                (
                    "ACCOUNTS_SOCIAL_MS_ISSUER",
                    "https://login.microsoftonline.com/{tenantid}/v2.0"
                ),
            ])
            .contains("templated")
        );
        assert!(
            err(&[("ACCOUNTS_SOCIAL_PROVIDERS", "google")])
                .contains("ACCOUNTS_SOCIAL_GOOGLE_CLIENT_ID")
        );
        assert!(err(&[("ACCOUNTS_SOCIAL_PROVIDERS", "Bad Name")]).contains("lowercase"));
        assert!(
            err(&[("ACCOUNTS_SOCIAL_REDIRECTS", "/relative")])
                .contains("ACCOUNTS_SOCIAL_REDIRECTS")
        );
    }
}
