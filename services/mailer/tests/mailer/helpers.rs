//! A mailer running against a fresh database, a fresh vhost and a scriptable SMTP server.

use std::{collections::HashMap, future::Future, time::Duration};

use amqp::Publisher;
use chrono::{TimeZone, Utc};
use diesel_async::AsyncPgConnection;
use events::{Envelope, Event, PasswordResetRequested, UserRegistered};
use mailer::{config::Settings, startup::Application};
use testkit::{SmtpServer, TestDatabase, TestVhost};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(20);

struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    port: u16,
}

pub struct TestApp {
    running: Option<Running>,
    publisher: Option<(lapin::Connection, Publisher)>,
    pub settings: Settings,
    pub smtp: SmtpServer,
    pub vhost: TestVhost,
    pub db: TestDatabase,
}

/// Starts a mailer with fast retries (100 ms base, 5 attempts) unless `overrides` say otherwise.
pub async fn spawn_with(overrides: &[(&str, &str)]) -> TestApp {
    let mut app = configure(overrides).await;
    app.start().await;
    app
}

/// The fixtures and settings, without a running mailer.
pub async fn configure(overrides: &[(&str, &str)]) -> TestApp {
    telemetry::init_logging();
    let db = TestDatabase::new("mailer");
    let vhost = TestVhost::create().expect("creating a RabbitMQ vhost");
    let smtp = SmtpServer::start().await.expect("starting the SMTP server");
    let mut vars: HashMap<String, String> = [
        ("MAILER_DATABASE_URL", db.url().to_string()),
        ("AMQP_URL", vhost.url().to_string()),
        ("MAILER_SMTP_URL", smtp.url()),
        ("MAILER_ADDR", "127.0.0.1:0".to_string()),
        ("MAILER_FROM", "Accounts <noreply@example.test>".to_string()),
        ("MAILER_RETRY_BASE_MS", "100".to_string()),
        ("MAILER_MAX_ATTEMPTS", "5".to_string()),
        ("MAILER_POLL_MS", "500".to_string()),
        ("MAILER_SMTP_TIMEOUT_SECS", "5".to_string()),
        ("MAILER_CONCURRENCY", "4".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in overrides {
        vars.insert(k.to_string(), v.to_string());
    }
    let settings = Settings::from_lookup(|name| vars.get(name).cloned()).expect("test settings");
    TestApp {
        running: None,
        publisher: None,
        settings,
        smtp,
        vhost,
        db,
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_with(&[]).await
}

impl TestApp {
    /// Builds and runs the mailer, and waits until it is ready (its queue exists).
    pub async fn start(&mut self) {
        self.start_without_waiting().await;
        eventually("the mailer to be ready", || async {
            (self.get("/readyz").await.0 == 200).then_some(())
        })
        .await;
    }

    /// Builds and runs the mailer without waiting for readiness.
    pub async fn start_without_waiting(&mut self) {
        assert!(self.running.is_none(), "the mailer is already running");
        let app = Application::build(self.settings.clone())
            .await
            .expect("building the mailer");
        let port = app.port();
        let shutdown = app.shutdown_token();
        let task = tokio::spawn(app.run_until_stopped());
        self.running = Some(Running {
            shutdown,
            task,
            port,
        });
    }

    /// Stops the mailer gracefully, as SIGTERM would, and waits until it has.
    pub async fn stop(&mut self) {
        let running = self.running.take().expect("the mailer is running");
        running.shutdown.cancel();
        tokio::time::timeout(WAIT, running.task)
            .await
            .expect("the mailer stops in time")
            .expect("the mailer task does not panic")
            .expect("the mailer stops cleanly");
    }

    /// `http://127.0.0.1:<port>` of the running mailer's HTTP server.
    pub fn base_url(&self) -> String {
        let port = self.running.as_ref().expect("the mailer is running").port;
        format!("http://127.0.0.1:{port}")
    }

    /// GET on the health server: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let port = self.running.as_ref().expect("the mailer is running").port;
        match reqwest::get(format!("http://127.0.0.1:{port}{path}")).await {
            Ok(response) => (
                response.status().as_u16(),
                response.text().await.unwrap_or_default(),
            ),
            Err(_) => (0, String::new()),
        }
    }

    pub async fn publish(&mut self, envelope: &Envelope) {
        self.publisher()
            .await
            .publish(envelope)
            .await
            .expect("publishing an event");
    }

    /// Publishes any body with routing key `kind`, for poison-message tests.
    pub async fn publish_raw(&mut self, kind: &str, body: &[u8]) {
        self.publish_raw_as(kind, Uuid::new_v4(), body).await;
    }

    /// Publishes any body with routing key `kind` and message id `id`.
    pub async fn publish_raw_as(&mut self, kind: &str, id: Uuid, body: &[u8]) {
        let id = id.to_string();
        let results = self
            .publisher()
            .await
            .publish_batch(&[(kind, &id, body)])
            .await;
        for result in results {
            result.expect("publishing a raw message");
        }
    }

    /// Forgets the test's broker connection, so the next publish opens a new one.
    pub fn reconnect_publisher(&mut self) {
        self.publisher = None;
    }

    async fn publisher(&mut self) -> &Publisher {
        if self.publisher.is_none() {
            let connection = amqp::connect(self.vhost.url(), "mailer-tests")
                .await
                .expect("connecting to RabbitMQ");
            let publisher = Publisher::open(&connection)
                .await
                .expect("opening a publisher");
            self.publisher = Some((connection, publisher));
        }
        &self.publisher.as_ref().unwrap().1
    }

    /// Runs the `mailer` binary (the operator's CLI) on this mailer's database: its status, and its
    /// standard output and error together.
    pub async fn cli(&self, args: &[&str]) -> (bool, String) {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_mailer"))
            .args(args)
            .env("MAILER_DATABASE_URL", self.db.url())
            .env("RUST_LOG", "info")
            .output()
            .await
            .expect("running the mailer CLI");
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        (output.status.success(), text)
    }

    pub async fn conn(&self) -> AsyncPgConnection {
        self.db
            .connect()
            .await
            .expect("connecting to the test database")
    }

    pub async fn count(&self, sql: &str) -> i64 {
        testkit::count(&mut self.conn().await, sql)
            .await
            .expect("counting")
    }

    /// Messages currently in a queue of the test vhost.
    pub async fn queue_depth(&self, queue: &str) -> u32 {
        let connection = amqp::connect(self.vhost.url(), "mailer-tests-inspect")
            .await
            .expect("connecting to RabbitMQ");
        let channel = connection.create_channel().await.expect("a channel");
        let declared = channel
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("the queue exists");
        let _ = connection.close(200, "done".into()).await;
        declared.message_count()
    }
}

/// Polls `probe` every 50 ms until it returns `Some`, failing the test after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn unique_email() -> String {
    format!("user-{}@example.com", Uuid::new_v4().simple())
}

/// A `user-registered` event for `email`.
pub fn registered(email: &str, username: Option<&str>) -> Envelope {
    let token = Uuid::new_v4().simple();
    Envelope::new(Event::UserRegistered(UserRegistered {
        user_id: Uuid::new_v4(),
        email: email.to_string(),
        username: username.map(str::to_string),
        confirmation_url: Some(format!(
            "http://localhost:8080/api/users/confirm?token={token}"
        )),
        confirmation_expires_at: Some(Utc.with_ymd_and_hms(2026, 11, 24, 13, 0, 0).unwrap()),
        locale: "en".to_string(),
    }))
}

/// A `password-reset-requested` event for `email`, with a live-looking reset link.
pub fn password_reset(email: &str) -> Envelope {
    let token = Uuid::new_v4().simple();
    Envelope::new(Event::PasswordResetRequested(PasswordResetRequested {
        user_id: Uuid::new_v4(),
        email: email.to_string(),
        username: None,
        reset_url: format!("http://localhost:8080/account/reset-password?token={token}"),
        reset_expires_at: Utc.with_ymd_and_hms(2026, 11, 24, 13, 0, 0).unwrap(),
        locale: "en".to_string(),
    }))
}

/// The confirmation link of a `user-registered` envelope.
pub fn confirmation_url(envelope: &Envelope) -> &str {
    match &envelope.event {
        Event::UserRegistered(e) => e
            .confirmation_url
            .as_deref()
            .expect("a welcome with a link"),
        _ => panic!("not a user-registered event"),
    }
}
