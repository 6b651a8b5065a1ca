use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mailer::{
    config::Settings,
    db,
    failed_sends::FailedSend,
    operator::{self, Selection},
    startup::Application,
};
use secrecy::ExposeSecret;

/// The mailer service. Configuration comes from the environment (see README); `.env` is read
/// when present.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume events and send mail, with health and metrics on MAILER_ADDR (the default).
    Serve,
    /// Create the database if needed and apply pending migrations, then exit.
    Migrate,
    /// Inspect and resend mail that could not be sent.
    #[command(subcommand)]
    Failed(Failed),
}

#[derive(Subcommand)]
enum Failed {
    /// List unresolved failed sends.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Include rows already resolved by a resend.
        #[arg(long)]
        all: bool,
    },
    /// Show one failed send, with its payload.
    Show { id: i64 },
    /// Resend now; success marks the row resolved, failure records the new error.
    Retry {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Resend every unresolved failed send.
        #[arg(long)]
        all: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init_logging();
    let cli = Cli::parse();
    match run(cli.command.unwrap_or(Command::Serve)).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "mailer failed");
            eprintln!("mailer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_env()?;
    match command {
        Command::Serve => {
            let app = Application::build(settings).await?;
            tracing::info!(port = app.port(), "mailer is running");
            app.run_until_stopped().await?;
        }
        Command::Migrate => db::migrate(settings.database_url.expose_secret()).await?,
        Command::Failed(Failed::List { json, all }) => {
            let rows = operator::list(&settings, all).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print_table(&rows);
            }
        }
        Command::Failed(Failed::Show { id }) => {
            let row = operator::show(&settings, id).await?;
            println!("{}", serde_json::to_string_pretty(&row)?);
            // The body exactly as received (escaped: it may be binary), for unreadable messages.
            println!("body: {}", row.body.escape_ascii());
        }
        Command::Failed(Failed::Retry { id, all }) => {
            let selection = match (id, all) {
                (Some(id), false) => Selection::One(id),
                _ => Selection::All,
            };
            let outcomes = operator::retry(&settings, selection).await?;
            if outcomes.is_empty() {
                println!("nothing to retry");
            }
            let mut failed = 0;
            for outcome in &outcomes {
                let to = outcome.recipient.as_deref().unwrap_or("-");
                match &outcome.result {
                    Ok(()) => println!(
                        "{}: to {to}: queued; a running mailer sends it (a new failed send appears if it fails again)",
                        outcome.id
                    ),
                    Err(error) => {
                        failed += 1;
                        println!("{}: not retried: {error}", outcome.id);
                    }
                }
            }
            if failed > 0 {
                eprintln!(
                    "mailer: {failed} of {} failed sends were not retried (see above)",
                    outcomes.len()
                );
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(rows: &[FailedSend]) {
    if rows.is_empty() {
        println!("no unresolved failed sends");
        return;
    }
    println!(
        "{:>6}  {:<20}  {:<30}  {:<28}  {:>8}  error",
        "id", "created", "type", "recipient", "attempts"
    );
    for row in rows {
        let mut error = row.error.replace('\n', " ");
        if error.chars().count() > 80 {
            error = error.chars().take(77).collect::<String>() + "...";
        }
        println!(
            "{:>6}  {:<20}  {:<30}  {:<28}  {:>8}  {}",
            row.id,
            row.created_at.format("%Y-%m-%d %H:%M:%S"),
            row.event_type.as_deref().unwrap_or("-"),
            row.recipient.as_deref().unwrap_or("-"),
            row.attempts,
            error
        );
    }
}
