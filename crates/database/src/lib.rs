//! Postgres bootstrap: the pool, creating the database when it is missing, and embedded
//! migrations run under an advisory lock so replicas starting together don't race.
//!
//! Every connection carries [`ConnectionLimits`] (a statement timeout, a connect timeout, TCP
//! keepalive and a TCP user timeout), so a server or a network path that stops answering stalls a
//! caller for seconds, not for the 15 minutes TCP takes to give up on its own. [`within`] bounds a
//! unit of work from the client's side too (a path that still acknowledges TCP but never answers)
//! and closes the connection that overran.

mod limits;
mod listener;

pub use limits::ConnectionLimits;
pub use listener::listen;

use std::time::Duration;

use ::deadpool::managed::{Hook, HookError};
use anyhow::{Context, anyhow};
use diesel::{connection::SimpleConnection, sql_types::Text};
use diesel_async::{
    AsyncConnection, AsyncPgConnection, RunQueryDsl,
    async_connection_wrapper::AsyncConnectionWrapper,
    pooled_connection::{
        AsyncDieselConnectionManager, ManagerConfig, PoolError as ManagerError, RecyclingMethod,
        deadpool,
    },
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};
use url::Url;

pub type Pool = deadpool::Pool<AsyncPgConnection>;
pub type PooledConnection = deadpool::Object<AsyncPgConnection>;

/// Whether the database went away under a statement: the connection broke, the server is
/// shutting down, starting up, recovering or full, it terminated or cancelled the backend, or a
/// pooled connection was left mid-transaction. Nothing about the data is wrong; another
/// connection, later, may succeed.
pub fn is_unavailable(error: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match error {
        Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection
            | DatabaseErrorKind::UnableToSendCommand
            | DatabaseErrorKind::ReadOnlyTransaction,
            _,
        )
        | Error::BrokenTransactionManager
        | Error::AlreadyInTransaction => true,
        Error::DatabaseError(DatabaseErrorKind::Unknown, info) => [
            "terminating connection",
            "shutting down",
            "starting up",
            "recovery",
            "too many connections",
            "canceling statement",
        ]
        .iter()
        .any(|needle| info.message().contains(needle)),
        _ => false,
    }
}

/// Whether Postgres aborted a transaction only because it raced another one (a serialization
/// failure, a deadlock, a lock timeout): nothing was committed, and running it again is safe.
pub fn lost_race(error: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match error {
        Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => true,
        Error::DatabaseError(_, info) => {
            let message = info.message();
            message.contains("deadlock detected") || message.contains("lock timeout")
        }
        _ => false,
    }
}

/// Whether a database error says nothing about the data ([`is_unavailable`] or [`lost_race`]):
/// anything else (a value the database refuses, such as a NUL byte in jsonb) fails the same way
/// every time.
pub fn is_transient(error: &diesel::result::Error) -> bool {
    is_unavailable(error) || lost_race(error)
}

/// A pooled connection checked out again within this long of its last checkout is handed out
/// without a test query. One the server closed (a restart, `pg_terminate_backend`) is known broken
/// without one, by its closed socket; a round trip on every checkout would cost a busy service a
/// large part of its throughput. A connection idle for longer (a firewall may have dropped it
/// silently) is tested first, and replaced if the test fails.
const TRUSTED_WHILE_BUSY: std::time::Duration = std::time::Duration::from_secs(1);

/// A pool with the default [`ConnectionLimits`] (unless `database_url` sets its own parameters).
pub fn pool(database_url: &str, max_size: usize) -> anyhow::Result<Pool> {
    pool_with(database_url, max_size, &ConnectionLimits::default())
}

/// A pool whose connections carry `limits`. Checking out never waits longer than a few seconds:
/// for a free slot, for a new connection (the connect timeout), or for the test of an idle one
/// (a frozen connection fails its test and is replaced).
pub fn pool_with(
    database_url: &str,
    max_size: usize,
    limits: &ConnectionLimits,
) -> anyhow::Result<Pool> {
    let mut config = ManagerConfig::default();
    config.recycling_method = RecyclingMethod::Fast;
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
        limits.apply(database_url)?,
        config,
    );
    let test_within = limits.response_deadline();
    deadpool::Pool::builder(manager)
        .max_size(max_size)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(limits.connect_timeout + Duration::from_secs(1)))
        .recycle_timeout(Some(test_within))
        .runtime(::deadpool::Runtime::Tokio1)
        .pre_recycle(Hook::async_fn(
            move |conn: &mut AsyncPgConnection, metrics| {
                Box::pin(async move {
                    if metrics.last_used() < TRUSTED_WHILE_BUSY {
                        return Ok(());
                    }
                    match tokio::time::timeout(
                        test_within,
                        diesel::sql_query("SELECT 1").execute(conn),
                    )
                    .await
                    {
                        Ok(tested) => tested
                            .map(drop)
                            .map_err(|e| HookError::Backend(ManagerError::QueryError(e))),
                        Err(_) => Err(HookError::message("no answer to the connection test")),
                    }
                })
            },
        ))
        .build()
        .context("building the database pool")
}

/// Why [`within`] failed.
#[derive(Debug, thiserror::Error)]
pub enum WithinError<E> {
    #[error("no database connection: {0}")]
    Pool(#[from] PoolError),
    #[error("the database did not answer within {} s; the connection was closed", .0.as_secs_f32())]
    Stalled(Duration),
    #[error(transparent)]
    Query(E),
}

/// Runs `work` on a connection from `pool`, and gives up when it has not finished within
/// `deadline` (take [`ConnectionLimits::response_deadline`]): the connection is then closed rather
/// than returned to the pool, since its server or the path to it stopped answering. The idle
/// connections are closed too (a path that died usually took them along; testing each would cost
/// a deadline apiece), so the next caller gets a new one. `work` must be one statement or one
/// transaction: dropped midway, a transaction is rolled back by the server when the connection
/// closes.
pub async fn within<T, E>(
    pool: &Pool,
    deadline: Duration,
    work: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, E>,
) -> Result<T, WithinError<E>> {
    let mut conn = pool.get().await?;
    match tokio::time::timeout(deadline, work(&mut conn)).await {
        Ok(done) => done.map_err(WithinError::Query),
        Err(_) => {
            drop(::deadpool::managed::Object::take(conn));
            pool.retain(|_, _| false);
            tracing::warn!(
                deadline_ms = deadline.as_millis() as u64,
                "the database did not answer in time; its connections were closed"
            );
            Err(WithinError::Stalled(deadline))
        }
    }
}

/// Creates the database named in `database_url` when it does not exist yet.
pub async fn ensure_database(database_url: &str) -> anyhow::Result<()> {
    let url = Url::parse(database_url).context("parsing the database URL")?;
    let name = url.path().trim_start_matches('/').to_string();
    if name.is_empty() {
        return Err(anyhow!("the database URL names no database"));
    }
    let mut server = url.clone();
    server.set_path("/postgres");
    let mut conn = connect(server.as_str(), &ConnectionLimits::default())
        .await
        .with_context(|| {
            format!(
                "cannot reach PostgreSQL at {}:{}; start it (`make services`) or fix the database URL",
                url.host_str().unwrap_or("?"),
                url.port().unwrap_or(5432)
            )
        })?;
    if database_exists(&mut conn, &name).await? {
        return Ok(());
    }
    let create = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    if let Err(e) = diesel::sql_query(create).execute(&mut conn).await {
        // Another replica may have created it in the meantime.
        if !database_exists(&mut conn, &name).await? {
            return Err(e).context(format!("creating database {name}"));
        }
    }
    tracing::info!(database = %name, "created the database");
    Ok(())
}

async fn database_exists(conn: &mut AsyncPgConnection, name: &str) -> anyhow::Result<bool> {
    #[derive(diesel::QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        #[allow(dead_code)]
        one: i32,
    }
    let found: Vec<Found> =
        diesel::sql_query("SELECT 1 AS one FROM pg_database WHERE datname = $1")
            .bind::<Text, _>(name)
            .load(conn)
            .await
            .context("looking up the database")?;
    Ok(!found.is_empty())
}

/// Fails when two migrations share a version: diesel records versions, so it would take the
/// second for applied and never run it (two branches each adding one dated the same day).
pub fn distinct_versions(migrations: &EmbeddedMigrations) -> anyhow::Result<()> {
    use diesel::{migration::MigrationSource, pg::Pg};
    let mut seen = std::collections::HashSet::new();
    let all = MigrationSource::<Pg>::migrations(migrations)
        .map_err(|e| anyhow!("reading the embedded migrations: {e}"))?;
    for migration in all {
        let version = migration.name().version().to_string();
        if !seen.insert(version.clone()) {
            return Err(anyhow!(
                "two migrations share the version {version}; rename one so that each runs"
            ));
        }
    }
    Ok(())
}

/// Creates the database if needed and applies pending migrations, holding an advisory lock.
///
/// Runs the synchronous migration harness on the blocking pool (diesel-async's async harness panics
/// on a current-thread runtime, which is what actix and tests use).
pub async fn migrate(
    database_url: &str,
    migrations: EmbeddedMigrations,
    lock_key: i64,
) -> anyhow::Result<()> {
    distinct_versions(&migrations)?;
    ensure_database(database_url).await?;
    // No statement timeout: a migration may rightly take long. Connecting is bounded.
    let limits = ConnectionLimits {
        statement_timeout: Duration::ZERO,
        ..ConnectionLimits::default()
    };
    let conn = connect(database_url, &limits)
        .await
        .context("connecting to run migrations")?;
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut conn: AsyncConnectionWrapper<AsyncPgConnection> = conn.into();
        conn.batch_execute(&format!("SELECT pg_advisory_lock({lock_key})"))?;
        let applied: anyhow::Result<Vec<String>> = conn
            .run_pending_migrations(migrations)
            .map(|versions| versions.iter().map(ToString::to_string).collect())
            .map_err(|e| anyhow!("running migrations: {e}"));
        conn.batch_execute(&format!("SELECT pg_advisory_unlock({lock_key})"))?;
        for version in applied? {
            tracing::info!(%version, "applied migration");
        }
        Ok(())
    })
    .await
    .context("the migration task panicked")?
}

pub type PoolError = deadpool::PoolError;

/// One connection (outside a pool) that carries `limits`.
pub async fn connect(
    database_url: &str,
    limits: &ConnectionLimits,
) -> anyhow::Result<AsyncPgConnection> {
    let url = limits.apply(database_url)?;
    tokio::time::timeout(
        limits.connect_timeout + Duration::from_secs(1),
        AsyncPgConnection::establish(&url),
    )
    .await
    .map_err(|_| {
        anyhow!(
            "connecting to the database took longer than {} s",
            limits.connect_timeout.as_secs()
        )
    })?
    .map_err(anyhow::Error::from)
}

/// Whether a diesel error is a unique violation of the named index.
pub fn violates(error: &diesel::result::Error, constraint: &str) -> bool {
    matches!(
        error,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, info)
            if info.constraint_name() == Some(constraint)
    )
}
