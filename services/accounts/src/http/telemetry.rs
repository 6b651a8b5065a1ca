//! The per-request log line and latency histogram; logs and the recorder come from `telemetry`.

pub use telemetry::{init_logging, mask_address, metrics_handle};

use std::time::Instant;

use actix_web::{
    Error, HttpMessage,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header::{HeaderName, HeaderValue},
    middleware::Next,
};
use uuid::Uuid;

/// The request id of the current request, for handlers that pass it on (events, logs).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

impl actix_web::FromRequest for RequestId {
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(Ok(Self::of(req)))
    }
}

impl RequestId {
    /// The id `observe` gave `req` (a fresh one outside it).
    pub fn of(req: &actix_web::HttpRequest) -> Self {
        let id = req.extensions().get::<RequestId>().cloned();
        id.unwrap_or_else(|| RequestId(Uuid::new_v4().to_string()))
    }
}

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
