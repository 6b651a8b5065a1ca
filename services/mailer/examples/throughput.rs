//! Measures end-to-end throughput: events published to `accounts.events` until the mail arrives at a
//! local SMTP sink (testkit's server on loopback), through a full mailer (consumer, Postgres, sender).
//!
//! Needs the local Postgres and RabbitMQ (as the tests do). Run it in release mode:
//!
//! ```text
//! cargo run --release -p mailer --example throughput            # 2000 mails, concurrency 16
//! MAILS=5000 CONCURRENCY=32 cargo run --release -p mailer --example throughput
//! ```
//!
//! RSS is the whole process: the mailer plus the in-process sink and publisher, so it overstates
//! the mailer alone slightly.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use amqp::Publisher;
use chrono::Utc;
use events::{Envelope, Event, UserRegistered};
use mailer::{config::Settings, startup::Application};
use testkit::{SmtpServer, TestDatabase, TestVhost};
use uuid::Uuid;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `VmRSS` and `VmHWM` (peak) of this process, in MiB.
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mails = env_number("MAILS", 2000);
    let concurrency = env_number("CONCURRENCY", 16);

    let db = TestDatabase::new("mailer_bench");
    let vhost = TestVhost::create()?;
    let sink = SmtpServer::start().await?;
    let vars: HashMap<&str, String> = HashMap::from([
        ("MAILER_DATABASE_URL", db.url().to_string()),
        ("AMQP_URL", vhost.url().to_string()),
        ("MAILER_SMTP_URL", sink.url()),
        ("MAILER_ADDR", "127.0.0.1:0".to_string()),
        ("MAILER_CONCURRENCY", concurrency.to_string()),
        ("MAILER_PREFETCH", "256".to_string()),
    ]);
    let settings = Settings::from_lookup(|name| vars.get(name).cloned())?;
    let app = Application::build(settings).await?;
    let shutdown = app.shutdown_token();
    let running = tokio::spawn(app.run_until_stopped());

    let connection = amqp::connect(vhost.url(), "throughput").await?;
    let publisher = Publisher::open(&connection).await?;
    // Wait for the mailer to declare its queue: a mandatory publish is returned until then.
    let probe = envelope(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while publisher.publish(&probe).await.is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the mailer never declared its queue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sink.wait_for_messages(1, Duration::from_secs(20)).await?;
    let (idle_rss, _) = rss_mib();

    let started = Instant::now();
    let envelopes: Vec<Envelope> = (1..=mails).map(envelope).collect();
    for chunk in envelopes.chunks(500) {
        let prepared: Vec<(String, Vec<u8>)> = chunk
            .iter()
            .map(|e| (e.id.to_string(), e.to_json()))
            .collect();
        let messages: Vec<(&str, &str, &[u8])> = chunk
            .iter()
            .zip(&prepared)
            .map(|(e, (id, body))| (e.kind(), id.as_str(), body.as_slice()))
            .collect();
        for result in publisher.publish_batch(&messages).await {
            result?;
        }
    }
    let published = started.elapsed();
    sink.wait_for_messages(mails + 1, Duration::from_secs(600))
        .await?;
    let elapsed = started.elapsed();
    let (rss, peak) = rss_mib();

    println!(
        "{mails} mails, concurrency {concurrency}: {:.1} s ({:.0} mails/s); publishing took {:.1} s",
        elapsed.as_secs_f64(),
        mails as f64 / elapsed.as_secs_f64(),
        published.as_secs_f64(),
    );
    println!("RSS: {idle_rss:.0} MiB idle, {rss:.0} MiB after the run, peak {peak:.0} MiB");

    shutdown.cancel();
    running.await??;
    Ok(())
}

fn envelope(n: usize) -> Envelope {
    Envelope::new(Event::UserRegistered(UserRegistered {
        user_id: Uuid::new_v4(),
        email: format!("bench-{n}@example.com"),
        username: Some(format!("user{n}")),
        confirmation_url: Some(format!(
            "http://localhost:8080/api/users/confirm?token={}",
            Uuid::new_v4().simple()
        )),
        confirmation_expires_at: Some(Utc::now()),
        locale: "en".to_string(),
    }))
}
