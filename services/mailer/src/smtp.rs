//! Composing MIME messages and sending them over SMTP with a pooled lettre transport.

use std::time::{Duration, Instant};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
    transport::smtp::PoolConfig,
};
use uuid::Uuid;

use crate::templates::RenderedMail;

/// Why a mail did not go out, split by what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// Worth another attempt later: connection refused or lost, timeouts, SMTP 4xx.
    #[error("{0}")]
    Transient(String),
    /// Will fail the same way again: SMTP 5xx, a bad address, a template error, an unreadable payload.
    #[error("{0}")]
    Permanent(String),
}

impl SendError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, SendError::Permanent(_))
    }
}

/// The SMTP side of the mailer: one pooled transport shared by every send.
#[derive(Clone)]
pub struct SmtpSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpSender {
    /// Builds the transport from an `smtp://` / `smtps://` URL (TLS mode and credentials come from
    /// the URL). Connects lazily, so a down SMTP server does not stop startup.
    pub fn new(
        url: &str,
        from: Mailbox,
        pool_size: usize,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| anyhow::anyhow!("MAILER_SMTP_URL is not usable: {e}"))?
            .timeout(Some(timeout))
            .pool_config(PoolConfig::new().max_size(pool_size.clamp(1, u32::MAX as usize) as u32))
            .build();
        Ok(Self { transport, from })
    }

    /// A multipart/alternative message whose Message-ID derives from the event id, so that a
    /// rare duplicate (see the README's crash window) is recognisable downstream.
    pub fn compose(
        &self,
        event_id: Uuid,
        recipient: &str,
        mail: &RenderedMail,
    ) -> Result<Message, SendError> {
        let to: Mailbox = recipient.parse().map_err(|e| {
            SendError::Permanent(format!("the recipient address is not valid: {e}"))
        })?;
        let domain = self.from.email.domain().to_string();
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .message_id(Some(format!("<{event_id}@{domain}>")))
            .multipart(MultiPart::alternative_plain_html(
                mail.text.clone(),
                mail.html.clone(),
            ))
            .map_err(|e| SendError::Permanent(format!("building the message: {e}")))
    }

    /// Sends one message, recording its latency.
    pub async fn send(&self, message: Message) -> Result<(), SendError> {
        let started = Instant::now();
        let result = self.transport.send(message).await;
        metrics::histogram!("mailer_send_duration_seconds").record(started.elapsed().as_secs_f64());
        result.map(drop).map_err(|e| {
            let text = error_chain(&e);
            if e.is_permanent() {
                SendError::Permanent(text)
            } else {
                SendError::Transient(text)
            }
        })
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
