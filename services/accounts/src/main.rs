use std::process::ExitCode;

use accounts::{
    admin::operator, config::Settings, db, http::telemetry, startup::Application,
    tokens::TokenIssuer, users::links::OfflineSigner,
};
use anyhow::Context;
use clap::{Parser, Subcommand};
use diesel_async::{AsyncConnection, AsyncPgConnection};
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
    /// Create a superuser. The password is read from a prompt, or as two lines of standard input
    /// when it is not a terminal; never from the command line.
    CreateSuperuser {
        #[arg(long)]
        email: String,
        #[arg(long)]
        username: Option<String>,
    },
    /// Operate on users: list, show, grant, revoke, deactivate, activate.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Deprecated: use `accounts users deactivate`.
    #[command(hide = true)]
    Deactivate { email: String },
    /// Deprecated: use `accounts users activate`.
    #[command(hide = true)]
    Activate { email: String },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// One line per user.
    List {
        /// Only users whose email or username contains this (case-insensitive).
        #[arg(long)]
        search: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// A user's state, roles, permissions and live sessions.
    Show { email: String },
    /// Grant a role (admin, support, ...).
    Grant { email: String, role: String },
    /// Revoke a role; the user's sessions end at once.
    Revoke { email: String, role: String },
    /// Deactivate an account: it can no longer log in, refresh or use its tokens.
    Deactivate { email: String },
    /// Reactivate a deactivated account.
    Activate { email: String },
    /// Account recovery for a user who lost every second factor and recovery code: removes them,
    /// ends every session, makes the password unusable and mails a reset link to the account's
    /// address (so only the mailbox's owner gets back in).
    ResetMfa { email: String },
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

async fn connect(settings: &Settings) -> anyhow::Result<AsyncPgConnection> {
    db::migrate(settings.database_url.expose_secret()).await?;
    AsyncPgConnection::establish(settings.database_url.expose_secret())
        .await
        .context("connecting to ACCOUNTS_DATABASE_URL")
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
        Command::CreateSuperuser { email, username } => {
            let mut conn = connect(&settings).await?;
            operator::create_superuser(&mut conn, &email, username.as_deref(), settings.bcrypt_cost)
                .await
        }
        Command::Users(command) => {
            let mut conn = connect(&settings).await?;
            users(&mut conn, command, settings).await
        }
        Command::Deactivate { email } => {
            eprintln!("accounts: `deactivate` is deprecated; use `accounts users deactivate`");
            operator::set_active(&mut connect(&settings).await?, &email, false).await
        }
        Command::Activate { email } => {
            eprintln!("accounts: `activate` is deprecated; use `accounts users activate`");
            operator::set_active(&mut connect(&settings).await?, &email, true).await
        }
    }
}

async fn users(
    conn: &mut AsyncPgConnection,
    command: UsersCommand,
    settings: Settings,
) -> anyhow::Result<()> {
    match command {
        UsersCommand::List { search, limit } => {
            operator::list(conn, search.as_deref(), limit, &mut std::io::stdout()).await
        }
        UsersCommand::Show { email } => operator::show(conn, &email).await,
        UsersCommand::Grant { email, role } => {
            operator::grant_or_revoke(conn, &email, &role, true).await
        }
        UsersCommand::Revoke { email, role } => {
            operator::grant_or_revoke(conn, &email, &role, false).await
        }
        UsersCommand::Deactivate { email } => operator::set_active(conn, &email, false).await,
        UsersCommand::Activate { email } => operator::set_active(conn, &email, true).await,
        UsersCommand::ResetMfa { email } => {
            // The mailed reset link is signed with the service's own key.
            let signer = OfflineSigner {
                tokens: TokenIssuer::load(&settings)?,
                settings,
            };
            operator::reset_mfa(conn, &signer, &email).await
        }
    }
}
