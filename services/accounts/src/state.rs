use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::{
    config::Settings,
    db::Pool,
    hashing::PasswordHasher,
    http::pages::Pages,
    signin::social::providers::Providers,
    throttle::{ClientRate, LoginGuard},
    tokens::{SealingKey, TokenIssuer},
};

/// What every handler can reach. Built in `startup`, one per HTTP worker thread, and read-only.
pub struct AppState {
    pub settings: Settings,
    /// This worker's connections. Each connection's I/O task runs on the runtime that opened it, so
    /// a pool per worker keeps every query on its own thread (no cross-thread wake-up per query).
    pub pool: Pool,
    pub hasher: PasswordHasher,
    /// Shared by the workers: it remembers the lockouts Postgres reported.
    pub login_guard: Arc<LoginGuard>,
    /// Every worker's view of each client's buckets.
    pub client_rate: Arc<ClientRate>,
    pub tokens: Arc<TokenIssuer>,
    /// Seals what is kept to be read back: a family's current refresh token, for its grace window.
    pub sealing: Arc<SealingKey>,
    pub pages: Arc<Pages>,
    /// The social login providers, discovered in the background.
    pub social: Arc<Providers>,
    /// The WebAuthn relying party; `None` when passkeys are off.
    pub webauthn: Option<Arc<webauthn_rs::Webauthn>>,
    /// This worker's client for talking to providers (no redirects followed).
    pub http: reqwest::Client,
    pub metrics: PrometheusHandle,
}
