use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::{
    config::Settings, db::Pool, hashing::PasswordHasher, pages::Pages, tokens::TokenIssuer,
};

/// What every handler can reach. Built in `startup`, one per HTTP worker thread, and read-only.
pub struct AppState {
    pub settings: Settings,
    /// This worker's connections. Each connection's I/O task runs on the runtime that opened it, so
    /// a pool per worker keeps every query on its own thread (no cross-thread wake-up per query).
    pub pool: Pool,
    pub hasher: PasswordHasher,
    pub tokens: Arc<TokenIssuer>,
    pub pages: Arc<Pages>,
    pub metrics: PrometheusHandle,
}
