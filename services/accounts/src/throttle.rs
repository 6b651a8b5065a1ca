//! Throttling kept in Postgres, so every replica sees the same counts (django-axes style).
//!
//! - Login: 5 failures for one (account, IP) lock that pair for the lockout period, counted from
//!   the latest failure. Keying on the pair means an attacker cannot lock a victim out from the
//!   victim's own address. A per-IP ceiling stops one address from spraying many accounts.
//! - Mail-sending requests (resend confirmation, forgot password): a few per address per hour,
//!   counted for any address, so the limit reveals nothing about which accounts exist.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::schema::{login_failures, mail_requests};

pub const FAILURES_PER_ACCOUNT_AND_IP: i64 = 5;
pub const FAILURES_PER_IP: i64 = 50;
pub const MAIL_REQUESTS_PER_HOUR: i64 = 3;

/// `Some(retry_after)` when this (email, ip), or this ip altogether, is locked out.
pub async fn login_locked(
    conn: &mut AsyncPgConnection,
    email: &str,
    ip: &str,
    lockout: Duration,
) -> QueryResult<Option<Duration>> {
    let window_start = Utc::now() - chrono::Duration::from_std(lockout).unwrap_or_default();
    let (pair_count, pair_latest): (i64, Option<DateTime<Utc>>) = login_failures::table
        .filter(login_failures::email.eq(email))
        .filter(login_failures::ip.eq(ip))
        .filter(login_failures::failed_at.gt(window_start))
        .select((
            diesel::dsl::count_star(),
            diesel::dsl::max(login_failures::failed_at),
        ))
        .first(conn)
        .await?;
    if pair_count >= FAILURES_PER_ACCOUNT_AND_IP {
        return Ok(Some(remaining(pair_latest, lockout)));
    }
    let (ip_count, ip_latest): (i64, Option<DateTime<Utc>>) = login_failures::table
        .filter(login_failures::ip.eq(ip))
        .filter(login_failures::failed_at.gt(window_start))
        .select((
            diesel::dsl::count_star(),
            diesel::dsl::max(login_failures::failed_at),
        ))
        .first(conn)
        .await?;
    if ip_count >= FAILURES_PER_IP {
        return Ok(Some(remaining(ip_latest, lockout)));
    }
    Ok(None)
}

fn remaining(latest: Option<DateTime<Utc>>, lockout: Duration) -> Duration {
    let until =
        latest.unwrap_or_else(Utc::now) + chrono::Duration::from_std(lockout).unwrap_or_default();
    (until - Utc::now())
        .to_std()
        .unwrap_or(Duration::from_secs(1))
}

pub async fn record_login_failure(
    conn: &mut AsyncPgConnection,
    email: &str,
    ip: &str,
) -> QueryResult<()> {
    diesel::insert_into(login_failures::table)
        .values((login_failures::email.eq(email), login_failures::ip.eq(ip)))
        .execute(conn)
        .await?;
    // Old rows carry no weight any more; keep the table small.
    diesel::delete(
        login_failures::table
            .filter(login_failures::failed_at.lt(Utc::now() - chrono::Duration::days(1))),
    )
    .execute(conn)
    .await
    .map(drop)
}

pub async fn clear_login_failures(
    conn: &mut AsyncPgConnection,
    email: &str,
    ip: &str,
) -> QueryResult<()> {
    diesel::delete(
        login_failures::table
            .filter(login_failures::email.eq(email))
            .filter(login_failures::ip.eq(ip)),
    )
    .execute(conn)
    .await
    .map(drop)
}

/// Records a mail-sending request for `email`; `Some(retry_after)` when over the hourly limit.
pub async fn mail_request(
    conn: &mut AsyncPgConnection,
    kind: &str,
    email: &str,
) -> QueryResult<Option<Duration>> {
    let hour_ago = Utc::now() - chrono::Duration::hours(1);
    let (count, oldest): (i64, Option<DateTime<Utc>>) = mail_requests::table
        .filter(mail_requests::kind.eq(kind))
        .filter(mail_requests::email.eq(email))
        .filter(mail_requests::requested_at.gt(hour_ago))
        .select((
            diesel::dsl::count_star(),
            diesel::dsl::min(mail_requests::requested_at),
        ))
        .first(conn)
        .await?;
    if count >= MAIL_REQUESTS_PER_HOUR {
        let until = oldest.unwrap_or_else(Utc::now) + chrono::Duration::hours(1);
        return Ok(Some(
            (until - Utc::now())
                .to_std()
                .unwrap_or(Duration::from_secs(1)),
        ));
    }
    diesel::insert_into(mail_requests::table)
        .values((mail_requests::kind.eq(kind), mail_requests::email.eq(email)))
        .execute(conn)
        .await?;
    diesel::delete(
        mail_requests::table
            .filter(mail_requests::requested_at.lt(Utc::now() - chrono::Duration::days(1))),
    )
    .execute(conn)
    .await?;
    Ok(None)
}
