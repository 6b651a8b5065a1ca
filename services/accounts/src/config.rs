//! Settings from the environment (and `.env`). Every bad value fails startup with a message that
//! names the variable and says what it should look like.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::anyhow;
use ipnet::IpNet;
use secrecy::SecretString;
use settings::Env;
use url::Url;

pub mod social;

pub const DEFAULT_JWT_KEY_FILE: &str = "var/dev-jwt-key.pem";
pub const DEFAULT_ENCRYPTION_KEY_FILE: &str = "var/dev-encryption-key";

#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: SecretString,
    pub amqp_url: SecretString,
    pub addr: SocketAddr,
    pub public_url: Url,
    pub bcrypt_cost: u32,
    /// Background (`SCHED_IDLE`) hashing workers; defaults to every core. A paced floor worker
    /// comes on top (see `hashing`).
    pub hash_concurrency: usize,
    /// Hash requests allowed to wait beyond the background workers before new ones get 429;
    /// defaults to 32 per background worker.
    pub hash_queue: usize,
    pub jwt_key_file: PathBuf,
    /// Whether `jwt_key_file` is the default path, where a missing file means "create a dev key".
    pub jwt_key_is_default: bool,
    /// Public (or private) keys that still verify tokens during a rotation.
    pub jwt_previous_key_files: Vec<PathBuf>,
    /// 32 random bytes that seal what the service reads back (a family's current refresh token).
    pub encryption_key_file: PathBuf,
    /// Whether `encryption_key_file` is the default path (a development key may be created there).
    pub encryption_key_is_default: bool,
    pub confirm_success_url: Option<Url>,
    pub confirm_failure_url: Option<Url>,
    pub reset_password_url: Option<Url>,
    pub require_verified_email: bool,
    pub lockout: Duration,
    /// How long after a password entry a session may change the email without `current_password`.
    pub reauth: Duration,
    /// How long the "this wasn't me" link of an email change works.
    pub email_revert: Duration,
    /// How long a just-used refresh token may be used again (lost response, two tabs).
    pub refresh_grace: Duration,
    /// How long audit entries are kept.
    pub audit_retention: Duration,
    /// Reverse proxies whose `X-Forwarded-For` entries are believed (`ACCOUNTS_TRUSTED_PROXIES`).
    pub trusted_proxies: Vec<IpNet>,
    /// Registrations one client may make in an hour; 0 turns the limit off.
    pub registrations_per_hour: u32,
    /// Origins (`scheme://host[:port]`) whose browser apps may call the API
    /// (`ACCOUNTS_CORS_ORIGINS`); none by default.
    pub cors_origins: Vec<String>,
    pub outbox_poll_interval: Duration,
    pub outbox_retention: Duration,
    /// The product's name (`MAILER_PRODUCT_NAME`, shared with the mailer): the issuer an
    /// authenticator app shows beside a TOTP code.
    pub product_name: String,
    /// Social login providers and the app URLs a flow may answer to.
    pub social: social::Social,
    /// The WebAuthn relying party: its id (a host name; `None` turns passkeys off) and the
    /// origins allowed to use it.
    pub webauthn_rp_id: Option<String>,
    pub webauthn_origins: Vec<Url>,
}

impl Settings {
    /// Reads the process environment, after loading `.env` when there is one.
    pub fn from_env() -> anyhow::Result<Self> {
        settings::load_dotenv()?;
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds settings from any variable source; tests pass a map.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let env = Env::new(get);
        let seconds = |name: &str, default: &str| -> anyhow::Result<Duration> {
            Ok(Duration::from_secs(env.parse(
                name,
                default,
                "a whole number of seconds",
            )?))
        };

        let database_url = env.url(
            "ACCOUNTS_DATABASE_URL",
            "postgres://postgres@localhost:5432/accounts",
            &["postgres", "postgresql"],
        )?;
        let amqp_url = env.url(
            "AMQP_URL",
            "amqp://guest:guest@localhost:5672/%2f",
            &["amqp", "amqps"],
        )?;
        let addr = env.parse(
            "ACCOUNTS_ADDR",
            "127.0.0.1:8080",
            "host:port, such as 127.0.0.1:8080",
        )?;
        let mut public_url = env.url(
            "ACCOUNTS_PUBLIC_URL",
            "http://localhost:8080",
            &["http", "https"],
        )?;
        if !public_url.path().ends_with('/') {
            public_url.set_path(&format!("{}/", public_url.path()));
        }

        let bcrypt_cost: u32 =
            env.parse("ACCOUNTS_BCRYPT_COST", "12", "an integer from 4 to 31")?;
        if !(4..=31).contains(&bcrypt_cost) {
            return Err(anyhow!(
                "ACCOUNTS_BCRYPT_COST={bcrypt_cost} is out of range; expected an integer from 4 to 31"
            ));
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let default_concurrency = cores.max(1).to_string();
        let hash_concurrency =
            env.positive("ACCOUNTS_HASH_CONCURRENCY", &default_concurrency)? as usize;
        let hash_queue: usize = env.parse(
            "ACCOUNTS_HASH_QUEUE",
            &(hash_concurrency * 32).to_string(),
            "a non-negative integer",
        )?;

        let jwt_key_file = env.optional("ACCOUNTS_JWT_KEY_FILE");
        let jwt_key_is_default = jwt_key_file.is_none();
        let jwt_key_file =
            PathBuf::from(jwt_key_file.unwrap_or_else(|| DEFAULT_JWT_KEY_FILE.into()));
        let jwt_previous_key_files = env
            .var("ACCOUNTS_JWT_PREVIOUS_KEY_FILES", "")
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        let encryption_key_file = env.optional("ACCOUNTS_ENCRYPTION_KEY_FILE");
        let encryption_key_is_default = encryption_key_file.is_none();
        let encryption_key_file = PathBuf::from(
            encryption_key_file.unwrap_or_else(|| DEFAULT_ENCRYPTION_KEY_FILE.into()),
        );

        Ok(Self {
            database_url: SecretString::from(database_url.to_string()),
            amqp_url: SecretString::from(amqp_url.to_string()),
            addr,
            bcrypt_cost,
            hash_concurrency,
            hash_queue,
            jwt_key_file,
            jwt_key_is_default,
            jwt_previous_key_files,
            encryption_key_file,
            encryption_key_is_default,
            confirm_success_url: env.optional_url("ACCOUNTS_CONFIRM_SUCCESS_URL")?,
            confirm_failure_url: env.optional_url("ACCOUNTS_CONFIRM_FAILURE_URL")?,
            reset_password_url: env.optional_url("ACCOUNTS_RESET_PASSWORD_URL")?,
            require_verified_email: env.flag("ACCOUNTS_REQUIRE_VERIFIED_EMAIL", false)?,
            lockout: seconds("ACCOUNTS_LOCKOUT_SECONDS", "900")?,
            reauth: seconds("ACCOUNTS_REAUTH_SECONDS", "300")?,
            email_revert: seconds("ACCOUNTS_EMAIL_REVERT_SECONDS", "604800")?,
            refresh_grace: seconds("ACCOUNTS_REFRESH_REUSE_GRACE_SECONDS", "10")?,
            audit_retention: Duration::from_secs(
                86_400 * env.positive("ACCOUNTS_AUDIT_RETENTION_DAYS", "365")?,
            ),
            trusted_proxies: trusted_proxies(&env.var("ACCOUNTS_TRUSTED_PROXIES", ""))?,
            registrations_per_hour: env.parse(
                "ACCOUNTS_REGISTRATIONS_PER_HOUR",
                "20",
                "a whole number (0 turns the limit off)",
            )?,
            cors_origins: cors_origins(&env.var("ACCOUNTS_CORS_ORIGINS", ""))?,
            outbox_poll_interval: Duration::from_millis(
                env.positive("ACCOUNTS_OUTBOX_POLL_MS", "1000")?,
            ),
            outbox_retention: seconds("ACCOUNTS_OUTBOX_RETENTION_SECONDS", "604800")?,
            product_name: env.var("MAILER_PRODUCT_NAME", "Accounts"),
            social: social::from_env(&env, &public_url)?,
            webauthn_rp_id: webauthn_rp_id(&env, &public_url)?,
            webauthn_origins: webauthn_origins(&env, &public_url)?,
            public_url,
        })
    }

    /// Whether a missing signing key may be replaced by a generated development key: only when
    /// no key file is configured and the service is reachable only on this machine.
    pub fn development_key_allowed(&self) -> bool {
        self.jwt_key_is_default && self.only_local()
    }

    /// Whether a missing encryption key may be replaced by a generated development key, on the
    /// same terms as the signing key.
    pub fn development_encryption_key_allowed(&self) -> bool {
        self.encryption_key_is_default && self.only_local()
    }

    /// Whether the service is reachable only on this machine (its public URL is local).
    fn only_local(&self) -> bool {
        matches!(self.public_url.host_str(), Some("localhost" | "127.0.0.1"))
    }

    /// An absolute URL under the public base, such as `api/users/confirm`.
    pub fn public_link(&self, path: &str) -> Url {
        self.public_url
            .join(path.trim_start_matches('/'))
            .expect("a relative path joins onto an http URL")
    }
}

/// `ACCOUNTS_WEBAUTHN_RP_ID`, by default the public URL's host; browsers refuse an IP address
/// there, so an IP-address public URL leaves passkeys off unless the id is set.
fn webauthn_rp_id<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    public_url: &Url,
) -> anyhow::Result<Option<String>> {
    if let Some(id) = env.optional("ACCOUNTS_WEBAUTHN_RP_ID") {
        let host = url::Host::parse(&id).ok();
        return match host {
            Some(url::Host::Domain(_)) => Ok(Some(id.to_ascii_lowercase())),
            _ => Err(anyhow!(
                "ACCOUNTS_WEBAUTHN_RP_ID is {id:?}; expected a host name such as example.com (browsers refuse IP addresses)"
            )),
        };
    }
    Ok(match public_url.host() {
        Some(url::Host::Domain(domain)) => Some(domain.to_string()),
        _ => None,
    })
}

/// `ACCOUNTS_WEBAUTHN_ORIGINS`: comma-separated origins, by default the public URL's.
fn webauthn_origins<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    public_url: &Url,
) -> anyhow::Result<Vec<Url>> {
    let Some(list) = env.optional("ACCOUNTS_WEBAUTHN_ORIGINS") else {
        let origin = public_url.origin().ascii_serialization();
        return Ok(vec![Url::parse(&origin)?]);
    };
    list.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| {
            Url::parse(o)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .ok_or_else(|| {
                    anyhow!(
                        "ACCOUNTS_WEBAUTHN_ORIGINS has {o:?}; expected origins such as https://app.example.com, comma-separated"
                    )
                })
        })
        .collect()
}

/// A comma- or space-separated list of CIDR blocks; a bare address means just that address.
fn trusted_proxies(list: &str) -> anyhow::Result<Vec<IpNet>> {
    list.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    anyhow!(
                        "ACCOUNTS_TRUSTED_PROXIES has {entry:?}, which is not a CIDR block; expected a list such as 10.0.0.0/8, fd00::/8"
                    )
                })
        })
        .collect()
}

/// A comma-separated list of exact origins, as a browser sends them in `Origin`: an http(s)
/// scheme, a host and an optional port, nothing else. Each is kept in the browser's form
/// (lowercase host, no default port), since an origin matches byte for byte.
fn cors_origins(list: &str) -> anyhow::Result<Vec<String>> {
    list.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let origin = Url::parse(entry).ok().filter(|url| {
                matches!(url.scheme(), "http" | "https")
                    && url.host().is_some()
                    && url.username().is_empty()
                    && url.password().is_none()
                    && url.path() == "/"
                    && url.query().is_none()
                    && url.fragment().is_none()
            });
            origin.map(|url| url.origin().ascii_serialization()).ok_or_else(|| {
                anyhow!(
                    "ACCOUNTS_CORS_ORIGINS has {entry:?}, which is not an origin; expected exact origins such as https://app.example.com, http://localhost:3000, comma-separated (no wildcard, path or query)"
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_design() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.bcrypt_cost, 12);
        assert!(s.jwt_key_is_default);
        assert_eq!(s.reauth, Duration::from_secs(300));
        assert_eq!(s.email_revert, Duration::from_secs(604_800));
        assert_eq!(s.refresh_grace, Duration::from_secs(10));
        assert!(s.trusted_proxies.is_empty());
        assert_eq!(s.registrations_per_hour, 20);
        assert!(s.cors_origins.is_empty());
        assert_eq!(
            s.public_link("api/users/confirm").as_str(),
            "http://localhost:8080/api/users/confirm"
        );
    }

    #[test]
    fn a_development_key_only_for_a_local_public_url_without_a_key_file() {
        for (url, allowed) in [
            ("http://localhost:8080", true),
            ("http://127.0.0.1:18180", true),
            ("https://accounts.example.com", false),
            ("http://localhost.example.com", false),
            ("http://10.0.0.1:8080", false),
        ] {
            let s = settings(&[("ACCOUNTS_PUBLIC_URL", url)]).unwrap();
            assert_eq!(s.development_key_allowed(), allowed, "{url}");
        }
        let s = settings(&[("ACCOUNTS_JWT_KEY_FILE", "/etc/key.pem")]).unwrap();
        assert!(!s.development_key_allowed());
        assert!(s.development_encryption_key_allowed());
        let s = settings(&[("ACCOUNTS_ENCRYPTION_KEY_FILE", "/etc/enc.key")]).unwrap();
        assert!(!s.development_encryption_key_allowed());
        assert_eq!(s.encryption_key_file, PathBuf::from("/etc/enc.key"));
        let s = settings(&[("ACCOUNTS_PUBLIC_URL", "https://accounts.example.com")]).unwrap();
        assert!(!s.development_encryption_key_allowed());
    }

    #[test]
    fn trusted_proxies_take_cidr_blocks_and_addresses() {
        let s =
            settings(&[("ACCOUNTS_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1 fd00::/8")]).unwrap();
        let shown: Vec<String> = s.trusted_proxies.iter().map(|n| n.to_string()).collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.0.2.1/32", "fd00::/8"]);
    }

    #[test]
    fn cors_origins_are_kept_as_browsers_send_them() {
        let s = settings(&[(
            "ACCOUNTS_CORS_ORIGINS",
            "https://App.Example.com, http://localhost:3000,https://app.example.com:443/,",
        )])
        .unwrap();
        assert_eq!(
            s.cors_origins,
            [
                "https://app.example.com",
                "http://localhost:3000",
                "https://app.example.com"
            ]
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("ACCOUNTS_BCRYPT_COST", "lots"),
            ("ACCOUNTS_BCRYPT_COST", "99"),
            ("ACCOUNTS_ADDR", "localhost"),
            ("ACCOUNTS_DATABASE_URL", "mysql://x"),
            ("AMQP_URL", "not a url"),
            ("ACCOUNTS_PUBLIC_URL", ""),
            ("ACCOUNTS_REQUIRE_VERIFIED_EMAIL", "maybe"),
            ("ACCOUNTS_REAUTH_SECONDS", "-1"),
            ("ACCOUNTS_REFRESH_REUSE_GRACE_SECONDS", "soon"),
            ("ACCOUNTS_TRUSTED_PROXIES", "10.0.0.0/8, proxy.internal"),
            ("ACCOUNTS_REGISTRATIONS_PER_HOUR", "-1"),
            ("ACCOUNTS_CORS_ORIGINS", "https://app.example.com/*"),
        ] {
            let err = settings(&[(name, value)]).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
    }
}
