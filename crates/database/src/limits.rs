//! How long a connection may wait on Postgres, as connection parameters (tokio-postgres reads
//! libpq's names from the URL).

use std::time::Duration;

use anyhow::Context;
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use url::Url;

/// The limits every connection carries. A parameter the database URL already sets is left as the
/// URL says (so an operator can tune one connection string without a new setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Postgres cancels a statement that runs longer (`statement_timeout`; zero: never). A
    /// client waits at most [`Self::response_deadline`] for any answer.
    pub statement_timeout: Duration,
    /// Connecting (TCP and the startup handshake) gives up after this (`connect_timeout`, whole
    /// seconds, at least 1).
    pub connect_timeout: Duration,
    /// An idle connection sends TCP keepalive probes after this (`keepalives_idle`, then every
    /// [`KEEPALIVE_INTERVAL`], [`KEEPALIVE_PROBES`] times), and data the server has not
    /// acknowledged after this much more drops the connection (`tcp_user_timeout`, Linux): a
    /// half-open connection is noticed within about twice this, idle or busy.
    pub keepalive_idle: Duration,
}

/// Seconds between keepalive probes once they start.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered keepalive probes before the connection is dropped.
pub const KEEPALIVE_PROBES: u32 = 3;

impl Default for ConnectionLimits {
    /// A 30 s statement timeout, a 5 s connect timeout and keepalive after 30 s idle.
    fn default() -> Self {
        Self {
            statement_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            keepalive_idle: Duration::from_secs(30),
        }
    }
}

impl ConnectionLimits {
    /// The longest a client waits for the answer to one statement or transaction before it
    /// gives the connection up: the statement timeout (after which the server answers with an
    /// error) and a margin for the answer to arrive.
    pub fn response_deadline(&self) -> Duration {
        let statement = if self.statement_timeout.is_zero() {
            Duration::from_secs(300)
        } else {
            self.statement_timeout
        };
        statement + Duration::from_secs(2)
    }

    /// `database_url` with these limits as parameters, where it does not set them itself.
    /// Parameters are percent-encoded, as tokio-postgres reads them (a `+` is not a space there).
    pub fn apply(&self, database_url: &str) -> anyhow::Result<String> {
        let mut url = Url::parse(database_url).context("parsing the database URL")?;
        let decode = |raw: &str| percent_decode_str(raw).decode_utf8_lossy().into_owned();
        let encode = |text: &str| utf8_percent_encode(text, NON_ALPHANUMERIC).to_string();
        let mut pairs: Vec<String> = Vec::new();
        let mut set: Vec<String> = Vec::new();
        let mut options: Option<String> = None;
        for raw in url
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (name, value) = raw.split_once('=').unwrap_or((raw, ""));
            let name = decode(name);
            if name == "options" {
                options = Some(decode(value));
            } else {
                pairs.push(raw.to_string());
            }
            set.push(name);
        }
        let secs = |d: Duration| d.as_secs().max(1).to_string();
        let tcp_user_timeout = self.keepalive_idle + KEEPALIVE_INTERVAL * KEEPALIVE_PROBES;
        for (name, value) in [
            ("connect_timeout", secs(self.connect_timeout)),
            ("keepalives", "1".into()),
            ("keepalives_idle", secs(self.keepalive_idle)),
            ("keepalives_interval", secs(KEEPALIVE_INTERVAL)),
            ("keepalives_retries", KEEPALIVE_PROBES.to_string()),
            // tokio-postgres reads it in seconds (libpq: milliseconds).
            ("tcp_user_timeout", secs(tcp_user_timeout)),
        ] {
            if !set.iter().any(|s| s == name) {
                pairs.push(format!("{name}={}", encode(&value)));
            }
        }
        let statement_timeout = format!(
            "-c statement_timeout={}",
            self.statement_timeout.as_millis()
        );
        let options = match options {
            Some(options) if options.contains("statement_timeout") => options,
            Some(options) => format!("{options} {statement_timeout}"),
            None => statement_timeout,
        };
        pairs.push(format!("options={}", encode(&options)));
        url.set_query(Some(&pairs.join("&")));
        Ok(url.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_become_parameters_unless_the_url_sets_them() {
        let limits = ConnectionLimits {
            statement_timeout: Duration::from_millis(1500),
            connect_timeout: Duration::from_secs(4),
            keepalive_idle: Duration::from_secs(20),
        };
        let url = limits
            .apply("postgres://u:p%40ss@db:5432/mailer?application_name=m&connect_timeout=9")
            .unwrap();
        assert_eq!(
            url,
            "postgres://u:p%40ss@db:5432/mailer?application_name=m&connect_timeout=9&keepalives=1\
             &keepalives_idle=20&keepalives_interval=5&keepalives_retries=3&tcp_user_timeout=35\
             &options=%2Dc%20statement%5Ftimeout%3D1500"
        );
        let own = limits
            .apply("postgres://db/m?options=-c%20statement_timeout%3D0")
            .unwrap();
        assert!(
            own.ends_with("options=%2Dc%20statement%5Ftimeout%3D0"),
            "{own}"
        );
        assert_eq!(limits.response_deadline(), Duration::from_millis(3500));
    }
}
