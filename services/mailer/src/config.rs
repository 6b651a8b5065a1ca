//! Settings from the environment (and `.env`). Every bad value fails startup with a message that
//! names the variable and says what it should look like.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::anyhow;
use database::ConnectionLimits;
use lettre::message::Mailbox;
use secrecy::SecretString;
use settings::Env;
use url::Url;

#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: SecretString,
    /// How long a database connection may wait: `MAILER_DATABASE_STATEMENT_TIMEOUT_MS` (5000; the
    /// mailer's statements take milliseconds, and a connection that stays silent longer is closed),
    /// `MAILER_DATABASE_CONNECT_TIMEOUT_SECS` (5), `MAILER_DATABASE_KEEPALIVE_SECS` (30: TCP
    /// keepalive after that much idle time, and the TCP user timeout). Parameters set in
    /// `MAILER_DATABASE_URL` itself win.
    pub database_limits: ConnectionLimits,
    pub amqp_url: SecretString,
    /// `smtp://host:port` (plain), `smtp://host:port?tls=required` (STARTTLS) or `smtps://` (TLS).
    pub smtp_url: SecretString,
    pub from: Mailbox,
    pub addr: SocketAddr,
    /// Files here replace the embedded templates of the same relative name.
    pub templates_dir: Option<PathBuf>,
    /// Mails in flight at once (and the size of the SMTP connection pool).
    pub concurrency: usize,
    /// Deliveries (unacked messages) the broker may push before we ack.
    pub prefetch: u16,
    /// Attempts before a transiently failing mail goes to `failed_sends`.
    pub max_attempts: u32,
    /// Delay before the first retry; it doubles on each attempt up to `retry_cap`.
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// How often the sender looks for due mail when no notification arrives.
    pub poll_interval: Duration,
    /// The longest wait for any one SMTP reply (and for the TCP connect), `MAILER_SMTP_TIMEOUT_SECS`.
    /// A reply later than this fails the send as transient and the connection is dropped. RFC 5321
    /// §4.5.3.2 suggests minutes per command for MTAs relaying; a submission server answers in
    /// seconds, so the default is 30 s.
    pub smtp_timeout: Duration,
    /// The product the mail speaks for (`{{ product }}` in templates, subjects included).
    pub product_name: String,
    /// accounts' public keys, which verify the access tokens the admin API accepts.
    pub jwks_url: Url,
    /// The `iss` of those tokens: accounts' public URL (`ACCOUNTS_PUBLIC_URL`), as accounts writes it.
    pub jwt_issuer: String,
    /// At most one JWKS fetch per this interval, however many tokens name unknown keys.
    pub jwks_refetch_interval: Duration,
}

impl Settings {
    /// A whole send (connect, every command and the data) gives up after this: twice the per-reply
    /// timeout.
    pub fn send_deadline(&self) -> Duration {
        self.smtp_timeout * 2
    }

    /// How long a claimed delivery stays claimed; always longer than the whole send and its settle.
    pub fn lease(&self) -> Duration {
        crate::sender::lease_for(self.send_deadline())
    }

    /// How long a graceful stop waits for the mail in flight to be sent and settled. The pod's
    /// `terminationGracePeriodSeconds` must exceed it (deploy/k8s/mailer.yaml).
    pub fn drain_timeout(&self) -> Duration {
        self.send_deadline() + crate::sender::SETTLE_WINDOW + Duration::from_secs(5)
    }

    /// Reads the process environment, after loading `.env` when there is one.
    pub fn from_env() -> anyhow::Result<Self> {
        settings::load_dotenv()?;
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds settings from any variable source; tests pass a map.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let env = Env::new(get);
        let url = |name: &str, default: &str, schemes: &[&str]| env.url(name, default, schemes);
        let positive = |name: &str, default: &str| env.positive(name, default);

        let database_url = url(
            "MAILER_DATABASE_URL",
            "postgres://postgres@localhost:5432/mailer",
            &["postgres", "postgresql"],
        )?;
        let database_limits = ConnectionLimits {
            statement_timeout: Duration::from_millis(positive(
                "MAILER_DATABASE_STATEMENT_TIMEOUT_MS",
                "5000",
            )?),
            connect_timeout: Duration::from_secs(positive(
                "MAILER_DATABASE_CONNECT_TIMEOUT_SECS",
                "5",
            )?),
            keepalive_idle: Duration::from_secs(positive("MAILER_DATABASE_KEEPALIVE_SECS", "30")?),
        };
        let amqp_url = url(
            "AMQP_URL",
            "amqp://guest:guest@localhost:5672/%2f",
            &["amqp", "amqps"],
        )?;
        let smtp_url = url(
            "MAILER_SMTP_URL",
            "smtp://localhost:1025",
            &["smtp", "smtps"],
        )?;
        let from: Mailbox = env.parse(
            "MAILER_FROM",
            "Accounts <noreply@localhost>",
            "a mailbox such as \"Accounts <noreply@example.com>\"",
        )?;
        let addr = env.parse(
            "MAILER_ADDR",
            "127.0.0.1:8081",
            "host:port, such as 127.0.0.1:8081",
        )?;
        let templates_dir = env.optional("MAILER_TEMPLATES_DIR").map(PathBuf::from);
        if let Some(dir) = &templates_dir
            && !dir.is_dir()
        {
            return Err(anyhow!(
                "MAILER_TEMPLATES_DIR={} is not a directory; create it or unset the variable",
                dir.display()
            ));
        }
        let concurrency = positive("MAILER_CONCURRENCY", "16")?;
        let prefetch = positive("MAILER_PREFETCH", "64")?;
        let max_attempts = positive("MAILER_MAX_ATTEMPTS", "10")?;
        let retry_base = positive("MAILER_RETRY_BASE_MS", "2000")?;
        let retry_cap = positive("MAILER_RETRY_MAX_MS", "600000")?;
        let poll = positive("MAILER_POLL_MS", "5000")?;
        let smtp_timeout = positive("MAILER_SMTP_TIMEOUT_SECS", "30")?;
        let product_name = product_name(&env.var("MAILER_PRODUCT_NAME", "Accounts"))?;
        let jwks_url = url(
            "ACCOUNTS_JWKS_URL",
            "http://localhost:8080/.well-known/jwks.json",
            &["http", "https"],
        )?;
        // accounts signs with its public URL, less the trailing slash, as `iss`.
        let jwt_issuer = url(
            "ACCOUNTS_PUBLIC_URL",
            "http://localhost:8080",
            &["http", "https"],
        )?
        .as_str()
        .trim_end_matches('/')
        .to_string();
        let jwks_refetch = positive("MAILER_JWKS_REFETCH_INTERVAL_MS", "5000")?;

        Ok(Self {
            database_url: SecretString::from(database_url.to_string()),
            database_limits,
            amqp_url: SecretString::from(amqp_url.to_string()),
            smtp_url: SecretString::from(smtp_url.to_string()),
            from,
            addr,
            templates_dir,
            concurrency: concurrency.min(1024) as usize,
            prefetch: prefetch.min(u16::MAX.into()) as u16,
            max_attempts: max_attempts.min(1000) as u32,
            retry_base: Duration::from_millis(retry_base),
            retry_cap: Duration::from_millis(retry_cap.max(retry_base)),
            poll_interval: Duration::from_millis(poll),
            smtp_timeout: Duration::from_secs(smtp_timeout),
            product_name,
            jwks_url,
            jwt_issuer,
            jwks_refetch_interval: Duration::from_millis(jwks_refetch),
        })
    }
}

/// The longest product name we put in a subject line.
const PRODUCT_NAME_MAX_CHARS: usize = 80;

/// A product name goes into subjects (one header line), so it must be one short line of text.
fn product_name(value: &str) -> anyhow::Result<String> {
    let name = value.trim();
    if name.is_empty() {
        return Err(anyhow!(
            "MAILER_PRODUCT_NAME is blank; set it to the name users know the product by, or unset it for \"Accounts\""
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(anyhow!(
            "MAILER_PRODUCT_NAME contains a control character (a newline?); it must be one line of text"
        ));
    }
    if name.chars().count() > PRODUCT_NAME_MAX_CHARS {
        return Err(anyhow!(
            "MAILER_PRODUCT_NAME is longer than {PRODUCT_NAME_MAX_CHARS} characters; it appears in every subject line"
        ));
    }
    Ok(name.to_string())
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
        assert_eq!(s.addr.to_string(), "127.0.0.1:8081");
        assert_eq!(s.from.email.to_string(), "noreply@localhost");
        assert_eq!(s.max_attempts, 10);
        assert_eq!(s.retry_base, Duration::from_secs(2));
        assert_eq!(s.concurrency, 16);
        assert!(s.templates_dir.is_none());
        assert_eq!(s.smtp_timeout, Duration::from_secs(30));
        // The lease outlives the whole send and its settle, and the drain fits in the pod's
        // grace period (deploy/k8s/mailer.yaml: 90 s).
        assert!(s.lease() > s.send_deadline() + crate::sender::SETTLE_WINDOW);
        assert!(s.drain_timeout() < Duration::from_secs(90));
        assert_eq!(s.product_name, "Accounts");
        assert_eq!(
            s.jwks_url.as_str(),
            "http://localhost:8080/.well-known/jwks.json"
        );
        assert_eq!(s.jwt_issuer, "http://localhost:8080");
        assert_eq!(s.jwks_refetch_interval, Duration::from_secs(5));
        assert_eq!(
            s.database_limits,
            ConnectionLimits {
                statement_timeout: Duration::from_secs(5),
                connect_timeout: Duration::from_secs(5),
                keepalive_idle: Duration::from_secs(30),
            }
        );
    }

    #[test]
    fn the_expected_issuer_is_accounts_public_url_as_accounts_writes_it() {
        let s = settings(&[
            ("ACCOUNTS_PUBLIC_URL", "https://accounts.example.com/"),
            ("ACCOUNTS_JWKS_URL", "http://accounts/.well-known/jwks.json"),
        ])
        .unwrap();
        assert_eq!(s.jwt_issuer, "https://accounts.example.com");
        assert_eq!(s.jwks_url.as_str(), "http://accounts/.well-known/jwks.json");
        let s = settings(&[("ACCOUNTS_PUBLIC_URL", "https://example.com/accounts/")]).unwrap();
        assert_eq!(s.jwt_issuer, "https://example.com/accounts");
    }

    #[test]
    fn the_product_name_is_configurable_and_trimmed() {
        let s = settings(&[("MAILER_PRODUCT_NAME", "  Acme Shop & Co ")]).unwrap();
        assert_eq!(s.product_name, "Acme Shop & Co");
        let s = settings(&[("MAILER_PRODUCT_NAME", "Ça marche")]).unwrap();
        assert_eq!(s.product_name, "Ça marche");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("MAILER_DATABASE_URL", "mysql://x"),
            ("AMQP_URL", "not a url"),
            ("MAILER_SMTP_URL", "http://localhost"),
            ("MAILER_FROM", "not an address"),
            ("MAILER_ADDR", "localhost"),
            ("MAILER_TEMPLATES_DIR", "/definitely/not/here"),
            ("MAILER_CONCURRENCY", "0"),
            ("MAILER_MAX_ATTEMPTS", "many"),
            ("MAILER_RETRY_BASE_MS", "-1"),
            ("MAILER_PRODUCT_NAME", "   "),
            ("MAILER_PRODUCT_NAME", "Acme\r\nBcc: victim@example.com"),
            ("MAILER_PRODUCT_NAME", "x".repeat(81).as_str()),
            ("ACCOUNTS_JWKS_URL", "file:///etc/jwks.json"),
            ("ACCOUNTS_JWKS_URL", "localhost:8080/.well-known/jwks.json"),
            ("ACCOUNTS_PUBLIC_URL", "accounts.example.com"),
            ("MAILER_JWKS_REFETCH_INTERVAL_MS", "0"),
            ("MAILER_DATABASE_STATEMENT_TIMEOUT_MS", "0"),
            ("MAILER_DATABASE_CONNECT_TIMEOUT_SECS", "soon"),
            ("MAILER_DATABASE_KEEPALIVE_SECS", "-5"),
        ] {
            let err = settings(&[(name, value)]).unwrap_err().to_string();
            assert!(err.contains(name), "{name}: {err}");
        }
    }
}
