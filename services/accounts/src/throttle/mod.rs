//! Throttling kept in Postgres, so every replica sees the same counts.
//!
//! - [`LoginGuard`]: every password check is recorded before bcrypt runs, under a lock on the
//!   account and the client, so parallel guesses see each other (see `login.rs` for the limits).
//! - [`hourly`]: registrations and mail-sending requests, a fixed number an hour per key.
//! - [`ClientRate`]: a token bucket per client in memory, in front of the routes a flood aims at
//!   (login, registration, mail requests), so a flood is refused before any database work.
//!
//! Refusals write nothing: the guard remembers the lockouts Postgres reported (`memory.rs`) and
//! audits each once per window. The guard and the hourly limits decide with a `now` the caller
//! passes, so their time logic is tested without sleeping.

mod hourly;
mod login;
mod memory;
mod rate;

pub use hourly::{HourlyLimit, TOO_MANY_FROM_CLIENT, already_spent, hourly, mail_limits};
pub use login::LoginGuard;
pub use rate::{ClientRate, Route};

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// A request turned away by a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// When the caller may try again (the `Retry-After` header).
    pub retry_after: Duration,
    /// What the client is told.
    pub message: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum ThrottleError {
    #[error("throttled: {}", .0.message)]
    Throttled(Throttled),
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

/// Takes transaction-scoped advisory locks on `(bucket, key)` pairs, always in one order, so two
/// requests locking overlapping pairs cannot deadlock. The caller must be inside a transaction.
async fn lock(
    conn: &mut AsyncPgConnection,
    mut keys: Vec<(&str, &str)>,
) -> diesel::QueryResult<()> {
    keys.sort_unstable();
    keys.dedup();
    for (bucket, key) in keys {
        diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))")
            .bind::<Text, _>(bucket)
            .bind::<Text, _>(key)
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// `at - span`, saturating instead of panicking on absurd spans.
fn before(at: DateTime<Utc>, span: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(span)
        .ok()
        .and_then(|d| at.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// `at + span`, saturating.
fn after(at: DateTime<Utc>, span: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(span)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// How long from `now` until `until`, rounded up to whole seconds (as Retry-After counts them),
/// and at least one.
fn wait_until(now: DateTime<Utc>, until: DateTime<Utc>) -> Duration {
    let wait = (until - now).to_std().unwrap_or_default();
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Duration::from_secs(seconds.max(1))
}
