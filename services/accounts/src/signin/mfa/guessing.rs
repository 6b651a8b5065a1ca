//! Limits on guessing second-factor codes, for someone who already knows the password:
//! - per (user, client), 5 failures in 15 minutes lock the pair for the rest of the window;
//! - per user, from the 11th failure within 24 hours, one attempt per delay, doubling from 1 s to
//!   15 minutes, except from a device that signed in for this user within 90 days (an intruder
//!   failing codes from many addresses cannot lock the owner out).
//!
//! Checked and recorded with the user's row locked, so parallel guesses count one by one.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::schema::{mfa_failures, users};

const PAIR_LIMIT: usize = 5;
const PAIR_WINDOW: chrono::Duration = chrono::Duration::minutes(15);
const USER_FREE: i64 = 10;
const USER_WINDOW: chrono::Duration = chrono::Duration::hours(24);
const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// Failures within a day from which the user is told someone knows the password (a single typo
/// is no news).
const MAIL_FROM: i64 = 3;

/// How long `client` must wait before trying a code for `user_id`, if at all. `known_device`:
/// whether the client's device signed in for this user lately (exempt from the per-user delay).
pub async fn refusal(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    client: &str,
    known_device: bool,
    now: DateTime<Utc>,
) -> QueryResult<Option<Duration>> {
    let pair: Vec<DateTime<Utc>> = mfa_failures::table
        .filter(mfa_failures::user_id.eq(user_id))
        .filter(mfa_failures::client.eq(client))
        .filter(mfa_failures::failed_at.gt(now - PAIR_WINDOW))
        .order(mfa_failures::failed_at.asc())
        .select(mfa_failures::failed_at)
        .load(conn)
        .await?;
    if pair.len() >= PAIR_LIMIT {
        // Locked until the window that holds the 5th-newest failure has passed.
        let oldest_counted = pair[pair.len() - PAIR_LIMIT];
        return Ok(Some(wait(oldest_counted + PAIR_WINDOW - now)));
    }
    if known_device {
        return Ok(None);
    }
    let (count, latest): (i64, Option<DateTime<Utc>>) = mfa_failures::table
        .filter(mfa_failures::user_id.eq(user_id))
        .filter(mfa_failures::failed_at.gt(now - USER_WINDOW))
        .select((
            diesel::dsl::count_star(),
            diesel::dsl::max(mfa_failures::failed_at),
        ))
        .first(conn)
        .await?;
    let Some(latest) = latest.filter(|_| count >= USER_FREE) else {
        return Ok(None);
    };
    let doublings = u32::try_from(count - USER_FREE).unwrap_or(u32::MAX).min(10);
    let delay = Duration::from_secs(1u64 << doublings).min(MAX_DELAY);
    let until = latest + chrono::Duration::from_std(delay).unwrap_or(PAIR_WINDOW);
    Ok((until > now).then(|| wait(until - now)))
}

fn wait(remaining: chrono::Duration) -> Duration {
    remaining
        .to_std()
        .unwrap_or(Duration::from_secs(1))
        .max(Duration::from_secs(1))
}

/// Records a failed code; `Some(failures within a day)` when the user should be mailed about them
/// (at most once a day).
pub async fn record_failure(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    client: &str,
    now: DateTime<Utc>,
) -> QueryResult<Option<i64>> {
    diesel::insert_into(mfa_failures::table)
        .values((
            mfa_failures::user_id.eq(user_id),
            mfa_failures::client.eq(client),
            mfa_failures::failed_at.eq(now),
        ))
        .execute(conn)
        .await?;
    // The user's failures older than any limit looks at go (by the (user, time) index).
    diesel::delete(
        mfa_failures::table
            .filter(mfa_failures::user_id.eq(user_id))
            .filter(mfa_failures::failed_at.lt(now - USER_WINDOW)),
    )
    .execute(conn)
    .await?;
    let count: i64 = mfa_failures::table
        .filter(mfa_failures::user_id.eq(user_id))
        .filter(mfa_failures::failed_at.gt(now - USER_WINDOW))
        .count()
        .get_result(conn)
        .await?;
    if count < MAIL_FROM {
        return Ok(None);
    }
    let claimed = diesel::update(
        users::table.find(user_id).filter(
            users::mfa_failures_mailed_at
                .is_null()
                .or(users::mfa_failures_mailed_at.lt(now - USER_WINDOW)),
        ),
    )
    .set(users::mfa_failures_mailed_at.eq(now))
    .execute(conn)
    .await?;
    Ok((claimed == 1).then_some(count))
}

/// Forgets the user's failures: a password change or reset starts over.
pub async fn clear(conn: &mut AsyncPgConnection, user_id: Uuid) -> QueryResult<()> {
    diesel::delete(mfa_failures::table.filter(mfa_failures::user_id.eq(user_id)))
        .execute(conn)
        .await
        .map(drop)
}
