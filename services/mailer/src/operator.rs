//! What `mailer failed list|show|retry` does, as library functions (the CLI prints their results).

use anyhow::{Context, anyhow};
use diesel_async::AsyncPgConnection;
use secrecy::ExposeSecret;

use crate::{
    config::Settings,
    deliveries,
    failed_sends::{self, FailedSend},
};
use telemetry::mask_address;

/// Which failed sends to resend.
#[derive(Debug, Clone, Copy)]
pub enum Selection {
    One(i64),
    /// Every unresolved row.
    All,
}

/// The result of resending one failed send.
#[derive(Debug, Clone)]
pub struct RetryOutcome {
    pub id: i64,
    pub recipient: Option<String>,
    /// `Ok`: handed back to the sender, which sends it shortly. `Err`: why it was not.
    pub result: Result<(), String>,
}

async fn connect(settings: &Settings) -> anyhow::Result<AsyncPgConnection> {
    database::connect(settings.database_url.expose_secret(), &settings.database_limits)
        .await
        .context("cannot reach the mailer database; check MAILER_DATABASE_URL (and run `mailer migrate` once)")
}

pub async fn list(settings: &Settings, include_resolved: bool) -> anyhow::Result<Vec<FailedSend>> {
    let mut conn = connect(settings).await?;
    Ok(failed_sends::list(&mut conn, include_resolved).await?)
}

pub async fn show(settings: &Settings, id: i64) -> anyhow::Result<FailedSend> {
    let mut conn = connect(settings).await?;
    failed_sends::find(&mut conn, id)
        .await?
        .ok_or_else(|| anyhow!("no failed send has id {id}; `mailer failed list` shows them"))
}

/// Hands failed mail back to the sender. Each row is one conditional state change: its delivery
/// goes back to pending with a fresh schedule (attempts reset) and the row is resolved, its
/// history noting the retry `by` whom, only if both are still failed and unresolved. A running
/// mailer then sends it under its lease, with the current templates and SMTP settings and the
/// usual backoff; if it fails for good again, the same row reopens with the new cause. So two
/// operators retrying the same row at once send one mail: one of them gets `Ok`, the other an
/// error saying it was already retried.
///
/// `Selection::All` goes through every unresolved row and reports each one's result; an error on one
/// row (even a lost database connection) does not stop the others.
pub async fn retry(
    settings: &Settings,
    selection: Selection,
    by: &str,
) -> anyhow::Result<Vec<RetryOutcome>> {
    let mut conn = connect(settings).await?;
    let rows = match selection {
        Selection::One(id) => {
            let row = failed_sends::find(&mut conn, id).await?.ok_or_else(|| {
                anyhow!("no failed send has id {id}; `mailer failed list` shows them")
            })?;
            if row.resolved_at.is_some() {
                return Err(anyhow!(
                    "failed send {id} is already resolved; nothing to do"
                ));
            }
            vec![row]
        }
        Selection::All => failed_sends::list(&mut conn, false).await?,
    };
    let mut outcomes = Vec::with_capacity(rows.len());
    for row in rows {
        let result = match retry_one(&mut conn, &row, by).await {
            Ok(result) => result,
            Err(e) => {
                // The connection may be gone: the next row gets a new one.
                if let Ok(fresh) = connect(settings).await {
                    conn = fresh;
                }
                Err(format!("{e:#}"))
            }
        };
        let recipient = row.recipient.as_deref().map(mask_address);
        match &result {
            Ok(()) => tracing::info!(
                failed_send = row.id,
                recipient,
                "failed send handed back to the sender"
            ),
            Err(error) => {
                tracing::warn!(failed_send = row.id, recipient, %error, "failed send not retried")
            }
        }
        outcomes.push(RetryOutcome {
            id: row.id,
            recipient: row.recipient,
            result,
        });
    }
    Ok(outcomes)
}

/// `Ok(Ok(()))`: handed back. `Ok(Err(why))`: this row cannot be retried now. `Err`: database.
async fn retry_one(
    conn: &mut AsyncPgConnection,
    row: &FailedSend,
    by: &str,
) -> anyhow::Result<Result<(), String>> {
    if row.event_id.is_none() {
        return Ok(Err(format!(
            "the message was not a readable event; it cannot be resent. Fix the producer, or inspect the {} queue",
            crate::consumer::DEAD_LETTER_QUEUE
        )));
    }
    Ok(match deliveries::requeue_failed_send(conn, row.id, by).await? {
        Some(_) => {
            metrics::counter!("mailer_operator_retries_total").increment(1);
            Ok(())
        }
        None => Err(
            "already retried (by another operator, or resolved meanwhile), or it has no failed delivery to resend"
                .to_string(),
        ),
    })
}
