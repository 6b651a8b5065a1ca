//! The accounts database: its embedded migrations, and the shared bootstrap re-exported.

use diesel::QueryResult;
use diesel_async::AsyncPgConnection;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};

pub use database::{Pool, PoolError, PooledConnection, is_unavailable, lost_race, pool, violates};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/accounts");

/// Identifies "accounts migrations" among advisory locks ("accounts" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x6163_636f_756e_7473;

/// Creates the database if needed and applies pending migrations under the advisory lock.
pub async fn migrate(database_url: &str) -> anyhow::Result<()> {
    database::migrate(database_url, MIGRATIONS, MIGRATION_LOCK_KEY).await
}

/// Runs `read` on a pooled connection, and again on another one (3 tries in all) when the server
/// dropped the first: the pool hands out a recently used connection without a test query, so one
/// the server closed a moment ago (a failover, terminated backends) can come out before its closed
/// socket is noticed. Only for reads: a write on a connection that broke may have committed.
pub async fn reading<T>(
    pool: &Pool,
    mut read: impl AsyncFnMut(&mut AsyncPgConnection) -> QueryResult<T>,
) -> Result<QueryResult<T>, PoolError> {
    let mut tries = 1;
    loop {
        let mut conn = pool.get().await?;
        match read(&mut conn).await {
            Err(e) if is_unavailable(&e) && tries < 3 => tries += 1,
            done => return Ok(done),
        }
    }
}

/// An error that may mean "lost a race with another transaction".
pub trait MaybeTransient {
    fn is_transient(&self) -> bool;
}

impl MaybeTransient for diesel::result::Error {
    fn is_transient(&self) -> bool {
        lost_race(self)
    }
}

/// Runs `job` on a pooled connection every `period` until `shutdown`: the service's housekeeping
/// (audit retention, sealed refresh tokens). A failure is logged as `what` and tried again at the
/// next tick; a job that did something says how much.
pub async fn every(
    pool: Pool,
    period: std::time::Duration,
    what: &'static str,
    shutdown: tokio_util::sync::CancellationToken,
    mut job: impl AsyncFnMut(&mut AsyncPgConnection) -> QueryResult<usize>,
) {
    let mut ticks = tokio::time::interval(period);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let done = match pool.get().await {
            Ok(mut conn) => job(&mut conn).await,
            Err(e) => {
                tracing::warn!(error = %e, what, "housekeeping: no database connection");
                continue;
            }
        };
        match done {
            Ok(0) => {}
            Ok(rows) => tracing::debug!(rows, what, "housekeeping"),
            Err(e) => tracing::warn!(error = %e, what, "housekeeping failed"),
        }
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

#[cfg(test)]
mod tests {
    #[test]
    fn every_migration_has_a_version_of_its_own() {
        database::distinct_versions(&super::MIGRATIONS).expect("distinct versions");
    }
}
