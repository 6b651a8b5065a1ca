//! Hourly limits: registrations per client, mail-sending requests per address and per client.
//! A request counts against all of its limits at once, or against none when one is spent, so a
//! refused request never uses up another limit.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::{ThrottleError, Throttled, after, before, lock, wait_until};
use crate::schema::rate_limit_hits;

const HOUR: Duration = Duration::from_secs(3600);

/// At most `per_hour` requests in any hour for `key` in `bucket`; 0 means no limit.
#[derive(Debug, Clone)]
pub struct HourlyLimit {
    pub bucket: &'static str,
    pub key: String,
    pub per_hour: u32,
    /// What the client is told when this limit is spent.
    pub message: &'static str,
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
            let mut refused: Option<Throttled> = None;
            for limit in &limits {
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
                if count >= i64::from(limit.per_hour) {
                    // A request that read the clock before a parallel one took the lock may
                    // see that one's later hit: the wait is never more than an hour.
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
            if refused.is_some() {
                return Ok(refused);
            }
            let rows: Vec<_> = limits
                .iter()
                .map(|l| {
                    (
                        rate_limit_hits::bucket.eq(l.bucket),
                        rate_limit_hits::key.eq(l.key.as_str()),
                        rate_limit_hits::hit_at.eq(now),
                    )
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
    match refused {
        None => Ok(()),
        Some(throttled) => {
            metrics::counter!("accounts_requests_throttled_total").increment(1);
            Err(ThrottleError::Throttled(throttled))
        }
    }
}
