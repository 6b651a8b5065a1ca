//! The mailer database: its embedded migrations, and the shared bootstrap re-exported.

use diesel_migrations::{EmbeddedMigrations, embed_migrations};

pub use database::{
    ConnectionLimits, Pool, PoolError, PooledConnection, WithinError, is_transient, pool,
    pool_with, within,
};

/// A [`within`] error as `anyhow`, a database error staying downcastable to `diesel::result::Error`.
pub fn into_anyhow(error: WithinError<diesel::result::Error>) -> anyhow::Error {
    match error {
        WithinError::Query(e) => e.into(),
        other => anyhow::anyhow!("{other}"),
    }
}

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/mailer");

/// Identifies "mailer migrations" among advisory locks ("mailer" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x6d61_696c_6572;

/// Creates the database if needed and applies pending migrations under the advisory lock.
pub async fn migrate(database_url: &str) -> anyhow::Result<()> {
    database::migrate(database_url, MIGRATIONS, MIGRATION_LOCK_KEY).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_migration_has_a_version_of_its_own() {
        database::distinct_versions(&super::MIGRATIONS).expect("distinct versions");
    }
}
