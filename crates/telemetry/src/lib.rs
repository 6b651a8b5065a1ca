//! JSON logs, the Prometheus recorder, and masking of addresses for log lines, shared by the services.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::{Level, Metadata};
use tracing_subscriber::{
    EnvFilter,
    filter::{FilterFn, filter_fn},
    fmt,
    prelude::*,
};

/// The level filter from `RUST_LOG` (default info).
pub fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Keeps out what libraries log that can hold secrets, whatever `RUST_LOG` says (a filter of its
/// own, which no directive can widen):
/// - our message bodies hold confirmation and reset links with tokens, and lapin logs them: every
///   returned (unroutable) message at WARN, every frame it reads or writes at TRACE (the publisher
///   reports returns itself, by message id);
/// - tokio-postgres logs every statement's parameters (addresses, password hashes, envelopes) at
///   DEBUG.
pub fn secret_guard() -> FilterFn<fn(&Metadata<'_>) -> bool> {
    fn admitted(meta: &Metadata<'_>) -> bool {
        let target = meta.target();
        let within = |krate: &str| {
            target
                .strip_prefix(krate)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        };
        let verbose = *meta.level() >= Level::DEBUG;
        !((within("lapin")
            && (*meta.level() == Level::TRACE || target == "lapin::returned_messages"))
            || (within("tokio_postgres") && verbose))
    }
    filter_fn(admitted as fn(&Metadata<'_>) -> bool)
}

/// JSON logs unless `LOG_FORMAT=pretty`; level from `RUST_LOG` (default info), through
/// [`env_filter`] and [`secret_guard`].
pub fn init_logging() {
    let registry = tracing_subscriber::registry()
        .with(env_filter())
        .with(secret_guard());
    let result = if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "pretty") {
        registry.with(fmt::layer()).try_init()
    } else {
        registry
            .with(fmt::layer().json().flatten_event(true))
            .try_init()
    };
    // A second init (tests) keeps the first subscriber.
    drop(result);
}

/// How often histogram samples are folded into their buckets. The recorder keeps every sample
/// until then: without this, a service nobody scrapes grows by 8 bytes a request, for ever.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The process-wide Prometheus recorder, installed on first use, with a thread that keeps its
/// memory bounded whether or not anyone scrapes it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0, 30.0,
                    ],
                )
                .expect("the bucket list is not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                })
                .expect("starting the metrics upkeep thread");
            handle
        })
        .clone()
}

/// An error and its causes on one line, `outer: cause: cause` (many errors' own message omits
/// the cause that says what happened, such as "connection refused" or a template's line).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `text` with every word that holds an `@` masked as [`mask_address`] masks an address: SMTP
/// servers repeat the recipient in their replies (`550 5.1.1 <bob@example.org>: no such user`).
pub fn mask_addresses(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            if !word.contains('@') {
                return word.to_string();
            }
            let start = word.find(|c: char| !"<(\"'[".contains(c)).unwrap_or(0);
            let end = word
                .rfind(|c: char| !">)\"':;,.]".contains(c))
                .map_or(word.len(), |i| i + 1);
            if start >= end {
                return word.to_string();
            }
            format!(
                "{}{}{}",
                &word[..start],
                mask_address(&word[start..end]),
                &word[end..]
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// An address as it may appear in logs: the first character of the local part and the domain,
/// `a***@example.com`.
pub fn mask_address(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::{mask_address, mask_addresses};

    #[test]
    fn addresses_in_a_server_reply_are_masked() {
        let reply = "permanent error (550): 5.1.1 <bob.smith@example.org>: Recipient address rejected; bob.smith@example.org unknown.";
        let masked = mask_addresses(reply);
        assert!(!masked.contains("bob.smith"), "{masked}");
        assert_eq!(
            masked,
            "permanent error (550): 5.1.1 <b***@example.org>: Recipient address rejected; b***@example.org unknown."
        );
        assert_eq!(mask_addresses("451 try again later"), "451 try again later");
    }

    #[test]
    fn masks_the_local_part() {
        assert_eq!(mask_address("ada@example.com"), "a***@example.com");
        assert_eq!(mask_address("@example.com"), "***@example.com");
        assert_eq!(mask_address("nonsense"), "***");
    }
}
