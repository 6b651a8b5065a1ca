//! A dedicated connection that `LISTEN`s on a channel and wakes a worker on every notification,
//! reconnecting with backoff. Workers also poll, so a lost notification only costs latency.

use std::{sync::Arc, time::Duration};

use backon::{BackoffBuilder, ExponentialBuilder};
use diesel_async::RunQueryDsl;
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Runs until `shutdown`. `channel` must be a plain identifier (it is interpolated into `LISTEN`).
pub async fn listen(
    database_url: String,
    limits: crate::ConnectionLimits,
    channel: &'static str,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    debug_assert!(
        channel
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    );
    // Reconnect delays from 200 ms doubling to 30 s (backon's jitter adds up to as much again).
    let policy = ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(15))
        .with_jitter()
        .without_max_times();
    let mut backoff = policy.build();
    // Keepalive and the TCP user timeout (the service's own) notice a dead path under an idle
    // listener.
    while !shutdown.is_cancelled() {
        match crate::connect(&database_url, &limits).await {
            Ok(mut conn) => match tokio::time::timeout(
                limits.response_deadline(),
                diesel::sql_query(format!("LISTEN {channel}")).execute(&mut conn),
            )
            .await
            {
                Err(_) => tracing::warn!(channel, "LISTEN got no answer"),
                Ok(Err(e)) => tracing::warn!(error = %e, channel, "LISTEN failed"),
                Ok(Ok(_)) => {
                    backoff = policy.build();
                    // Anything committed while nobody listened is picked up by this wake.
                    wake.notify_one();
                    let mut notifications = std::pin::pin!(conn.notifications_stream());
                    loop {
                        tokio::select! {
                            next = notifications.next() => match next {
                                Some(Ok(_)) => wake.notify_one(),
                                Some(Err(e)) => {
                                    tracing::warn!(error = %e, channel, "the listener lost its connection");
                                    break;
                                }
                                None => break,
                            },
                            () = shutdown.cancelled() => return,
                        }
                    }
                }
            },
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), channel, "the listener cannot connect; polling meanwhile")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(30))) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
