//! Logs (JSON or pretty), Prometheus metrics and the per-request log line.

use std::{sync::OnceLock, time::Instant};

use actix_web::{
    Error, HttpMessage,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header::{HeaderName, HeaderValue},
    middleware::Next,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};
use uuid::Uuid;

/// JSON logs unless `LOG_FORMAT=pretty`; level from `RUST_LOG` (default info).
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
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

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    ],
                )
                .expect("the bucket list is not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

/// The request id of the current request, for handlers that pass it on (events, logs).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Assigns a request id (or keeps a sane incoming one), logs one line per request with the matched
/// route pattern (never the query string, which can carry tokens), and records the latency histogram.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 64 && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .map_or_else(|| Uuid::new_v4().to_string(), str::to_string);
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let method = req.method().to_string();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let mut response = next.call(req).await?;
    let status = response.status().as_u16();
    let elapsed = started.elapsed().as_secs_f64();
    metrics::histogram!(
        "accounts_http_request_duration_seconds",
        "method" => method.clone(),
        "route" => route.clone(),
        "status" => status.to_string()
    )
    .record(elapsed);
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    tracing::info!(
        request_id,
        method,
        route,
        status,
        elapsed_ms = elapsed * 1000.0,
        "request"
    );
    Ok(response)
}
