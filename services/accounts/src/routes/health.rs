//! Liveness, readiness, metrics and the JWKS.

use actix_web::{HttpResponse, http::header, web};
use diesel_async::RunQueryDsl;
use serde_json::json;

use super::schemas::ErrorBody;
use crate::state::AppState;

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready when the database answers. A broker outage does not count: the outbox holds events.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "The database answers"), (status = 503, description = "The database is unreachable", body = ErrorBody)))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let database = match state.pool.get().await {
        Ok(mut conn) => diesel::sql_query("SELECT 1")
            .execute(&mut conn)
            .await
            .is_ok(),
        Err(_) => false,
    };
    if database {
        HttpResponse::Ok().json(json!({ "status": "ready", "database": "up" }))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({
            "status": "unavailable",
            "database": "down",
            "errors": { "server": ["The database is unreachable."] },
        }))
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    metrics::gauge!("accounts_hashing_queue_depth").set(state.hasher.queue_depth() as f64);
    let status = state.pool.status();
    metrics::gauge!("accounts_db_pool_connections").set(status.size as f64);
    metrics::gauge!("accounts_db_pool_available").set(status.available as f64);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "operations", responses((status = 200, description = "The public keys that verify access tokens")))]
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(state.tokens.keys().jwks())
}
