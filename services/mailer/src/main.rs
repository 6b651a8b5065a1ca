use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, builder::PossibleValuesParser};
use events::Event;
use mailer::{
    config::Settings,
    db,
    failed_sends::{FailedSend, OperatorView},
    operator::{self, Selection},
    startup::Application,
    templates::{self, LOCALES, MailLocale, Templates},
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
    /// Print a sample mail (subject, text, HTML) rendered from a built-in payload through the
    /// configured templates (MAILER_TEMPLATES_DIR, MAILER_PRODUCT_NAME), to check overrides
    /// before deploying them.
    Render {
        /// The event type whose mail to render.
        #[arg(value_parser = PossibleValuesParser::new(Event::TYPES))]
        event_type: String,
        /// The language of the mail; a regional tag such as fr-CA picks its language.
        #[arg(long, default_value = "en", value_parser = parse_locale)]
        locale: &'static MailLocale,
    },
}

/// A shipped locale, or an error that lists them.
fn parse_locale(tag: &str) -> Result<&'static MailLocale, String> {
    MailLocale::matching(tag).ok_or_else(|| {
        let codes: Vec<_> = LOCALES.iter().map(MailLocale::code).collect();
        format!(
            "no templates for this locale; the shipped locales are {} (a regional tag such as fr-CA picks its language)",
            codes.join(", ")
        )
    })
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
    /// Show one failed send, with its payload and history (links' tokens redacted).
    Show { id: i64 },
    /// Hand back to the sender with a fresh schedule (attempts reset); the row is resolved, and
    /// reopens with the new cause if the mail fails for good again.
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
        Command::Render { event_type, locale } => print_sample(&settings, &event_type, locale)?,
        Command::Failed(Failed::List { json, all }) => {
            let rows: Vec<_> = operator::list(&settings, all)
                .await?
                .iter()
                .map(FailedSend::for_operator)
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print_table(&rows);
            }
        }
        Command::Failed(Failed::Show { id }) => {
            let row = operator::show(&settings, id).await?;
            println!("{}", serde_json::to_string_pretty(&row.for_operator())?);
            if row.payload.is_none() {
                println!("body: {}", row.body_for_operator());
            }
        }
        Command::Failed(Failed::Retry { id, all }) => {
            let selection = match (id, all) {
                (Some(id), false) => Selection::One(id),
                _ => Selection::All,
            };
            let outcomes = operator::retry(&settings, selection, "mailer failed retry").await?;
            if outcomes.is_empty() {
                println!("nothing to retry");
            }
            let mut failed = 0;
            for outcome in &outcomes {
                let to = outcome.recipient.as_deref().unwrap_or("-");
                match &outcome.result {
                    Ok(()) => println!(
                        "{}: to {to}: queued with a fresh schedule; a running mailer sends it (the row reopens if it fails for good again)",
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

/// Renders `event_type`'s sample and prints each part under a header naming the files it came from.
fn print_sample(
    settings: &Settings,
    event_type: &str,
    locale: &'static MailLocale,
) -> anyhow::Result<()> {
    let templates = Templates::load(settings.templates_dir.as_deref(), &settings.product_name)
        .context("loading templates (check MAILER_TEMPLATES_DIR)")?;
    let event = templates::sample_event(event_type, locale.code())
        .with_context(|| format!("no sample payload for {event_type}"))?;
    let mail = templates.render(&event)?;
    if let Some(dir) = &settings.templates_dir {
        for path in templates::unused_overrides(dir)? {
            eprintln!(
                "warning: {} matches no template and is ignored (expected <locale>/<event-type>/{{subject.txt,body.txt,body.html}} or <locale>/base.{{txt,html}})",
                path.display()
            );
        }
    }
    let origin = |name: &str| {
        let source = templates
            .source(locale, name)
            .map_or_else(|| "missing".to_string(), ToString::to_string);
        format!("{}/{name}: {source}", locale.code())
    };
    let part = |title: &str, file: &str, base: Option<&str>| {
        let mut header = origin(&format!("{event_type}/{file}"));
        if let Some(base) = base {
            header = format!("{header}; {}", origin(base));
        }
        format!("----- {title} ({header}) -----")
    };
    println!("{}", part("subject", "subject.txt", None));
    println!("{}", mail.subject);
    println!("{}", part("text", "body.txt", Some("base.txt")));
    println!("{}", mail.text.trim_end());
    println!("{}", part("html", "body.html", Some("base.html")));
    println!("{}", mail.html.trim_end());
    Ok(())
}

fn print_table(rows: &[OperatorView]) {
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
