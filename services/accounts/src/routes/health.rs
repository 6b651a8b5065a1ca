//! Liveness, readiness, metrics and the JWKS.

use actix_web::{HttpResponse, http::header, web};
use diesel_async::RunQueryDsl;
use serde_json::json;

use crate::state::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready when the database answers. A broker outage does not count: the outbox holds events.
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

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    metrics::gauge!("accounts_hashing_queue_depth").set(state.hasher.queue_depth() as f64);
    let status = state.pool.status();
    metrics::gauge!("accounts_db_pool_connections").set(status.size as f64);
    metrics::gauge!("accounts_db_pool_available").set(status.available as f64);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(state.tokens.keys().jwks())
}
