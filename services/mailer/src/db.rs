//! The mailer database: its embedded migrations, and the shared bootstrap re-exported.

use diesel_migrations::{EmbeddedMigrations, embed_migrations};

pub use database::{Pool, PoolError, PooledConnection, pool};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/mailer");

/// Identifies "mailer migrations" among advisory locks ("mailer" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x6d61_696c_6572;

/// Creates the database if needed and applies pending migrations under the advisory lock.
pub async fn migrate(database_url: &str) -> anyhow::Result<()> {
    database::migrate(database_url, MIGRATIONS, MIGRATION_LOCK_KEY).await
}

/// Whether a database error says nothing about the data: the server is unreachable, restarting
/// or failing over, or the statement lost a race and may be retried. Anything else (a value the
/// database refuses, such as a NUL byte in jsonb) fails the same way every time.
pub fn is_transient(error: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match error {
        Error::DatabaseError(kind, info) => match kind {
            DatabaseErrorKind::ClosedConnection
            | DatabaseErrorKind::UnableToSendCommand
            | DatabaseErrorKind::SerializationFailure
            | DatabaseErrorKind::ReadOnlyTransaction => true,
            DatabaseErrorKind::Unknown => {
                let message = info.message();
                [
                    "terminating connection",
                    "shutting down",
                    "starting up",
                    "recovery",
                    "too many connections",
                    "deadlock",
                    "lock timeout",
                    "canceling statement",
                ]
                .iter()
                .any(|needle| message.contains(needle))
            }
            _ => false,
        },
        Error::BrokenTransactionManager | Error::AlreadyInTransaction => true,
        _ => false,
    }
}
