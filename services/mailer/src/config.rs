//! Settings from the environment (and `.env`). Every bad value fails startup with a message that
//! names the variable and says what it should look like.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::anyhow;
use lettre::message::Mailbox;
use secrecy::SecretString;
use settings::Env;

#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: SecretString,
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

        Ok(Self {
            database_url: SecretString::from(database_url.to_string()),
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
        })
    }
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
        ] {
            let err = settings(&[(name, value)]).unwrap_err().to_string();
            assert!(err.contains(name), "{name}: {err}");
        }
    }
}
