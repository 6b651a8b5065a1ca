//! What the mailer logs about mail a server refuses or defers: never the recipient's full address,
//! though SMTP servers repeat it in their replies, nor the mail's links, though content filters
//! quote the URL they blocked. Its own test binary: it
//! installs the process-wide subscriber, at debug, before the mailer starts.

#[path = "mailer/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use tracing_subscriber::{EnvFilter, fmt::MakeWriter, prelude::*};

use helpers::{confirmation_url, eventually, registered, spawn_app, unique_email};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn a_reply_that_repeats_the_recipient_never_puts_the_address_in_the_logs() {
    let captured = Captured::default();
    tracing_subscriber::registry()
        .with(EnvFilter::new("debug"))
        .with(telemetry::secret_guard())
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(captured.clone()),
        )
        .init();
    let mut app = spawn_app().await;
    let (rejected, deferred) = (unique_email(), unique_email());
    app.smtp.reply_to_recipient(
        &rejected,
        &format!("550 5.1.1 <{rejected}>: Recipient address rejected"),
    );
    app.smtp.reply_to_recipient(
        &deferred,
        &format!("451 4.2.0 {deferred} is busy, try later"),
    );
    let (refused, retried) = (registered(&rejected, None), registered(&deferred, None));
    let blocked = registered(&unique_email(), None);
    // The only mail that reaches DATA (the others are refused at RCPT).
    app.smtp.reply_to_next_data(
        1,
        &format!(
            "554 5.7.1 Message rejected: blocked URL {}",
            confirmation_url(&blocked)
        ),
    );
    app.publish(&refused).await;
    app.publish(&retried).await;
    app.publish(&blocked).await;

    eventually("the refusal recorded and the deferral retried", || async {
        let failed = app
            .count(&format!(
                "SELECT count(*) AS n FROM failed_sends WHERE event_id = '{}' AND error LIKE '%{rejected}%'",
                refused.id
            ))
            .await;
        let retried = app
            .count(&format!(
                "SELECT count(*) AS n FROM deliveries WHERE event_id = '{}' AND attempts >= 2",
                retried.id
            ))
            .await;
        let filtered = app
            .count(&format!(
                "SELECT count(*) AS n FROM failed_sends WHERE event_id = '{}' AND error LIKE '%blocked URL%'",
                blocked.id
            ))
            .await;
        (failed == 1 && retried == 1 && filtered == 1).then_some(())
    })
    .await;

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).to_string();
    // The capture works, and the failures were logged.
    assert!(logs.contains("recording it in failed_sends"), "{logs}");
    assert!(logs.contains("will retry"), "{logs}");
    for secret in [
        rejected.as_str(),
        deferred.as_str(),
        confirmation_url(&refused),
        confirmation_url(&retried),
        confirmation_url(&blocked),
    ] {
        assert!(!logs.contains(secret), "{secret} was logged: {logs}");
    }
}
