//! Hourly limits: registrations per client, mail-sending requests per address and per client.
//! A request counts against all of its limits at once, or against none when one is spent, so a
//! refused request never uses up another limit.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::{ThrottleError, Throttled, after, before, lock, wait_until};
use crate::{http::client::ClientAddr, schema::rate_limit_hits};

const HOUR: Duration = Duration::from_secs(3600);

/// Mail-sending requests an hour, per address (or account) and kind...
pub const MAIL_REQUESTS_PER_ADDRESS: u32 = 3;
/// ...and per client, of every kind.
pub const MAIL_REQUESTS_PER_CLIENT: u32 = 20;
pub const TOO_MANY_FOR_ADDRESS: &str = "Too many requests for this address. Try again later.";
pub const TOO_MANY_FROM_CLIENT: &str = "Too many requests from your network. Try again later.";

/// At most `per_hour` requests in any hour for `key` in `bucket`; 0 means no limit. A request
/// counts `cost` times (an email change sends two mails).
#[derive(Debug, Clone)]
pub struct HourlyLimit {
    pub bucket: &'static str,
    pub key: String,
    pub per_hour: u32,
    pub cost: u32,
    /// What the client is told when this limit is spent.
    pub message: &'static str,
}

/// The mail-sending limits of a request from `client` that mails `mails` times about `address`
/// (an address, or an account's id), counted per address under `kind` and per client in all.
pub fn mail_limits(
    kind: &'static str,
    address: String,
    client: &ClientAddr,
    mails: u32,
) -> Vec<HourlyLimit> {
    vec![
        HourlyLimit {
            bucket: kind,
            key: address,
            per_hour: MAIL_REQUESTS_PER_ADDRESS,
            cost: 1,
            message: TOO_MANY_FOR_ADDRESS,
        },
        HourlyLimit {
            bucket: "mail:client",
            key: client.throttle_key(),
            per_hour: MAIL_REQUESTS_PER_CLIENT,
            cost: mails,
            message: TOO_MANY_FROM_CLIENT,
        },
    ]
}

/// Counts one request against every limit, atomically; or says how long to wait.
pub async fn hourly(
    conn: &mut AsyncPgConnection,
    limits: Vec<HourlyLimit>,
    now: DateTime<Utc>,
) -> Result<(), ThrottleError> {
    let limits: Vec<HourlyLimit> = limits.into_iter().filter(|l| l.per_hour > 0).collect();
    if limits.is_empty() {
        return Ok(());
    }
    let refused = conn
        .transaction::<_, diesel::result::Error, _>(async move |conn| {
            lock(
                conn,
                limits.iter().map(|l| (l.bucket, l.key.as_str())).collect(),
            )
            .await?;
            let hour_ago = before(now, HOUR);
            let refused = refusal(conn, &limits, now).await?;
            if refused.is_some() {
                return Ok(refused);
            }
            let rows: Vec<_> = limits
                .iter()
                .flat_map(|l| {
                    let row = (
                        rate_limit_hits::bucket.eq(l.bucket),
                        rate_limit_hits::key.eq(l.key.as_str()),
                        rate_limit_hits::hit_at.eq(now),
                    );
                    std::iter::repeat_n(row, l.cost as usize)
                })
                .collect();
            diesel::insert_into(rate_limit_hits::table)
                .values(rows)
                .execute(conn)
                .await?;
            // Hits older than an hour carry no weight any more; keep the table small.
            diesel::delete(rate_limit_hits::table.filter(rate_limit_hits::hit_at.lt(hour_ago)))
                .execute(conn)
                .await?;
            Ok(None)
        })
        .await?;
    refuse(refused)
}

/// Refuses, without counting anything, when one of `limits` is already spent: a cheap first look
/// before costlier work (bcrypt), which still ends in [`hourly`] to count atomically.
pub async fn already_spent(
    conn: &mut AsyncPgConnection,
    limits: &[HourlyLimit],
    now: DateTime<Utc>,
) -> Result<(), ThrottleError> {
    let limits: Vec<HourlyLimit> = limits.iter().filter(|l| l.per_hour > 0).cloned().collect();
    refuse(refusal(conn, &limits, now).await?)
}

fn refuse(refused: Option<Throttled>) -> Result<(), ThrottleError> {
    match refused {
        None => Ok(()),
        Some(throttled) => {
            metrics::counter!("accounts_requests_throttled_total").increment(1);
            Err(ThrottleError::Throttled(throttled))
        }
    }
}

/// The longest wait among the `limits` that one more request would overrun.
async fn refusal(
    conn: &mut AsyncPgConnection,
    limits: &[HourlyLimit],
    now: DateTime<Utc>,
) -> QueryResult<Option<Throttled>> {
    let hour_ago = before(now, HOUR);
    let mut refused: Option<Throttled> = None;
    for limit in limits {
        let (count, oldest): (i64, Option<DateTime<Utc>>) = rate_limit_hits::table
            .filter(rate_limit_hits::bucket.eq(limit.bucket))
            .filter(rate_limit_hits::key.eq(&limit.key))
            .filter(rate_limit_hits::hit_at.gt(hour_ago))
            .select((
                diesel::dsl::count_star(),
                diesel::dsl::min(rate_limit_hits::hit_at),
            ))
            .first(conn)
            .await?;
        if count + i64::from(limit.cost) > i64::from(limit.per_hour) {
            // A request that read the clock before a parallel one took the lock may see that
            // one's later hit: the wait is never more than an hour.
            let oldest = oldest.map_or(now, |oldest| oldest.min(now));
            let retry_after = wait_until(now, after(oldest, HOUR));
            if refused.is_none_or(|r| r.retry_after < retry_after) {
                refused = Some(Throttled {
                    retry_after,
                    message: limit.message,
                });
            }
        }
    }
    Ok(refused)
}
