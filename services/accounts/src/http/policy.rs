//! What every response owes the client, whatever handler or extractor produced it: the body
//! limit answered in the error envelope, the security headers of API answers and pages, and CORS
//! for the browser apps of the listed origins.

use actix_cors::Cors;
use actix_web::{
    Error, HttpRequest, ResponseError,
    body::{self, BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{
        Method, StatusCode,
        header::{self, HeaderValue},
    },
    middleware::Next,
};

use crate::http::error::ApiError;

/// Request bodies larger than this get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Pages load their script and stylesheet from files of this app and talk only to its API; nothing
/// may frame them (clickjacking) or send their URL, which can carry a token, elsewhere.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The docs page (Swagger UI, vendored) loads its scripts and stylesheets from files under `/docs/`,
/// and its stylesheet draws icons from `data:` SVGs; "Try it out" calls this app's API. Its bundle
/// inserts one `<style>` of its own, the logo's two colours, allowed by its hash (Swagger UI 5.17.14;
/// headless Chromium in tests/e2e/browser.mjs reports a violation if an upgrade changes it).
pub const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self' 'sha256-RL3ie0nH+Lzz2YNqQN83mnU0J1ot4QL7b99vMdIX99w='; connect-src 'self'; \
    img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Answers a body over [`MAX_BODY_BYTES`] with 413 in the error envelope: a declared length at once,
/// before any handler runs, and a streamed one whatever extractor found it too large (the JSON
/// extractor renders its own; `Bytes` and friends would answer text/plain).
pub async fn body_limit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        let (request, _) = req.into_parts();
        return Ok(too_large(request));
    }
    // Handlers and extractors answer errors as responses; an error that still escapes is rendered
    // by actix from its own type, so a 413 among them is replaced by ours.
    let response = match next.call(req).await {
        Ok(response) => response.map_into_boxed_body(),
        Err(e) if e.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(ApiError::PayloadTooLarge.into());
        }
        Err(e) => return Err(e),
    };
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json(&response) {
        let (request, _) = response.into_parts();
        return Ok(too_large(request));
    }
    Ok(response)
}

fn too_large(request: HttpRequest) -> ServiceResponse<BoxBody> {
    ServiceResponse::new(request, ApiError::PayloadTooLarge.error_response())
}

fn is_json(response: &ServiceResponse<BoxBody>) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// `Cache-Control: no-store` on every `/api` answer (they carry tokens and personal data), and on
/// the pages and the docs page a Content-Security-Policy without inline script, no framing, no
/// referrer. Every response gets `nosniff`.
pub async fn security_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let path = req.path().to_string();
    let mut response = next.call(req).await?.map_into_boxed_body();
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if path == "/api" || path.starts_with("/api/") {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    let policy = match path.as_str() {
        p if p.starts_with("/account/") => Some(PAGE_CSP),
        p if p == "/docs" || p.starts_with("/docs/") => Some(DOCS_CSP),
        _ => None,
    };
    if let (Some(policy), true) = (policy, is_html) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(policy),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    Ok(response)
}

/// CORS for browser apps on `origins` (exact matches; none by default). Preflights are answered
/// here, before any extractor, so they need no token. Tokens travel in the `Authorization` header,
/// never in cookies, so there is no credentials mode. An app may read `Retry-After` (of a 429) and
/// `X-Request-Id` (to quote in a support request). Other origins get no
/// `Access-Control-Allow-Origin`, so their browser hides every answer from them.
pub fn cors(origins: &[String]) -> Cors {
    let cors = Cors::default()
        .allowed_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::ACCEPT_LANGUAGE,
            header::HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            header::RETRY_AFTER,
            header::HeaderName::from_static("x-request-id"),
        ])
        .max_age(3600);
    origins
        .iter()
        .fold(cors, |cors, origin| cors.allowed_origin(origin))
}

/// actix-cors refuses a preflight (an unlisted origin, a method or header the API does not take)
/// with 400 and a line of text; this answers it in the error envelope, as every other 4xx.
pub async fn preflight_refusals(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let response = next.call(req).await?.map_into_boxed_body();
    if !preflight || response.status() != StatusCode::BAD_REQUEST || is_json(&response) {
        return Ok(response);
    }
    let (request, refused) = response.into_parts();
    let reason = body::to_bytes(refused.into_body())
        .await
        .map(|text| String::from_utf8_lossy(&text).replace('`', ""))
        .unwrap_or_default();
    let answer = ApiError::field("cors", format!("The preflight was refused: {reason}."));
    Ok(ServiceResponse::new(request, answer.error_response()))
}
