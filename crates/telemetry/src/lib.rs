//! JSON logs, the Prometheus recorder, and masking of addresses for log lines, shared by the services.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Targets that are switched off whatever `RUST_LOG` says, because what they log can hold secrets.
/// lapin logs every returned (unroutable) message at WARN with its body, and our bodies hold
/// confirmation and reset links with tokens; the publisher reports returns itself, by message id.
pub const SILENCED_TARGETS: [&str; 1] = ["lapin::returned_messages"];

/// The filter the services log through: `RUST_LOG` (default info), with [`SILENCED_TARGETS`] off.
/// A more specific directive wins in `EnvFilter`, so `RUST_LOG=lapin=trace` does not bring them back.
pub fn env_filter() -> EnvFilter {
    let base = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    SILENCED_TARGETS.iter().fold(base, |filter, target| {
        match format!("{target}=off").parse() {
            Ok(directive) => filter.add_directive(directive),
            Err(_) => filter,
        }
    })
}

/// JSON logs unless `LOG_FORMAT=pretty`; level from `RUST_LOG` (default info), through [`env_filter`].
pub fn init_logging() {
    let filter = env_filter();
    let registry = tracing_subscriber::registry().with(filter);
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
    use super::mask_address;

    #[test]
    fn masks_the_local_part() {
        assert_eq!(mask_address("ada@example.com"), "a***@example.com");
        assert_eq!(mask_address("@example.com"), "***@example.com");
        assert_eq!(mask_address("nonsense"), "***");
    }
}
