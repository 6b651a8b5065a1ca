//! The login guard: limits on password guessing, checked and recorded before bcrypt runs.
//!
//! - per (account, client): [`PAIR_FAILURES`] failures lock that pair for the lockout period,
//!   counted from the latest failure. Keyed on the pair, so an attacker cannot lock a victim out
//!   from the victim's own address;
//! - per account, from any client: after [`ACCOUNT_BURST`] failures within [`ACCOUNT_WINDOW`], one
//!   attempt per delay, the delay doubling from [`FIRST_DELAY`] up to [`MAX_DELAY`]. A success
//!   resets it, and so does a day without a failure; the account is never locked for good;
//! - per client: [`CLIENT_FAILURES`] failures lock the client for the lockout period.
//!
//! An attempt counts as a failure from the moment it is admitted until it is settled as a
//! success, so twenty parallel guesses cannot all pass a check made before any of them failed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::{pg::Pg, prelude::*};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use serde_json::json;

use super::{ThrottleError, Throttled, after, before, lock, memory::Lockouts, wait_until};
use crate::{
    audit::{self, Origin},
    http::client::ClientAddr,
    http::telemetry,
    schema::{login_attempts, login_delays, login_lockouts},
};

pub const PAIR_FAILURES: i64 = 5;
pub const CLIENT_FAILURES: i64 = 50;
pub const ACCOUNT_BURST: i64 = 20;
pub const ACCOUNT_WINDOW: Duration = Duration::from_secs(15 * 60);
pub const FIRST_DELAY: Duration = Duration::from_secs(1);
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// An account's delay is forgotten after this long without an attempt.
pub const DELAY_FORGOTTEN_AFTER: Duration = Duration::from_secs(24 * 3600);

pub const LOCKED: &str = "Too many failed login attempts. Try again later.";

const FAILED: &str = "failed";
const SUCCEEDED: &str = "succeeded";

/// Failures counted for one limit: how many, and the latest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: i64,
    pub latest: Option<DateTime<Utc>>,
}

/// An account under the per-account delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Queryable)]
pub struct Delay {
    /// Attempts admitted since the delay began.
    pub failures: i32,
    pub last_attempt_at: DateTime<Utc>,
}

/// What the database holds about an account and a client at the moment of an attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    /// This pair's failures within the lockout period, since the pair's last success.
    pub pair: Tally,
    /// The client's failures within the lockout period.
    pub client: Tally,
    /// The account's failures within [`ACCOUNT_WINDOW`], since its last success.
    pub account: Tally,
    pub delay: Option<Delay>,
}

/// The limits, as a pure decision over what was observed and the time.
#[derive(Debug, Clone, Copy)]
pub struct LoginPolicy {
    pub lockout: Duration,
}

/// Which limit holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// This account from this client: [`PAIR_FAILURES`] failures.
    Pair,
    /// This client, whatever the account: [`CLIENT_FAILURES`] failures.
    Client,
    /// This account, from any client: the doubling delay.
    Account,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Pair => "pair",
            Scope::Client => "client",
            Scope::Account => "account",
        }
    }

    /// What the limit counts under: the pair, the client's throttle key, or the account.
    pub fn key(self, account: &str, client: &str) -> String {
        match self {
            Scope::Pair => format!("{account}\n{client}"),
            Scope::Client => client.to_string(),
            Scope::Account => account.to_string(),
        }
    }
}

/// A limit that holds until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lock {
    pub scope: Scope,
    pub until: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Check the password; store `delay` as the account's delay state (when it has one).
    Admit { delay: Option<Delay> },
    /// Every limit that holds (at least one).
    Refuse(Vec<Lock>),
}

/// The lock that ends last: what Retry-After counts to, and what a lockout window records.
fn longest(locks: &[Lock]) -> Option<&Lock> {
    locks.iter().max_by_key(|l| l.until)
}

#[cfg(test)]
impl Decision {
    /// How long the caller must wait, when refused.
    fn wait(&self, now: DateTime<Utc>) -> Option<Duration> {
        match self {
            Decision::Admit { .. } => None,
            Decision::Refuse(locks) => longest(locks).map(|l| wait_until(now, l.until)),
        }
    }
}

impl LoginPolicy {
    pub fn decide(&self, seen: &Observed, now: DateTime<Utc>) -> Decision {
        let mut locks = Vec::new();
        let mut block = |scope: Scope, until: DateTime<Utc>| {
            if until > now {
                locks.push(Lock { scope, until });
            }
        };
        for (scope, tally, limit) in [
            (Scope::Pair, seen.pair, PAIR_FAILURES),
            (Scope::Client, seen.client, CLIENT_FAILURES),
        ] {
            if let (true, Some(latest)) = (tally.count >= limit, tally.latest) {
                block(scope, after(latest, self.lockout));
            }
        }
        let delay = match (seen.delay, seen.account.latest) {
            (Some(delay), _) if before(now, DELAY_FORGOTTEN_AFTER) < delay.last_attempt_at => {
                Some(delay)
            }
            (_, Some(latest)) if seen.account.count >= ACCOUNT_BURST => Some(Delay {
                failures: 0,
                last_attempt_at: latest,
            }),
            _ => None,
        };
        if let Some(delay) = delay {
            block(
                Scope::Account,
                after(delay.last_attempt_at, delay_after(delay.failures)),
            );
        }
        if !locks.is_empty() {
            return Decision::Refuse(locks);
        }
        Decision::Admit {
            delay: delay.map(|d| Delay {
                failures: d.failures.saturating_add(1),
                last_attempt_at: now,
            }),
        }
    }
}

/// The wait after `failures` attempts under the delay: 1 s, 2 s, 4 s, ... up to [`MAX_DELAY`].
pub fn delay_after(failures: i32) -> Duration {
    let doublings = u32::try_from(failures).unwrap_or(0).min(20);
    FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
}

/// Admits password checks. Reuse it for every check of a password the user types: a login, or a
/// `current_password` on a profile change. One guard serves the whole process (it remembers the
/// lockouts Postgres reported, see [`Lockouts`]).
///
/// ```text
/// let attempt = state.login_guard
///     .begin(&mut conn, email.as_str(), &client, &origin, Utc::now())
///     .await?; // 429 with Retry-After when a limit holds; no bcrypt then
/// let matched = hasher.verify(&password, hash).await;
/// match matched {
///     Ok(true) => attempt.succeeded(&mut conn).await?,
///     Ok(false) => attempt.failed(&mut conn).await?,
///     Err(_) => attempt.cancel(&mut conn).await?, // nothing was checked
/// }
/// ```
/// Call `begin` outside any transaction of yours: it commits its own, so its record is visible
/// to parallel requests before bcrypt starts.
#[derive(Debug)]
pub struct LoginGuard {
    policy: LoginPolicy,
    remembered: Lockouts,
}

/// An admitted password check. Until it is settled it counts as a failure.
#[derive(Debug)]
#[must_use = "settle the attempt: succeeded, failed or cancel"]
pub struct Attempt {
    id: i64,
    account: String,
}

impl LoginGuard {
    /// `lockout` is `ACCOUNTS_LOCKOUT_SECONDS`.
    pub fn new(lockout: Duration) -> Self {
        Self {
            policy: LoginPolicy { lockout },
            remembered: Lockouts::default(),
        }
    }

    /// Refuses at once, without the database, when this replica recently learnt from Postgres that
    /// a limit holds for `account` or `client`.
    pub fn refuse_remembered(
        &self,
        account: &str,
        client: &ClientAddr,
        now: DateTime<Utc>,
    ) -> Result<(), ThrottleError> {
        match self.remembered.until(account, &client.throttle_key(), now) {
            Some(until) => Err(refused(wait_until(now, until))),
            None => Ok(()),
        }
    }

    /// Admits one password check for `account` (the normalized email, known or not) from
    /// `client`, and records it, atomically; or says how long to wait. A refusal writes nothing,
    /// except the first of a lockout's window, which is audited as `login.locked` (on behalf of
    /// `origin`).
    pub async fn begin(
        &self,
        conn: &mut AsyncPgConnection,
        account: &str,
        client: &ClientAddr,
        origin: &Origin,
        now: DateTime<Utc>,
    ) -> Result<Attempt, ThrottleError> {
        self.refuse_remembered(account, client, now)?;
        let account = account.to_string();
        let client = client.throttle_key();
        let policy = self.policy;
        let admitted = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                lock(
                    conn,
                    vec![("login:account", &account), ("login:client", &client)],
                )
                .await?;
                let seen = observe(conn, &policy, &account, &client, now).await?;
                let delay = match policy.decide(&seen, now) {
                    Decision::Admit { delay } => delay,
                    Decision::Refuse(locks) => {
                        announce(conn, &locks, &account, &client, origin, now).await?;
                        return Ok(Err(locks));
                    }
                };
                if let Some(delay) = delay {
                    diesel::insert_into(login_delays::table)
                        .values((
                            login_delays::account.eq(&account),
                            login_delays::failures.eq(delay.failures),
                            login_delays::last_attempt_at.eq(delay.last_attempt_at),
                        ))
                        .on_conflict(login_delays::account)
                        .do_update()
                        .set((
                            login_delays::failures.eq(delay.failures),
                            login_delays::last_attempt_at.eq(delay.last_attempt_at),
                        ))
                        .execute(conn)
                        .await?;
                }
                let id: i64 = diesel::insert_into(login_attempts::table)
                    .values((
                        login_attempts::account.eq(&account),
                        login_attempts::client.eq(&client),
                        login_attempts::started_at.eq(now),
                    ))
                    .returning(login_attempts::id)
                    .get_result(conn)
                    .await?;
                forget_old(conn, &policy, now).await?;
                Ok(Ok(id))
            })
            .await?;
        match admitted {
            Ok(id) => Ok(Attempt { id, account }),
            Err(locks) => {
                self.remembered.learn(&account, &client, &locks, now);
                let until = longest(&locks).map_or(now, |l| l.until);
                Err(refused(wait_until(now, until)))
            }
        }
    }
}

fn refused(retry_after: Duration) -> ThrottleError {
    metrics::counter!("accounts_login_throttled_total").increment(1);
    ThrottleError::Throttled(Throttled {
        retry_after,
        message: LOCKED,
    })
}

/// Audits a lockout once per window: the longest of `locks` is recorded in `login_lockouts`, and
/// audited as `login.locked`, only when no window of that limit and key was running. Refusals
/// within a running window only read.
async fn announce(
    conn: &mut AsyncPgConnection,
    locks: &[Lock],
    account: &str,
    client: &str,
    origin: &Origin,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    let Some(lock) = longest(locks) else {
        return Ok(());
    };
    let scope = lock.scope.as_str();
    let key = lock.scope.key(account, client);
    let announced: Option<DateTime<Utc>> = login_lockouts::table
        .find((scope, &key))
        .select(login_lockouts::until)
        .first(conn)
        .await
        .optional()?;
    if announced.is_some_and(|until| until >= lock.until) {
        return Ok(());
    }
    diesel::insert_into(login_lockouts::table)
        .values((
            login_lockouts::scope.eq(scope),
            login_lockouts::key.eq(&key),
            login_lockouts::until.eq(lock.until),
        ))
        .on_conflict((login_lockouts::scope, login_lockouts::key))
        .do_update()
        .set(login_lockouts::until.eq(lock.until))
        .execute(conn)
        .await?;
    if announced.is_some_and(|until| until > now) {
        // The running window was extended: still the same lockout.
        return Ok(());
    }
    let details = json!({
        "scope": scope,
        "email": telemetry::mask_address(account),
        "until": lock.until,
    });
    audit::record(conn, origin, "login.locked", None, details).await
}

impl Attempt {
    /// The password matched: the account's delay and this pair's failures no longer count.
    pub async fn succeeded(self, conn: &mut AsyncPgConnection) -> QueryResult<()> {
        self.settle(conn, SUCCEEDED).await?;
        diesel::delete(login_delays::table.find(&self.account))
            .execute(conn)
            .await
            .map(drop)
    }

    /// The password did not match (it already counted as a failure; this makes it final).
    pub async fn failed(self, conn: &mut AsyncPgConnection) -> QueryResult<()> {
        self.settle(conn, FAILED).await
    }

    /// No password was checked after all (the hashing queue was full): the attempt never happened.
    pub async fn cancel(self, conn: &mut AsyncPgConnection) -> QueryResult<()> {
        diesel::delete(login_attempts::table.find(self.id))
            .execute(conn)
            .await
            .map(drop)
    }

    async fn settle(&self, conn: &mut AsyncPgConnection, outcome: &str) -> QueryResult<()> {
        diesel::update(login_attempts::table.find(self.id))
            .set(login_attempts::outcome.eq(outcome))
            .execute(conn)
            .await
            .map(drop)
    }
}

type Attempts<'a> = login_attempts::BoxedQuery<'a, Pg>;

async fn observe(
    conn: &mut AsyncPgConnection,
    policy: &LoginPolicy,
    account: &str,
    client: &str,
    now: DateTime<Utc>,
) -> QueryResult<Observed> {
    let successes = || {
        login_attempts::table
            .filter(login_attempts::account.eq(account))
            .filter(login_attempts::outcome.eq(SUCCEEDED))
            .into_boxed()
    };
    let account_success = latest(conn, successes()).await?;
    let pair_success = latest(conn, successes().filter(login_attempts::client.eq(client))).await?;
    let failures = || {
        login_attempts::table
            .filter(login_attempts::outcome.ne(SUCCEEDED))
            .into_boxed()
    };
    let lockout_start = before(now, policy.lockout);
    let pair = tally(
        conn,
        failures()
            .filter(login_attempts::account.eq(account))
            .filter(login_attempts::client.eq(client))
            .filter(login_attempts::started_at.gt(lockout_start.max(floor(pair_success)))),
    )
    .await?;
    let client_tally = tally(
        conn,
        failures()
            .filter(login_attempts::client.eq(client))
            .filter(login_attempts::started_at.gt(lockout_start)),
    )
    .await?;
    let window_start = before(now, ACCOUNT_WINDOW).max(floor(account_success));
    let account_tally = tally(
        conn,
        failures()
            .filter(login_attempts::account.eq(account))
            .filter(login_attempts::started_at.gt(window_start)),
    )
    .await?;
    let delay = login_delays::table
        .find(account)
        .select((login_delays::failures, login_delays::last_attempt_at))
        .first::<Delay>(conn)
        .await
        .optional()?;
    Ok(Observed {
        pair,
        client: client_tally,
        account: account_tally,
        delay,
    })
}

fn floor(time: Option<DateTime<Utc>>) -> DateTime<Utc> {
    time.unwrap_or(DateTime::<Utc>::MIN_UTC)
}

async fn latest(
    conn: &mut AsyncPgConnection,
    query: Attempts<'_>,
) -> QueryResult<Option<DateTime<Utc>>> {
    query
        .select(diesel::dsl::max(login_attempts::started_at))
        .first(conn)
        .await
}

async fn tally(conn: &mut AsyncPgConnection, query: Attempts<'_>) -> QueryResult<Tally> {
    let (count, latest) = query
        .select((
            diesel::dsl::count_star(),
            diesel::dsl::max(login_attempts::started_at),
        ))
        .first(conn)
        .await?;
    Ok(Tally { count, latest })
}

/// Attempts older than every window carry no weight any more; keep the tables small.
async fn forget_old(
    conn: &mut AsyncPgConnection,
    policy: &LoginPolicy,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    let horizon = before(now, policy.lockout.max(DELAY_FORGOTTEN_AFTER));
    diesel::delete(login_attempts::table.filter(login_attempts::started_at.lt(horizon)))
        .execute(conn)
        .await?;
    diesel::delete(login_delays::table.filter(login_delays::last_attempt_at.lt(horizon)))
        .execute(conn)
        .await?;
    diesel::delete(login_lockouts::table.filter(login_lockouts::until.lt(now)))
        .execute(conn)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCKOUT: Duration = Duration::from_secs(900);

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn tally(count: i64, latest: i64) -> Tally {
        Tally {
            count,
            latest: Some(at(latest)),
        }
    }

    fn policy() -> LoginPolicy {
        LoginPolicy { lockout: LOCKOUT }
    }

    #[test]
    fn five_failures_lock_the_pair_until_the_lockout_ends() {
        let seen = Observed {
            pair: tally(4, 0),
            ..Observed::default()
        };
        assert!(matches!(
            policy().decide(&seen, at(1)),
            Decision::Admit { delay: None }
        ));
        let seen = Observed {
            pair: tally(5, 0),
            ..Observed::default()
        };
        assert_eq!(
            policy().decide(&seen, at(100)).wait(at(100)),
            Some(Duration::from_secs(800))
        );
    }

    #[test]
    fn fifty_failures_lock_the_client() {
        let seen = Observed {
            client: tally(50, 10),
            ..Observed::default()
        };
        assert_eq!(policy().decide(&seen, at(10)).wait(at(10)), Some(LOCKOUT));
        let seen = Observed {
            client: tally(49, 10),
            ..Observed::default()
        };
        assert!(matches!(
            policy().decide(&seen, at(10)),
            Decision::Admit { .. }
        ));
    }

    #[test]
    fn twenty_account_failures_start_a_doubling_delay() {
        // The 21st attempt, at the same instant as the 20th failure: wait a second.
        let seen = Observed {
            account: tally(20, 100),
            ..Observed::default()
        };
        assert_eq!(
            policy().decide(&seen, at(100)).wait(at(100)),
            Some(Duration::from_secs(1))
        );
        // A second later it is admitted, and the delay state starts.
        let Decision::Admit { delay: Some(delay) } = policy().decide(&seen, at(101)) else {
            panic!("the attempt after the delay is admitted");
        };
        assert_eq!(delay.failures, 1);
        assert_eq!(delay.last_attempt_at, at(101));
        // Then 2 s, 4 s, ... capped at 15 minutes.
        let mut delay = delay;
        let mut now = at(101);
        for expected in [2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900, 900] {
            let seen = Observed {
                delay: Some(delay),
                ..Observed::default()
            };
            assert_eq!(
                policy().decide(&seen, now).wait(now),
                Some(Duration::from_secs(expected))
            );
            now += chrono::Duration::seconds(expected as i64);
            let Decision::Admit { delay: Some(next) } = policy().decide(&seen, now) else {
                panic!("admitted once the delay has passed");
            };
            delay = next;
        }
    }

    #[test]
    fn the_delay_never_locks_for_good_and_is_forgotten_after_a_quiet_day() {
        let delay = Delay {
            failures: i32::MAX,
            last_attempt_at: at(0),
        };
        let seen = Observed {
            delay: Some(delay),
            ..Observed::default()
        };
        assert_eq!(policy().decide(&seen, at(0)).wait(at(0)), Some(MAX_DELAY));
        assert!(matches!(
            policy().decide(&seen, at(900)),
            Decision::Admit { .. }
        ));
        let day = DELAY_FORGOTTEN_AFTER.as_secs() as i64;
        assert_eq!(
            policy().decide(&seen, at(day + 1)),
            Decision::Admit { delay: None }
        );
    }

    #[test]
    fn the_longest_wait_wins() {
        let seen = Observed {
            pair: tally(5, 0),
            account: tally(20, 0),
            ..Observed::default()
        };
        assert_eq!(policy().decide(&seen, at(0)).wait(at(0)), Some(LOCKOUT));
    }
}
