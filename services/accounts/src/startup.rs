//! Builds the application from settings: database, keys, hashing budget, HTTP server and relay.

use std::{
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use actix_web::{App, HttpServer, dev::Server, middleware::from_fn, web};
use anyhow::Context;
use secrecy::ExposeSecret;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Settings,
    db,
    hashing::PasswordHasher,
    http::client::TrustedProxies,
    http::error::{json_error, query_error},
    http::pages::Pages,
    http::policy::{self, MAX_BODY_BYTES},
    http::telemetry,
    outbox::relay::{self, OutboxRelay},
    routes,
    routes::openapi,
    signin::social::providers::{self, Providers},
    state::AppState,
    throttle::{ClientRate, LoginGuard},
    tokens::{KeyError, SealingKey, SealingKeyError, TokenIssuer},
    users,
};

/// Database connections for HTTP requests, split between the workers.
const POOL_SIZE: usize = 16;
/// Connections for the work off the request path: one for each relay lane, one for audit pruning
/// and startup's own queries, one spare.
const BACKGROUND_POOL_SIZE: usize = relay::LANES + 2;

pub struct Application {
    port: u16,
    server: Server,
    pool: db::Pool,
    /// Already running: it started as soon as the database was ready.
    relay: JoinHandle<()>,
    /// Stops the relay and the background tasks.
    shutdown: CancellationToken,
    audit_retention: Duration,
    refresh_grace: Duration,
    client_rate: Arc<ClientRate>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        if settings.jwt_key_is_default && !settings.development_key_allowed() {
            // A generated key on a public deployment would differ per replica and vanish with
            // the container: refuse before touching anything.
            return Err(KeyError::NotConfigured {
                public_url: settings.public_url.to_string(),
            }
            .into());
        }
        if settings.encryption_key_is_default && !settings.development_encryption_key_allowed() {
            return Err(SealingKeyError::NotConfigured {
                public_url: settings.public_url.to_string(),
            }
            .into());
        }
        // bcrypt is measured (a quarter of a second at cost 12) while the database is prepared.
        let hasher = tokio::spawn(PasswordHasher::new(
            settings.bcrypt_cost,
            settings.hash_concurrency,
            settings.hash_queue,
        ));
        let database_url = settings.database_url.expose_secret().to_string();
        db::migrate(&database_url).await?;
        let pool = db::pool(&database_url, BACKGROUND_POOL_SIZE)?;
        let mut conn = pool.get().await.context("connecting to the database")?;
        users::normalize_identifiers(&mut conn)
            .await
            .context("normalizing stored emails and usernames")?;
        drop(conn);
        // Events waiting in the outbox (a restart after an outage) need neither keys nor bcrypt:
        // the relay starts now. If the rest of the startup fails, the guard stops it.
        let shutdown = CancellationToken::new();
        let relay = tokio::spawn(
            OutboxRelay {
                pool: pool.clone(),
                database_url: settings.database_url.clone(),
                amqp_url: settings.amqp_url.clone(),
                poll_interval: settings.outbox_poll_interval,
                retention: settings.outbox_retention,
            }
            .run(shutdown.clone()),
        );
        let stop_relay = shutdown.clone().drop_guard();

        let sealing = Arc::new(
            SealingKey::load(
                &settings.encryption_key_file,
                settings.development_encryption_key_allowed(),
            )
            .context("loading the encryption key (ACCOUNTS_ENCRYPTION_KEY_FILE)")?,
        );
        let mut conn = pool.get().await.context("connecting to the database")?;
        crate::tokens::check_against_database(&mut conn, &sealing, &settings.encryption_key_file)
            .await?;
        drop(conn);
        let hasher = hasher.await?.context("measuring bcrypt")?;

        let listener = TcpListener::bind(settings.addr).with_context(|| {
            format!(
                "cannot listen on {} (ACCOUNTS_ADDR); is another process using it?",
                settings.addr
            )
        })?;
        let port = listener.local_addr()?.port();
        let audit_retention = settings.audit_retention;
        let refresh_grace = settings.refresh_grace;
        // One pool per HTTP worker, the connections split between them (at least 2 each).
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per_worker = (POOL_SIZE / workers).max(2);
        let worker_pools = (0..workers)
            .map(|_| db::pool(&database_url, per_worker))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let next_pool = Arc::new(AtomicUsize::new(0));
        let tokens = Arc::new(TokenIssuer::load(&settings)?);
        let pages = Arc::new(Pages::new());
        let social = Arc::new(Providers::new(&settings.social, &settings.public_url));
        let webauthn = crate::signin::mfa::passkeys::relying_party(&settings)?.map(Arc::new);
        tokio::spawn(social.clone().keep_discovered(shutdown.clone()));
        let metrics = telemetry::metrics_handle();
        let login_guard = Arc::new(LoginGuard::new(settings.lockout));
        let client_rate = Arc::new(ClientRate::default());
        let server_client_rate = client_rate.clone();
        let trusted_proxies = web::Data::new(TrustedProxies(settings.trusted_proxies.clone()));
        let server = HttpServer::new(move || {
            // Runs once on each worker thread as it starts.
            let n = next_pool.fetch_add(1, Ordering::Relaxed) % worker_pools.len();
            let pool = worker_pools[n].clone();
            let state = web::Data::new(AppState {
                settings: settings.clone(),
                pool,
                hasher: hasher.clone(),
                login_guard: login_guard.clone(),
                client_rate: server_client_rate.clone(),
                tokens: tokens.clone(),
                sealing: sealing.clone(),
                pages: pages.clone(),
                social: social.clone(),
                webauthn: webauthn.clone(),
                http: providers::http_client(),
                metrics: metrics.clone(),
            });
            App::new()
                .wrap(from_fn(policy::body_limit))
                .wrap(policy::cors(&settings.cors_origins))
                .wrap(from_fn(policy::preflight_refusals))
                .wrap(from_fn(policy::security_headers))
                .wrap(from_fn(telemetry::observe))
                .app_data(state)
                .app_data(trusted_proxies.clone())
                .app_data(
                    web::JsonConfig::default()
                        .limit(MAX_BODY_BYTES)
                        .error_handler(json_error),
                )
                .app_data(web::PayloadConfig::default().limit(MAX_BODY_BYTES))
                .app_data(web::QueryConfig::default().error_handler(query_error))
                // A path segment that does not parse (a passkey id that is no uuid) names
                // nothing: 404 in the envelope.
                .app_data(
                    web::PathConfig::default()
                        .error_handler(|_, _| crate::http::error::ApiError::NotFound.into()),
                )
                .configure(routes::configure)
                .configure(openapi::configure)
                .default_service(web::to(routes::not_found))
        })
        .workers(workers)
        .shutdown_timeout(10)
        .listen(listener)?
        .run();
        stop_relay.disarm();
        Ok(Self {
            port,
            server,
            pool,
            relay,
            shutdown,
            audit_retention,
            refresh_grace,
            client_rate,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the server stops (SIGINT/SIGTERM stop it gracefully), then lets the relay
    /// finish its batch.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let retention = self.audit_retention;
        tokio::spawn(db::every(
            self.pool.clone(),
            Duration::from_secs(3600),
            "audit retention",
            self.shutdown.clone(),
            async move |conn| crate::audit::prune(conn, retention).await,
        ));
        // A family that is never refreshed again must not keep its token readable for two weeks.
        let grace = chrono::Duration::from_std(self.refresh_grace).unwrap_or(chrono::Duration::MAX);
        tokio::spawn(db::every(
            self.pool,
            Duration::from_secs(5),
            "sealed refresh tokens",
            self.shutdown.clone(),
            async move |conn| crate::sessions::forget_sealed(conn, grace).await,
        ));
        tokio::spawn(forget_full_buckets(self.client_rate, self.shutdown.clone()));
        let served = self.server.await;
        self.shutdown.cancel();
        if tokio::time::timeout(Duration::from_secs(15), self.relay)
            .await
            .is_err()
        {
            tracing::warn!("the outbox relay did not stop in time");
        }
        served.context("the HTTP server failed")
    }
}

/// Drops the clients' buckets that have refilled, every minute until `shutdown`, so a flood from
/// many addresses leaves no memory behind.
async fn forget_full_buckets(client_rate: Arc<ClientRate>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => client_rate.forget_full(),
        }
    }
}
