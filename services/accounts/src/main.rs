use std::process::ExitCode;

use accounts::{config::Settings, db, startup::Application, telemetry};
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;

/// The accounts service. Configuration comes from the environment (see README); `.env` is read
/// when present.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API and run the outbox relay (the default).
    Serve,
    /// Create the database if needed and apply pending migrations, then exit.
    Migrate,
    /// Deactivate an account: it can no longer log in, refresh or use its tokens.
    Deactivate { email: String },
    /// Reactivate a deactivated account.
    Activate { email: String },
}

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init_logging();
    let cli = Cli::parse();
    match run(cli.command.unwrap_or(Command::Serve)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "accounts failed");
            eprintln!("accounts: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    match command {
        Command::Serve => {
            let app = Application::build(settings).await?;
            tracing::info!(port = app.port(), "accounts is listening");
            app.run_until_stopped().await
        }
        Command::Migrate => db::migrate(settings.database_url.expose_secret()).await,
        Command::Deactivate { email } => set_active(&settings, &email, false).await,
        Command::Activate { email } => set_active(&settings, &email, true).await,
    }
}

async fn set_active(settings: &Settings, email: &str, active: bool) -> anyhow::Result<()> {
    use diesel_async::AsyncConnection;
    let mut conn =
        diesel_async::AsyncPgConnection::establish(settings.database_url.expose_secret()).await?;
    let email = accounts::domain::EmailAddress::parse(email)
        .map_err(|m| anyhow::anyhow!("{email}: {m}"))?;
    let Some(user) = accounts::users::find_by_email(&mut conn, email.as_str()).await? else {
        anyhow::bail!("no account uses {}", email.as_str());
    };
    conn.transaction::<_, diesel::result::Error, _>(async |conn| {
        accounts::users::lock(conn, user.id).await?;
        accounts::users::set_active(conn, user.id, active).await
    })
    .await?;
    println!(
        "{} is now {}",
        email.as_str(),
        if active { "active" } else { "deactivated" }
    );
    Ok(())
}
