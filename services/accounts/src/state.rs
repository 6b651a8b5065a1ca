use metrics_exporter_prometheus::PrometheusHandle;

use crate::{
    config::Settings, db::Pool, hashing::PasswordHasher, pages::Pages, tokens::TokenIssuer,
};

/// What every handler can reach. Built once in `startup` and shared read-only.
pub struct AppState {
    pub settings: Settings,
    pub pool: Pool,
    pub hasher: PasswordHasher,
    pub tokens: TokenIssuer,
    pub pages: Pages,
    pub metrics: PrometheusHandle,
}
