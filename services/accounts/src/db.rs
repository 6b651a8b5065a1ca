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
