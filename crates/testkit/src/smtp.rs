//! A scriptable SMTP server on loopback, for tests of code that sends mail.
//!
//! It speaks enough SMTP for lettre and most clients (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT),
//! keeps every accepted message with its envelope, can be told to answer the next DATA or a given
//! recipient with any reply (`451 ...`, `550 ...`), can answer the next DATA late (a slow server),
//! can be stopped and resumed on the same port to simulate an outage, and can behave like common
//! production servers: one mail per connection, an idle timeout, greylisting.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::{Notify, mpsc},
};
use tokio_util::sync::CancellationToken;

/// A message the server accepted.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// The envelope sender (MAIL FROM), without angle brackets.
    pub mail_from: String,
    /// The envelope recipients (RCPT TO), without angle brackets.
    pub recipients: Vec<String>,
    /// The message as transmitted, dot-unstuffed, without the final `.` line.
    pub data: Vec<u8>,
}

#[derive(Default)]
struct Script {
    messages: Vec<ReceivedMail>,
    /// Replies to use instead of `250` for the next DATA terminations, in order.
    data_replies: VecDeque<String>,
    /// Replies to RCPT TO for specific (lower-cased) addresses, every time.
    recipient_replies: HashMap<String, String>,
    /// How many DATA transactions were answered (accepted or not).
    data_attempts: usize,
    /// How many messages were received in full (before any reply, late or not).
    data_received: usize,
    /// Delays before the reply to the next DATA terminations, in order.
    data_reply_delays: VecDeque<Duration>,
    /// Late replies the client was no longer there to read (the message was discarded).
    abandoned: usize,
    /// Where accepted messages' recipients go instead of `messages`, once [`SmtpServer::stream`]
    /// was called: a load sink keeps nothing.
    stream: Option<mpsc::UnboundedSender<(SystemTime, Vec<String>)>>,
    /// Closes a connection right after this many accepted mails (a provider's limit).
    mails_per_connection: Option<usize>,
    /// Answers the next MAIL after this many accepted mails with `421` and closes the connection.
    refuse_after_mails: Option<usize>,
    /// Says `421` and closes a connection that sent nothing for this long (a load balancer's or
    /// Postfix's idle timeout).
    idle_timeout: Option<Duration>,
    /// Greylisting: a recipient not seen since [`SmtpServer::greylist`] gets `451` once.
    greylist: Option<HashSet<String>>,
    /// Connections accepted so far.
    connections: usize,
}

struct Shared {
    script: Mutex<Script>,
    received: Notify,
}

pub struct SmtpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    running: Mutex<Option<CancellationToken>>,
}

impl SmtpServer {
    /// Starts a server on `127.0.0.1` and an ephemeral port. Needs a Tokio runtime.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a server on `addr`. Needs a Tokio runtime.
    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the test SMTP server to {addr}"))?;
        let server = Self {
            addr: listener.local_addr()?,
            shared: Arc::new(Shared {
                script: Mutex::new(Script::default()),
                received: Notify::new(),
            }),
            running: Mutex::new(None),
        };
        server.serve(listener);
        Ok(server)
    }

    /// `smtp://127.0.0.1:<port>` (plain SMTP, no TLS, no authentication).
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers the next `n` messages with `reply` (such as `451 4.3.0 Try again later`) at the end
    /// of DATA, instead of accepting them.
    pub fn reply_to_next_data(&self, n: usize, reply: &str) {
        let mut script = self.shared.script.lock().unwrap();
        script
            .data_replies
            .extend(std::iter::repeat_n(reply.to_string(), n));
    }

    /// Answers the next message's end of DATA only after `delay` (then as scripted, else `250`).
    /// If the client hung up meanwhile, the message is discarded as a real server does when the
    /// connection drops before it replied, and counted in [`Self::abandoned`].
    pub fn delay_next_data_reply(&self, delay: Duration) {
        self.shared
            .script
            .lock()
            .unwrap()
            .data_reply_delays
            .push_back(delay);
    }

    /// From now on, closes each connection right after it delivered `n` mails, without a word (as
    /// providers that take one mail per connection do).
    pub fn close_after_mails(&self, n: usize) {
        self.shared.script.lock().unwrap().mails_per_connection = Some(n);
    }

    /// From now on, answers the MAIL that follows `n` mails on a connection with `421 4.7.0` and
    /// closes it (as providers that limit mails per connection do, when the client tries one more).
    pub fn refuse_after_mails(&self, n: usize) {
        self.shared.script.lock().unwrap().refuse_after_mails = Some(n);
    }

    /// From now on, answers `421 4.4.2` and closes a connection idle for `idle`.
    pub fn close_when_idle(&self, idle: Duration) {
        self.shared.script.lock().unwrap().idle_timeout = Some(idle);
    }

    /// Starts greylisting afresh: from now on, the first RCPT TO for each recipient is answered
    /// `451 4.7.1` (RFC 6647), later ones are accepted.
    pub fn greylist(&self) {
        self.shared.script.lock().unwrap().greylist = Some(HashSet::new());
    }

    /// How many connections the server accepted.
    pub fn connections(&self) -> usize {
        self.shared.script.lock().unwrap().connections
    }

    /// How many messages arrived in full (whatever happened to them afterwards).
    pub fn data_received(&self) -> usize {
        self.shared.script.lock().unwrap().data_received
    }

    /// How many late replies found the client gone.
    pub fn abandoned(&self) -> usize {
        self.shared.script.lock().unwrap().abandoned
    }

    /// Answers every RCPT TO for `address` with `reply` (such as `550 5.1.1 No such user`).
    pub fn reply_to_recipient(&self, address: &str, reply: &str) {
        let mut script = self.shared.script.lock().unwrap();
        script
            .recipient_replies
            .insert(address.to_lowercase(), reply.to_string());
    }

    /// From now on, hands each accepted message's recipients to the returned receiver, with the
    /// time it was accepted, instead of keeping the message: a sink for load runs, whose memory
    /// stays flat however much mail arrives. [`Self::messages`] stays as it was.
    pub fn stream(&self) -> mpsc::UnboundedReceiver<(SystemTime, Vec<String>)> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.shared.script.lock().unwrap().stream = Some(sender);
        receiver
    }

    /// Every message accepted so far.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.shared.script.lock().unwrap().messages.clone()
    }

    /// How many messages reached the end of DATA, whatever the reply.
    pub fn data_attempts(&self) -> usize {
        self.shared.script.lock().unwrap().data_attempts
    }

    /// Waits until at least `n` messages were accepted, or fails after `timeout`.
    pub async fn wait_for_messages(
        &self,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<ReceivedMail>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.received.notified();
            let messages = self.messages();
            if messages.len() >= n {
                return Ok(messages);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!(
                    "the SMTP server received {} message(s) within {timeout:?}; expected {n}",
                    self.messages().len()
                );
            }
        }
    }

    /// Stops listening and drops every open connection, as a crashed server would.
    pub fn stop(&self) {
        if let Some(token) = self.running.lock().unwrap().take() {
            token.cancel();
        }
    }

    /// Listens again on the same port after [`Self::stop`].
    pub async fn resume(&self) -> anyhow::Result<()> {
        self.stop();
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e).context("re-binding the test SMTP server"),
            }
        };
        self.serve(listener);
        Ok(())
    }

    fn serve(&self, listener: TcpListener) {
        let token = CancellationToken::new();
        *self.running.lock().unwrap() = Some(token.clone());
        let shared = self.shared.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = token.cancelled() => return,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let (shared, token) = (shared.clone(), token.clone());
                        tokio::spawn(async move {
                            tokio::select! {
                                () = token.cancelled() => {}
                                _ = session(stream, &shared) => {}
                            }
                        });
                    }
                }
            }
        });
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One SMTP session. Returns when the client quits or disconnects.
async fn session(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    // Replies go out at once, so the sink never adds Nagle delays of its own to a measurement.
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    write.write_all(b"220 testkit ESMTP ready\r\n").await?;
    let (mails_per_connection, refuse_after_mails, idle_timeout) = {
        let mut script = shared.script.lock().unwrap();
        script.connections += 1;
        (
            script.mails_per_connection,
            script.refuse_after_mails,
            script.idle_timeout,
        )
    };
    let mut accepted = 0;
    let mut mail_from: Option<String> = None;
    let mut recipients: Vec<String> = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line);
        let read = match idle_timeout {
            Some(idle) => match tokio::time::timeout(idle, read).await {
                Ok(read) => read,
                Err(_) => {
                    write
                        .write_all(b"421 4.4.2 testkit Error: timeout exceeded\r\n")
                        .await?;
                    return Ok(());
                }
            },
            None => read.await,
        };
        if read? == 0 {
            return Ok(());
        }
        let command = String::from_utf8_lossy(&line).trim_end().to_string();
        let verb = command
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply: String = match verb.as_str() {
            "EHLO" => "250-testkit greets you\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 OK".into(),
            "HELO" => "250 testkit".into(),
            "MAIL" if refuse_after_mails.is_some_and(|n| accepted >= n) => {
                write
                    .write_all(b"421 4.7.0 testkit Too many messages on this connection\r\n")
                    .await?;
                return Ok(());
            }
            "MAIL" => match path_argument(&command, "FROM:") {
                Some(from) => {
                    mail_from = Some(from);
                    recipients.clear();
                    "250 2.1.0 OK".into()
                }
                None => "501 5.5.4 Syntax: MAIL FROM:<address>".into(),
            },
            "RCPT" => match (mail_from.is_some(), path_argument(&command, "TO:")) {
                (false, _) => "503 5.5.1 MAIL first".into(),
                (true, None) => "501 5.5.4 Syntax: RCPT TO:<address>".into(),
                (true, Some(to)) => {
                    let scripted = {
                        let mut script = shared.script.lock().unwrap();
                        let key = to.to_lowercase();
                        let greylisted = script
                            .greylist
                            .as_mut()
                            .is_some_and(|seen| seen.insert(key.clone()));
                        if greylisted {
                            Some("451 4.7.1 Greylisted, please try again later".to_string())
                        } else {
                            script.recipient_replies.get(&key).cloned()
                        }
                    };
                    match scripted {
                        Some(reply) => reply,
                        None => {
                            recipients.push(to);
                            "250 2.1.5 OK".into()
                        }
                    }
                }
            },
            "DATA" if recipients.is_empty() => "503 5.5.1 RCPT first".into(),
            "DATA" => {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let data = read_data(&mut reader).await?;
                let delay = {
                    let mut script = shared.script.lock().unwrap();
                    script.data_received += 1;
                    script.data_reply_delays.pop_front()
                };
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                    if client_gone(&mut reader).await {
                        shared.script.lock().unwrap().abandoned += 1;
                        return Ok(());
                    }
                }
                let mail = ReceivedMail {
                    mail_from: mail_from.take().unwrap_or_default(),
                    recipients: std::mem::take(&mut recipients),
                    data,
                };
                let mut script = shared.script.lock().unwrap();
                script.data_attempts += 1;
                match script.data_replies.pop_front() {
                    Some(reply) => reply,
                    None => {
                        match &script.stream {
                            Some(stream) => {
                                let _ = stream.send((SystemTime::now(), mail.recipients));
                            }
                            None => script.messages.push(mail),
                        }
                        drop(script);
                        shared.received.notify_waiters();
                        accepted += 1;
                        "250 2.0.0 OK: queued".into()
                    }
                }
            }
            "RSET" => {
                mail_from = None;
                recipients.clear();
                "250 2.0.0 OK".into()
            }
            "NOOP" => "250 2.0.0 OK".into(),
            "QUIT" => {
                write.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => "502 5.5.2 Command not recognized".into(),
        };
        write.write_all(format!("{reply}\r\n").as_bytes()).await?;
        if mails_per_connection.is_some_and(|n| accepted >= n) {
            return Ok(());
        }
    }
}

/// Whether the client gave up on the transaction while its reply was pending: it closed its side,
/// or sent QUIT (lettre does on an error). Checked without waiting for a command that may never
/// come. Another command (a client that reuses the connection as if the reply had come) is not
/// giving up: the server answers it in turn, as a real one would.
async fn client_gone(reader: &mut (impl AsyncBufReadExt + Unpin)) -> bool {
    match tokio::time::timeout(Duration::from_millis(20), reader.fill_buf()).await {
        Ok(Ok(buffered)) => {
            buffered.is_empty()
                || buffered
                    .get(..4)
                    .is_some_and(|verb| verb.eq_ignore_ascii_case(b"QUIT"))
        }
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

/// The address in `MAIL FROM:<a@b> ...` / `RCPT TO:<a@b>`.
fn path_argument(command: &str, keyword: &str) -> Option<String> {
    let rest = command.get(5..)?.trim_start();
    if !rest.to_ascii_uppercase().starts_with(keyword) {
        return None;
    }
    let rest = rest[keyword.len()..].trim_start();
    let path = rest.split_whitespace().next()?;
    Some(
        path.trim_start_matches('<')
            .trim_end_matches('>')
            .to_string(),
    )
}

async fn read_data(reader: &mut (impl AsyncBufReadExt + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(data);
        }
        let unstuffed = if line.starts_with(b"..") {
            &line[1..]
        } else {
            &line[..]
        };
        data.extend_from_slice(unstuffed);
    }
}
