//! What this replica has learnt from Postgres about lockouts, so a locked client's further
//! attempts are refused in memory: no transaction, no lock, no row.
//!
//! Postgres stays the authority. A lockout is remembered until it ends, but for at most
//! [`ASK_AGAIN_AFTER`] before Postgres is asked again: a lock can end early (the attempts in flight
//! that made it succeed; a success resets the account's delay), and another replica may have
//! learnt something since. A flood then costs one read-only transaction a second per replica,
//! instead of one with writes per request.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use chrono::{DateTime, Utc};

use super::{
    after,
    login::{Lock, Scope},
};

/// How long a refusal is taken from memory before Postgres decides again.
pub const ASK_AGAIN_AFTER: Duration = Duration::from_secs(1);
/// Beyond this many remembered lockouts, the ended ones are forgotten at once.
const TIDY_ABOVE: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Remembered {
    /// When the lock ends (Retry-After counts to it).
    until: DateTime<Utc>,
    /// When to stop trusting this memory.
    ask_again_at: DateTime<Utc>,
}

#[derive(Default)]
pub struct Lockouts {
    locks: Mutex<HashMap<(Scope, String), Remembered>>,
}

/// Never the keys: they are full addresses and client IPs, which no log may carry.
impl std::fmt::Debug for Lockouts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let remembered = self
            .locks
            .lock()
            .map(|locks| locks.len())
            .unwrap_or_default();
        f.debug_struct("Lockouts")
            .field("remembered", &remembered)
            .finish()
    }
}

impl Lockouts {
    /// When the longest remembered lock on `account` or `client` ends, if one holds at `now`.
    pub fn until(&self, account: &str, client: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        if locks.is_empty() {
            return None;
        }
        [Scope::Pair, Scope::Client, Scope::Account]
            .into_iter()
            .filter_map(|scope| locks.get(&(scope, scope.key(account, client))))
            .filter(|r| now < r.until && now < r.ask_again_at)
            .map(|r| r.until)
            .max()
    }

    /// Remembers what Postgres answered at `now`.
    pub fn learn(&self, account: &str, client: &str, held: &[Lock], now: DateTime<Utc>) {
        let ask_again_at = after(now, ASK_AGAIN_AFTER);
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        if locks.len() > TIDY_ABOVE {
            locks.retain(|_, r| now < r.until && now < r.ask_again_at);
        }
        for lock in held {
            locks.insert(
                (lock.scope, lock.scope.key(account, client)),
                Remembered {
                    until: lock.until,
                    ask_again_at,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn a_lock_is_remembered_for_its_key_until_it_ends_or_postgres_is_due() {
        let lockouts = Lockouts::default();
        let pair = Lock {
            scope: Scope::Pair,
            until: at(900),
        };
        lockouts.learn("a@example.com", "192.0.2.1", &[pair], at(0));
        assert_eq!(
            lockouts.until("a@example.com", "192.0.2.1", at(0)),
            Some(at(900))
        );
        // Another account from the same client, or the account from another client: not this lock.
        assert_eq!(lockouts.until("b@example.com", "192.0.2.1", at(0)), None);
        assert_eq!(lockouts.until("a@example.com", "192.0.2.2", at(0)), None);
        // After a second, Postgres decides again.
        assert_eq!(lockouts.until("a@example.com", "192.0.2.1", at(1)), None);

        let client = Lock {
            scope: Scope::Client,
            until: at(10),
        };
        lockouts.learn("c@example.com", "192.0.2.3", &[client], at(9));
        assert_eq!(
            lockouts.until("anyone@example.com", "192.0.2.3", at(9)),
            Some(at(10))
        );
        let short = Lock {
            scope: Scope::Account,
            until: at(20),
        };
        lockouts.learn("d@example.com", "192.0.2.4", &[short], at(19));
        assert_eq!(
            lockouts.until("d@example.com", "198.51.100.1", at(19)),
            Some(at(20))
        );
        // Ended.
        assert_eq!(
            lockouts.until("d@example.com", "198.51.100.1", at(20)),
            None
        );
    }
}
