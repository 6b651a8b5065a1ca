//! Builds the mailer from settings (database, templates, SMTP, consumer, sender, health server)
//! and runs it until a signal or [`Application::shutdown_token`] stops it.

use std::{
    net::TcpListener,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use actix_web::{App, HttpServer, dev::Server, web};
use anyhow::Context;
use secrecy::ExposeSecret;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    admin::{self, AdminState},
    config::Settings,
    consumer::Consumer,
    db,
    routes::{self, HealthState},
    sender::{DeliveryWorker, SendContext},
    smtp::SmtpSender,
    templates::Templates,
};

pub struct Application {
    port: u16,
    server: Server,
    consumer: Consumer,
    worker: DeliveryWorker,
    shutdown: CancellationToken,
    drain_timeout: Duration,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let database_url = settings.database_url.expose_secret().to_string();
        db::migrate(&database_url).await?;
        // Sends settle concurrently; the consumer, health checks and claims need a few more.
        let limits = settings.database_limits;
        let database_deadline = limits.response_deadline();
        let pool = db::pool_with(&database_url, settings.concurrency + 4, &limits)?;
        let templates = Templates::load(settings.templates_dir.as_deref(), &settings.product_name)
            .context("loading templates (check MAILER_TEMPLATES_DIR)")?;
        let smtp = SmtpSender::new(
            settings.smtp_url.expose_secret(),
            settings.from.clone(),
            settings.concurrency,
            settings.smtp_timeout,
        )?;
        let connected = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Notify::new());
        let consumer = Consumer {
            pool: pool.clone(),
            amqp_url: settings.amqp_url.clone(),
            prefetch: settings.prefetch,
            connected: connected.clone(),
            wake: wake.clone(),
            database_deadline,
        };
        let worker = DeliveryWorker {
            context: SendContext {
                pool: pool.clone(),
                templates: Arc::new(templates),
                smtp,
                max_attempts: settings.max_attempts,
                retry_base: settings.retry_base,
                retry_cap: settings.retry_cap,
                send_deadline: settings.send_deadline(),
                database_deadline,
            },
            database_url: settings.database_url.clone(),
            database_limits: settings.database_limits,
            concurrency: settings.concurrency,
            poll_interval: settings.poll_interval,
            wake,
        };
        let listener = TcpListener::bind(settings.addr).with_context(|| {
            format!(
                "cannot listen on {} (MAILER_ADDR); is another process using it?",
                settings.addr
            )
        })?;
        let port = listener.local_addr()?.port();
        let admin = web::Data::new(AdminState {
            pool: pool.clone(),
            verifier: admin::verifier(&settings)?,
            settings: settings.clone(),
        });
        let state = web::Data::new(HealthState {
            pool,
            database_deadline,
            consumer_connected: connected,
            metrics: telemetry::metrics_handle(),
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(admin.clone())
                .configure(routes::configure)
                .configure(admin::configure)
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(5)
        .listen(listener)?
        .run();
        Ok(Self {
            port,
            server,
            consumer,
            worker,
            shutdown: CancellationToken::new(),
            drain_timeout: settings.drain_timeout(),
        })
    }

    /// The port of the health/metrics server (useful when MAILER_ADDR asks for port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cancelling this token stops the application as SIGTERM would.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Consumes and sends until SIGTERM, Ctrl-C or the shutdown token. Then it stops consuming,
    /// lets the mail in flight finish and settle, and closes.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let shutdown = self.shutdown.clone();
        let handle = self.server.handle();
        let mut server = tokio::spawn(self.server);
        let consumer = tokio::spawn(self.consumer.run(shutdown.clone()));
        let worker = tokio::spawn(self.worker.run(shutdown.clone()));
        let served = tokio::select! {
            () = shutdown.cancelled() => None,
            () = terminate_signal() => {
                tracing::info!("stopping on a signal");
                None
            }
            served = &mut server => Some(served),
        };
        shutdown.cancel();
        let drained = async {
            let _ = consumer.await;
            let _ = worker.await;
        };
        if tokio::time::timeout(self.drain_timeout, drained)
            .await
            .is_err()
        {
            tracing::warn!(
                "mail in flight did not finish in time; its leases will expire and it will be retried"
            );
        }
        let served = match served {
            Some(served) => served,
            None => {
                handle.stop(true).await;
                server.await
            }
        };
        served
            .context("the health server task panicked")?
            .context("the health server failed")
    }
}

async fn terminate_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
