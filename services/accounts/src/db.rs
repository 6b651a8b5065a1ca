//! The accounts database: its embedded migrations, and the shared bootstrap re-exported.

use diesel_migrations::{EmbeddedMigrations, embed_migrations};

pub use database::{Pool, PoolError, PooledConnection, pool, violates};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/accounts");

/// Identifies "accounts migrations" among advisory locks ("accounts" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x6163_636f_756e_7473;

/// Creates the database if needed and applies pending migrations under the advisory lock.
pub async fn migrate(database_url: &str) -> anyhow::Result<()> {
    database::migrate(database_url, MIGRATIONS, MIGRATION_LOCK_KEY).await
}

/// Whether Postgres aborted a transaction only because it raced another one (a serialization
/// failure or a deadlock): nothing was committed, and running it again is safe.
pub fn is_transient(error: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match error {
        Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => true,
        Error::DatabaseError(_, info) => info.message().contains("deadlock detected"),
        _ => false,
    }
}

/// Whether the database went away under a statement (the connection broke mid-query, or the server
/// is shutting down, starting up or terminated the backend): not a bug of ours, and the pool
/// replaces the connection.
pub fn is_unavailable(error: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match error {
        Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        )
        | Error::BrokenTransactionManager => true,
        Error::DatabaseError(DatabaseErrorKind::Unknown, info) => {
            let message = info.message();
            message.contains("terminating connection")
                || message.contains("shutting down")
                || message.contains("starting up")
        }
        _ => false,
    }
}

/// An error that may mean "lost a race with another transaction".
pub trait MaybeTransient {
    fn is_transient(&self) -> bool;
}

impl MaybeTransient for diesel::result::Error {
    fn is_transient(&self) -> bool {
        is_transient(self)
    }
}

/// Runs `attempt` (a whole transaction) again when it lost a race, up to a few times, so a race
/// between requests never becomes a 500.
pub async fn retrying<T, E: MaybeTransient>(
    mut attempt: impl AsyncFnMut() -> Result<T, E>,
) -> Result<T, E> {
    let mut tries = 0;
    loop {
        match attempt().await {
            Err(e) if e.is_transient() && tries < 4 => {
                tries += 1;
                metrics::counter!("accounts_transaction_retries_total").increment(1);
                tokio::time::sleep(std::time::Duration::from_millis(5 << tries)).await;
            }
            other => return other,
        }
    }
}
