//! Liveness, readiness and metrics on MAILER_ADDR.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use actix_web::{HttpResponse, web};
use diesel_async::RunQueryDsl;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::{
    db::{self, Pool},
    deliveries,
};

pub struct HealthState {
    pub pool: Pool,
    /// How long a readiness check waits for the database.
    pub database_deadline: std::time::Duration,
    pub consumer_connected: Arc<AtomicBool>,
    pub metrics: PrometheusHandle,
}

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready when the database answers and the consumer holds a broker connection: without either,
/// this replica cannot take mail off the queue.
async fn readyz(state: web::Data<HealthState>) -> HttpResponse {
    let database = db::within(&state.pool, state.database_deadline, async |conn| {
        diesel::sql_query("SELECT 1").execute(conn).await
    })
    .await
    .is_ok();
    let broker = AtomicBool::load(&state.consumer_connected, Ordering::Relaxed);
    let up = |ok: bool| if ok { "up" } else { "down" };
    let body = json!({
        "status": if database && broker { "ready" } else { "unavailable" },
        "database": up(database),
        "broker": up(broker),
    });
    if database && broker {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics(state: web::Data<HealthState>) -> HttpResponse {
    if let Ok(backlog) = db::within(&state.pool, state.database_deadline, async |conn| {
        deliveries::backlog(conn).await
    })
    .await
    {
        metrics::gauge!("mailer_backlog").set(backlog as f64);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
