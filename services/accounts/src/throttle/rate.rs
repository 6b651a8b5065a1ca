//! A token bucket per client, in memory, in front of the routes a flood aims at: login,
//! registration and the mail-sending requests. It refuses a flood before the body is checked
//! against anything in the database, so one client's flood costs about what a `/healthz` costs.
//!
//! The bucket is generous (an office behind one address logs in more than once a second at nine
//! o'clock); the real limits stay in Postgres (the login guard, the hourly limits). Each replica
//! has its own buckets, so N replicas let a client through N times as fast: the bucket bounds
//! cost, not guessing.

use std::{num::NonZeroU32, time::Duration};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};

use super::{ThrottleError, Throttled};
use crate::http::client::ClientAddr;

/// Requests a client may make at once on one route...
pub const BURST: NonZeroU32 = NonZeroU32::MIN.saturating_add(59);
/// ...refilled at this many a second.
pub const PER_SECOND: NonZeroU32 = NonZeroU32::MIN;

pub const TOO_FAST: &str = "Too many requests from your network. Try again shortly.";

/// The routes a client's buckets cover, one bucket each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Login,
    Registration,
    /// Password resets and confirmation resends.
    MailRequest,
    /// Social sign-ins started (each keeps a flow).
    SocialSignIn,
}

pub struct ClientRate {
    buckets: DefaultKeyedRateLimiter<(Route, String)>,
}

impl Default for ClientRate {
    fn default() -> Self {
        let quota = Quota::per_second(PER_SECOND).allow_burst(BURST);
        Self {
            buckets: RateLimiter::keyed(quota),
        }
    }
}

impl std::fmt::Debug for ClientRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRate")
            .field("clients", &self.buckets.len())
            .finish()
    }
}

impl ClientRate {
    /// Takes a token from `client`'s bucket for `route`, or says how long until there is one.
    pub fn admit(&self, route: Route, client: &ClientAddr) -> Result<(), ThrottleError> {
        self.buckets
            .check_key(&(route, client.throttle_key()))
            .map_err(|not_until| {
                metrics::counter!("accounts_requests_throttled_total", "by" => "rate").increment(1);
                let wait = not_until.wait_time_from(self.buckets.clock().now());
                ThrottleError::Throttled(Throttled {
                    retry_after: Duration::from_secs(wait.as_secs() + 1),
                    message: TOO_FAST,
                })
            })
    }

    /// Forgets the buckets that have refilled: they hold nothing a new bucket would not.
    pub fn forget_full(&self) {
        self.buckets.retain_recent();
        self.buckets.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_burst_then_waits_and_others_are_unaffected() {
        let rate = ClientRate::default();
        let flooder = ClientAddr::resolve(Some("192.0.2.1".parse().unwrap()), [], &[]);
        let other = ClientAddr::resolve(Some("192.0.2.2".parse().unwrap()), [], &[]);
        for _ in 0..BURST.get() {
            rate.admit(Route::Login, &flooder).unwrap();
        }
        let Err(ThrottleError::Throttled(refused)) = rate.admit(Route::Login, &flooder) else {
            panic!("the burst is spent");
        };
        assert!(refused.retry_after >= Duration::from_secs(1));
        assert_eq!(refused.message, TOO_FAST);
        // Its other routes and other clients have their own buckets.
        rate.admit(Route::MailRequest, &flooder).unwrap();
        rate.admit(Route::Login, &other).unwrap();
    }
}
