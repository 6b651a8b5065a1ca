//! `cargo run --release -p testkit --example smtp-sink [PORT] [OPTIONS]`: the testkit SMTP server
//! as a standalone sink for load runs (`make bench`) and fault runs (`make chaos`). Options behave
//! like common production servers: `--mails-per-connection N` closes each connection after N
//! mails, `--idle-timeout-ms MS` says 421 and closes a connection idle that long, `--greylist`
//! answers each recipient's first RCPT with 451.
//! It accepts every message on `127.0.0.1:PORT` (default 2525) and prints one line per recipient as
//! each message is accepted: the Unix time in seconds, a space, the lower-cased address. It keeps
//! nothing, so its memory stays flat. "ready" is the first line, once it listens.

use std::{io::Write, net::SocketAddr, time::UNIX_EPOCH};

use anyhow::Context;
use testkit::SmtpServer;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    const USAGE: &str =
        "usage: smtp-sink [PORT] [--mails-per-connection N] [--idle-timeout-ms MS] [--greylist]";
    let mut args = std::env::args().skip(1).peekable();
    let port: u16 = match args.next_if(|arg| !arg.starts_with("--")) {
        Some(port) => port
            .parse()
            .with_context(|| format!("{USAGE}; {port:?} is not a port"))?,
        None => 2525,
    };
    let server = SmtpServer::start_on(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    while let Some(option) = args.next() {
        let mut number = || -> anyhow::Result<u64> {
            let value = args
                .next()
                .with_context(|| format!("{USAGE}; {option} needs a number"))?;
            value
                .parse()
                .with_context(|| format!("{USAGE}; {option} {value:?} is not a number"))
        };
        match option.as_str() {
            "--mails-per-connection" => server.close_after_mails(number()? as usize),
            "--idle-timeout-ms" => {
                server.close_when_idle(std::time::Duration::from_millis(number()?))
            }
            "--greylist" => server.greylist(),
            _ => anyhow::bail!("{USAGE}; unknown option {option}"),
        }
    }
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
