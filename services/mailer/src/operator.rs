//! What `mailer failed list|show|retry` does, as library functions (the CLI prints their results).

use std::sync::Arc;

use anyhow::{Context, anyhow};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use events::Envelope;
use secrecy::ExposeSecret;

use crate::{
    config::Settings,
    deliveries,
    failed_sends::{self, FailedSend},
    sender::send_envelope,
    smtp::SmtpSender,
    templates::Templates,
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
    /// `Err` holds the new error, which is also recorded on the row.
    pub result: Result<(), String>,
}

async fn connect(settings: &Settings) -> anyhow::Result<AsyncPgConnection> {
    AsyncPgConnection::establish(settings.database_url.expose_secret())
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

/// Resends failed mail now, with the current templates and SMTP settings. A success marks the row
/// resolved (and its delivery sent); a failure records the new error and attempt.
pub async fn retry(settings: &Settings, selection: Selection) -> anyhow::Result<Vec<RetryOutcome>> {
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
    let templates = Arc::new(
        Templates::load(settings.templates_dir.as_deref(), &settings.product_name)
            .context("loading templates (check MAILER_TEMPLATES_DIR)")?,
    );
    let smtp = SmtpSender::new(
        settings.smtp_url.expose_secret(),
        settings.from.clone(),
        settings.concurrency.min(4),
        settings.smtp_timeout,
    )?;
    let mut outcomes = Vec::with_capacity(rows.len());
    for row in rows {
        outcomes.push(retry_one(&mut conn, &templates, &smtp, row).await?);
    }
    Ok(outcomes)
}

async fn retry_one(
    conn: &mut AsyncPgConnection,
    templates: &Templates,
    smtp: &SmtpSender,
    row: FailedSend,
) -> anyhow::Result<RetryOutcome> {
    let attempts = row.attempts + 1;
    let sent = match Envelope::from_json(row.payload.to_string().as_bytes()) {
        Ok(envelope) => send_envelope(templates, smtp, &envelope)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(format!(
            "the payload is not a readable event ({e}); it cannot be resent. Fix the producer, or inspect the {} queue",
            crate::consumer::DEAD_LETTER_QUEUE
        )),
    };
    let recipient = row.recipient.as_deref().map(mask_address);
    match &sent {
        Ok(message_id) => {
            let (id, event_id, message_id) = (row.id, row.event_id, message_id.clone());
            conn.transaction::<_, diesel::result::Error, _>(async move |conn| {
                failed_sends::mark_resolved(conn, id, attempts).await?;
                if let Some(event_id) = event_id {
                    deliveries::mark_sent(conn, event_id, attempts, &message_id).await?;
                }
                Ok(())
            })
            .await?;
            metrics::counter!("mailer_sent_total", "type" => row.event_type.clone().unwrap_or_default()).increment(1);
            tracing::info!(failed_send = row.id, recipient, "failed send resent");
        }
        Err(error) => {
            failed_sends::record_failure(conn, row.id, attempts, error).await?;
            tracing::warn!(failed_send = row.id, recipient, %error, "resend failed");
        }
    }
    Ok(RetryOutcome {
        id: row.id,
        recipient: row.recipient,
        result: sent.map(drop),
    })
}
