//! A message body holds links with tokens. lapin logs every returned (unroutable) message, body
//! included, at WARN, and every frame at TRACE; the services' log filter must keep that out of the
//! logs even with `RUST_LOG=trace`, and
//! the publisher must report returns by message id only. Its own test binary: it installs the
//! process-wide subscriber, because lapin logs from its own I/O thread.

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use amqp::{PublishError, Publisher};
use tracing_subscriber::{fmt::MakeWriter, prelude::*};

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
async fn nothing_of_a_returned_body_reaches_the_logs() {
    let captured = Captured::default();
    tracing_subscriber::registry()
        // Every level: the guard alone must keep the bodies out.
        .with(tracing_subscriber::EnvFilter::new("trace"))
        .with(telemetry::secret_guard())
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(captured.clone()),
        )
        .init();
    let vhost = testkit::TestVhost::create().unwrap();
    let connection = amqp::connect(vhost.url(), "returned-bodies-test")
        .await
        .unwrap();
    let publisher = Publisher::open(&connection).await.unwrap();
    let secret = format!("reset-token-{}", uuid::Uuid::new_v4().simple());
    let body = format!(r#"{{"reset_url": "http://localhost/reset?token={secret}"}}"#);
    let id = uuid::Uuid::new_v4().to_string();

    // Nothing is bound on a fresh vhost: the broker returns it.
    let results = publisher
        .publish_batch(&[("password-reset-requested", &id, body.as_bytes())])
        .await;

    assert!(
        matches!(results.as_slice(), [Err(PublishError::Unroutable(_))]),
        "{results:?}"
    );
    let _ = connection.close(200, "done".into()).await;
    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).to_string();
    // The capture works: the publisher's own report of the return is there.
    assert!(
        logs.contains("returned unroutable messages"),
        "nothing captured: {logs}"
    );
    assert!(
        !logs.contains(&secret),
        "a returned body was logged: {logs}"
    );
    // lapin prints the body as a list of bytes.
    let as_bytes = format!("{:?}", &secret.as_bytes()[..12]);
    assert!(
        !logs.contains(as_bytes.trim_matches(['[', ']'])),
        "a returned body was logged: {logs}"
    );
    assert!(!logs.contains("lapin::returned_messages"), "{logs}");
    assert!(
        !logs.contains("reset_url"),
        "a returned body was logged: {logs}"
    );
}
