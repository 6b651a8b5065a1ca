//! `cargo run --release -p testkit --example smtp-sink [PORT]`: the testkit SMTP server as a
//! standalone sink for load runs (`make bench`).
//! It accepts every message on `127.0.0.1:PORT` (default 2525) and prints one line per recipient as
//! each message is accepted: the Unix time in seconds, a space, the lower-cased address. It keeps
//! nothing, so its memory stays flat. "ready" is the first line, once it listens.

use std::{io::Write, net::SocketAddr, time::UNIX_EPOCH};

use anyhow::Context;
use testkit::SmtpServer;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(port) => port
            .parse()
            .with_context(|| format!("usage: smtp-sink [PORT]; {port:?} is not a port"))?,
        None => 2525,
    };
    let server = SmtpServer::start_on(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let mut arrivals = server.stream();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(out, "ready")?;
    out.flush()?;
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            received = arrivals.recv_many(&mut batch, 1024) => {
                if received == 0 {
                    return Ok(());
                }
                for (accepted, recipients) in batch.drain(..) {
                    let at = accepted.duration_since(UNIX_EPOCH)?.as_secs_f64();
                    for recipient in recipients {
                        writeln!(out, "{at:.6} {}", recipient.to_lowercase())?;
                    }
                }
                out.flush()?;
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
