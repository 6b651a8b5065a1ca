//! Composing MIME messages and sending them over SMTP through our own connection pool.
//!
//! lettre's pool returns a connection to the pool when a send is cancelled mid-command (a timeout
//! around `send`), so the next mail reads the previous mail's late reply. This pool hands a
//! connection back only after a send that completed; a timeout, a cancel or any error drops it.
//! Connections are opened on sockets we open ourselves with `TCP_NODELAY` (lettre 0.11.23 sets no
//! TCP_NODELAY, which caps a connection at about 22 mails/s) and handed to lettre with
//! `AsyncSmtpConnection::connect_with_transport`. The socket also enforces the per-reply timeout:
//! a read that waits longer than `MAILER_SMTP_TIMEOUT_SECS` fails, whatever the command.
//!
//! A pooled connection is a claim about the peer, not a fact: servers close connections after one
//! mail or after a few idle seconds. Before reuse, the pool looks at the socket without waiting (a
//! pending EOF, or a `421` the server sent before closing, means it is gone; a TLS connection
//! opened by lettre is asked `NOOP` after an idle second instead). A server may still close it just
//! as we start: a reused connection that fails before the final dot of DATA, in a way that says the
//! server is gone (EOF, a reset, no reply, `421`), is reported as [`Failure::Stale`], and the
//! sender tries once more on a fresh connection without charging the mail an attempt. After the
//! dot the mail may already be delivered (RFC 5321 §6.1), so such a failure is never retried here.

use std::{
    fmt, io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use lettre::{
    Address, Message,
    address::Envelope,
    message::{Mailbox, MultiPart},
    transport::smtp::{
        authentication::{Credentials, Mechanism},
        client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters},
        commands::{Data, Mail, Rcpt},
        extension::{ClientId, Extension, MailBodyParameter, MailParameter},
    },
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::Semaphore,
    time::Sleep,
};
use url::Url;
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

/// How a send on one connection failed.
#[derive(Debug, Clone)]
pub enum Failure {
    /// A connection from the pool turned out closed before the final dot of DATA (EOF, a reset,
    /// no reply, `421`): the server has not taken the mail, and a fresh connection may.
    Stale(SendError),
    /// Anything else; the mail's own outcome.
    Send(SendError),
}

impl Failure {
    pub fn into_error(self) -> SendError {
        match self {
            Failure::Stale(e) | Failure::Send(e) => e,
        }
    }
}

/// Which connection a send may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// An idle one from the pool, else a new one.
    Pooled,
    /// A new one (after a pooled one turned out stale).
    Fresh,
}

/// How long an idle pooled connection may wait before it is closed rather than reused (servers
/// drop idle clients after a few minutes; RFC 5321 §4.5.3.2 asks them to wait at least 5).
const MAX_IDLE: Duration = Duration::from_secs(30);

/// A connection without a socket we can look at (implicit TLS, opened by lettre) idle for longer
/// than this is asked `NOOP` before reuse.
const NOOP_AFTER_IDLE: Duration = Duration::from_secs(1);

/// How the connection is secured, from the URL.
#[derive(Clone)]
enum Tls {
    None,
    /// `smtp://…?tls=required`: STARTTLS or fail.
    Required(TlsParameters),
    /// `smtp://…?tls=opportunistic`: STARTTLS when offered.
    Opportunistic(TlsParameters),
    /// `smtps://`: TLS from the first byte.
    Wrapper(TlsParameters),
}

/// Where and how to connect, parsed from `MAILER_SMTP_URL`.
#[derive(Clone)]
struct Server {
    host: String,
    port: u16,
    tls: Tls,
    hello: ClientId,
    credentials: Option<Credentials>,
}

impl Server {
    /// `smtp://host:port` (plain), `smtp://…?tls=required|opportunistic` (STARTTLS), `smtps://`
    /// (TLS), with optional `user:password@` and a path naming the EHLO host; lettre's URL rules.
    fn parse(url: &str) -> anyhow::Result<Self> {
        let url = Url::parse(url).map_err(|e| anyhow::anyhow!("not a URL: {e}"))?;
        let host = url
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("no host"))?
            .trim_matches(['[', ']'])
            .to_string();
        let tls_param = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.to_string());
        let params =
            || TlsParameters::new(host.clone()).map_err(|e| anyhow::anyhow!("TLS parameters: {e}"));
        let (tls, default_port) = match (url.scheme(), tls_param.as_deref()) {
            ("smtp", None) => (Tls::None, 25),
            ("smtp", Some("required")) => (Tls::Required(params()?), 587),
            ("smtp", Some("opportunistic")) => (Tls::Opportunistic(params()?), 587),
            ("smtps", _) => (Tls::Wrapper(params()?), 465),
            (scheme, tls) => anyhow::bail!("unknown scheme {scheme:?} or tls parameter {tls:?}"),
        };
        let hello = match url.path().trim_matches('/') {
            "" => ClientId::default(),
            name => ClientId::Domain(name.to_string()),
        };
        // Percent-decoding only, as lettre does: `+`, `&` and `=` are themselves in a password.
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let credentials = url
            .password()
            .map(|password| Credentials::new(decode(url.username()), decode(password)));
        Ok(Self {
            port: url.port().unwrap_or(default_port),
            host,
            tls,
            hello,
            credentials,
        })
    }
}

/// A connection and, when we opened its socket ourselves, a second handle on that socket to look
/// at it without lettre (a peek never consumes what lettre will read).
struct Open {
    connection: AsyncSmtpConnection,
    probe: Option<std::net::TcpStream>,
}

impl Open {
    /// Whether the server has already closed the connection or said it will (`421` and a close,
    /// the usual goodbye of an idle timeout): anything waiting on an idle connection means it
    /// cannot be used for a new transaction. Looks without waiting.
    fn server_left(&self) -> bool {
        let Some(probe) = &self.probe else {
            return false;
        };
        let mut byte = [0u8; 1];
        match probe.peek(&mut byte) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            // EOF, unsolicited bytes, or an error (a reset).
            _ => true,
        }
    }
}

struct Idle {
    open: Open,
    since: Instant,
}

struct Pool {
    server: Server,
    /// The longest wait for any one SMTP reply (and for the TCP connect).
    reply_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
    /// One permit per connection in use: bounds the connections the pool opens.
    in_use: Semaphore,
}

/// The SMTP side of the mailer: one connection pool shared by every send.
#[derive(Clone)]
pub struct SmtpSender {
    pool: Arc<Pool>,
    from: Mailbox,
}

impl SmtpSender {
    /// Parses the `smtp://` / `smtps://` URL (TLS mode and credentials come from it). Connects
    /// lazily, so a down SMTP server does not stop startup. `reply_timeout` bounds every wait for
    /// a reply (and the TCP connect); `pool_size` the connections open at once.
    pub fn new(
        url: &str,
        from: Mailbox,
        pool_size: usize,
        reply_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let server = Server::parse(url)
            .map_err(|e| anyhow::anyhow!("MAILER_SMTP_URL is not usable: {e}"))?;
        Ok(Self {
            pool: Arc::new(Pool {
                server,
                reply_timeout,
                idle: Mutex::new(Vec::new()),
                in_use: Semaphore::new(pool_size.clamp(1, Semaphore::MAX_PERMITS)),
            }),
            from,
        })
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

    /// Sends one message on `connection`, recording its latency. Cancel-safe: if this future is
    /// dropped mid-command, so is the connection.
    pub async fn send(&self, message: &Message, connection: Connection) -> Result<(), Failure> {
        let started = Instant::now();
        let result = self.send_on_pool(message, connection).await;
        metrics::histogram!("mailer_send_duration_seconds").record(started.elapsed().as_secs_f64());
        result
    }

    async fn send_on_pool(&self, message: &Message, connection: Connection) -> Result<(), Failure> {
        let _in_use =
            self.pool.in_use.acquire().await.map_err(|_| {
                Failure::Send(SendError::Transient("the SMTP pool is closed".into()))
            })?;
        let idle = match connection {
            Connection::Pooled => self.take_idle().await,
            Connection::Fresh => None,
        };
        let reused = idle.is_some();
        let mut open = match idle {
            Some(open) => open,
            None => self.connect().await.map_err(Failure::Send)?,
        };
        match transmit(
            &mut open.connection,
            message.envelope(),
            &message.formatted(),
        )
        .await
        {
            Ok(()) => {
                self.give_back(open);
                Ok(())
            }
            Err(error) => {
                // It is never reused. A server that answered is told goodbye; one that is gone is not waited for.
                metrics::counter!("mailer_smtp_connections_dropped_total").increment(1);
                let failure = match error {
                    Stage::Unsendable(why) => Failure::Send(SendError::Permanent(why.to_string())),
                    Stage::BeforeDot(e) if reused && server_gone(&e) => {
                        metrics::counter!("mailer_smtp_stale_connections_total", "noticed" => "on use")
                            .increment(1);
                        Failure::Stale(classify(e))
                    }
                    Stage::BeforeDot(e) | Stage::AfterDot(e) => {
                        if e.status().is_some() {
                            open.connection.abort().await;
                        }
                        Failure::Send(classify(e))
                    }
                };
                Err(failure)
            }
        }
    }

    /// An idle connection the server has not closed, if any: the others are dropped.
    async fn take_idle(&self) -> Option<Open> {
        loop {
            let Idle { mut open, since } = {
                let mut idle = self.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
                idle.pop()?
            };
            if since.elapsed() >= MAX_IDLE || open.connection.has_broken() {
                continue;
            }
            let alive = if open.probe.is_some() {
                !open.server_left()
            } else if since.elapsed() >= NOOP_AFTER_IDLE {
                tokio::time::timeout(self.pool.reply_timeout, open.connection.test_connected())
                    .await
                    .unwrap_or(false)
            } else {
                true
            };
            if alive {
                return Some(open);
            }
            metrics::counter!("mailer_smtp_stale_connections_total", "noticed" => "before use")
                .increment(1);
        }
    }

    fn give_back(&self, open: Open) {
        if open.connection.has_broken() {
            return;
        }
        self.pool
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Idle {
                open,
                since: Instant::now(),
            });
    }

    async fn connect(&self) -> Result<Open, SendError> {
        let server = &self.pool.server;
        let timeout = self.pool.reply_timeout;
        let mut probe = None;
        let mut connection = match &server.tls {
            // Implicit TLS needs the handshake before the greeting, which only lettre's own
            // connect does; its socket has no TCP_NODELAY, and its replies are bounded by the
            // send deadline rather than per reply.
            Tls::Wrapper(params) => AsyncSmtpConnection::connect_tokio1(
                (server.host.as_str(), server.port),
                Some(timeout),
                &server.hello,
                Some(params.clone()),
                None,
            )
            .await
            .map_err(classify)?,
            tls => {
                let socket = tokio::time::timeout(
                    timeout,
                    TcpStream::connect((server.host.as_str(), server.port)),
                )
                .await
                .map_err(|_| {
                    SendError::Transient(format!(
                        "connecting to the SMTP server took longer than {} s",
                        timeout.as_secs_f32()
                    ))
                })?
                .map_err(|e| SendError::Transient(format!("connecting to the SMTP server: {e}")))?;
                socket
                    .set_nodelay(true)
                    .map_err(|e| SendError::Transient(format!("setting TCP_NODELAY: {e}")))?;
                let (socket, handle) = with_probe(socket)
                    .map_err(|e| SendError::Transient(format!("preparing the socket: {e}")))?;
                probe = Some(handle);
                let stream = ReplyTimeout::new(socket, timeout);
                let mut connection =
                    AsyncSmtpConnection::connect_with_transport(Box::new(stream), &server.hello)
                        .await
                        .map_err(classify)?;
                match tls {
                    Tls::Required(params) => connection
                        .starttls(params.clone(), &server.hello)
                        .await
                        .map_err(classify)?,
                    Tls::Opportunistic(params) if connection.can_starttls() => connection
                        .starttls(params.clone(), &server.hello)
                        .await
                        .map_err(classify)?,
                    _ => {}
                }
                connection
            }
        };
        if let Some(credentials) = &server.credentials {
            connection
                .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(classify)?;
        }
        Ok(Open { connection, probe })
    }
}

/// `socket` and a second handle on it, for [`Open::server_left`]. Both are non-blocking (the
/// flag belongs to the socket, which Tokio already set so).
fn with_probe(socket: TcpStream) -> io::Result<(TcpStream, std::net::TcpStream)> {
    let socket = socket.into_std()?;
    let probe = socket.try_clone()?;
    Ok((TcpStream::from_std(socket)?, probe))
}

/// Where in a transaction a send failed.
enum Stage {
    /// This server cannot take this mail as it is; nothing was sent.
    Unsendable(&'static str),
    /// Before the final dot of DATA: the server has not taken the mail.
    BeforeDot(lettre::transport::smtp::Error),
    /// While sending the content or waiting for its reply: the server may have taken it.
    AfterDot(lettre::transport::smtp::Error),
}

/// One mail transaction (what lettre's `send` does, in stages we can tell apart): MAIL, RCPT for
/// each recipient, DATA, then the content and its final dot.
async fn transmit(
    connection: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    email: &[u8],
) -> Result<(), Stage> {
    let mut options = Vec::new();
    let non_ascii = |address: &Address| !AsRef::<str>::as_ref(address).is_ascii();
    if envelope.from().is_some_and(non_ascii) || envelope.to().iter().any(non_ascii) {
        if !connection
            .server_info()
            .supports_feature(Extension::SmtpUtfEight)
        {
            return Err(Stage::Unsendable(
                "an address is not ASCII and the SMTP server does not support SMTPUTF8",
            ));
        }
        options.push(MailParameter::SmtpUtfEight);
    }
    if !email.is_ascii() {
        if !connection
            .server_info()
            .supports_feature(Extension::EightBitMime)
        {
            return Err(Stage::Unsendable(
                "the message is not ASCII and the SMTP server does not support 8BITMIME",
            ));
        }
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    connection
        .command(Mail::new(envelope.from().cloned(), options))
        .await
        .map_err(Stage::BeforeDot)?;
    for to in envelope.to() {
        connection
            .command(Rcpt::new(to.clone(), Vec::new()))
            .await
            .map_err(Stage::BeforeDot)?;
    }
    connection.command(Data).await.map_err(Stage::BeforeDot)?;
    connection.message(email).await.map_err(Stage::AfterDot)?;
    Ok(())
}

/// Whether an error before the final dot says the server is gone rather than answering about
/// this mail: no reply at all (EOF, a reset, a timeout) or `421` (closing the channel).
fn server_gone(error: &lettre::transport::smtp::Error) -> bool {
    match error.status() {
        Some(code) => u16::from(code) == 421,
        None => !error.is_client(),
    }
}

fn classify(error: lettre::transport::smtp::Error) -> SendError {
    // lettre's message already carries its cause.
    let text = error.to_string();
    if error.is_permanent() {
        SendError::Permanent(text)
    } else {
        SendError::Transient(text)
    }
}

/// A socket whose reads fail with `TimedOut` when no byte arrives for `timeout` while one is
/// awaited, and whose writes fail the same way when the peer stops reading. lettre only reads
/// while it waits for a reply, so this is the per-reply timeout, for every command.
struct ReplyTimeout {
    socket: TcpStream,
    timeout: Duration,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
}

impl ReplyTimeout {
    fn new(socket: TcpStream, timeout: Duration) -> Self {
        Self {
            socket,
            timeout,
            read_timer: None,
            write_timer: None,
        }
    }
}

/// Polls `timer` (started on the first `Pending`) after an operation returned `Pending`.
fn expired(timer: &mut Option<Pin<Box<Sleep>>>, timeout: Duration, cx: &mut Context<'_>) -> bool {
    let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
    if sleep.as_mut().poll(cx).is_ready() {
        *timer = None;
        true
    } else {
        false
    }
}

fn timed_out(timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no SMTP reply within {} s", timeout.as_secs_f32()),
    )
}

impl AsyncRead for ReplyTimeout {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.socket).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.read_timer = None;
                Poll::Ready(result)
            }
            Poll::Pending if expired(&mut this.read_timer, this.timeout, cx) => {
                Poll::Ready(Err(timed_out(this.timeout)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for ReplyTimeout {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.socket).poll_write(cx, buf) {
            Poll::Ready(result) => {
                this.write_timer = None;
                Poll::Ready(result)
            }
            Poll::Pending if expired(&mut this.write_timer, this.timeout, cx) => {
                Poll::Ready(Err(timed_out(this.timeout)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_shutdown(cx)
    }
}

impl fmt::Debug for ReplyTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyTimeout")
            .field("socket", &self.socket)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl AsyncTokioStream for ReplyTimeout {
    fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.socket.peer_addr()
    }
}

#[cfg(test)]
mod tests {
    use lettre::transport::smtp::authentication::Credentials;

    use super::Server;

    #[test]
    fn credentials_in_the_url_are_percent_decoded_and_nothing_else() {
        let server = Server::parse("smtp://us%40er:p%2Bw+rd&x=1%25@mail.example:2525").unwrap();
        assert_eq!(
            server.credentials,
            Some(Credentials::new("us@er".into(), "p+w+rd&x=1%".into()))
        );
        assert_eq!((server.host.as_str(), server.port), ("mail.example", 2525));
    }
}
