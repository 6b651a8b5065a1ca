//! A bounded memo of access tokens whose signature and claims already verified.
//!
//! Verifying an Ed25519 signature is the largest CPU cost of a token-authenticated request (about
//! 60 µs), and a client presents the same token for up to 15 minutes. The memo is keyed by the
//! whole token, so a hit is exactly a token that verified before; its expiry is checked again on
//! every hit. It only remembers what the token itself says: whether the session and the user's
//! token version are still live is read from the database on every request (see `auth`), so a
//! revocation takes effect at once whether or not the token is remembered here.

use std::{
    collections::HashMap,
    sync::{PoisonError, RwLock},
};

use super::Claims;

pub struct VerifiedTokens {
    capacity: usize,
    /// The leeway verification allows past `exp`, applied the same way on a hit.
    leeway: i64,
    entries: RwLock<HashMap<Box<str>, Claims>>,
}

impl VerifiedTokens {
    pub fn new(capacity: usize, leeway: i64) -> Self {
        Self {
            capacity,
            leeway,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The claims of `token` if it verified before and has not expired since.
    pub fn get(&self, token: &str, now: i64) -> Option<Claims> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(token)
            .filter(|claims| claims.exp >= now - self.leeway)
            .cloned()
    }

    /// Remembers a token that just verified. When full, expired entries go first; if most are
    /// still live, everything goes (the next requests simply verify again), which keeps inserts
    /// cheap however many distinct tokens arrive.
    pub fn insert(&self, token: &str, claims: &Claims, now: i64) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity {
            entries.retain(|_, c| c.exp >= now - self.leeway);
            if entries.len() >= self.capacity / 4 * 3 {
                entries.clear();
            }
        }
        entries.insert(token.into(), claims.clone());
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            iss: "http://localhost".into(),
            aud: "accounts-api".into(),
            sub: Uuid::new_v4(),
            exp,
            iat: exp - 900,
            jti: Uuid::new_v4(),
            typ: "access".into(),
            ver: Some(0),
            sid: Some(Uuid::new_v4()),
            auth_time: None,
            amr: Vec::new(),
            aal: None,
            roles: Vec::new(),
            permissions: Vec::new(),
            email: None,
            pwd: None,
            epoch: None,
        }
    }

    #[test]
    fn a_remembered_token_stops_working_when_it_expires() {
        let memo = VerifiedTokens::new(16, 5);
        memo.insert("a.b.c", &claims(1_000), 500);
        assert!(memo.get("a.b.c", 1_000).is_some());
        assert!(
            memo.get("a.b.c", 1_005).is_some(),
            "the same leeway as verification"
        );
        assert!(memo.get("a.b.c", 1_006).is_none());
        assert!(
            memo.get("a.b.x", 500).is_none(),
            "only the whole token matches"
        );
    }

    #[test]
    fn the_memo_never_grows_past_its_capacity() {
        let memo = VerifiedTokens::new(8, 5);
        for n in 0..100 {
            memo.insert(&format!("token-{n}"), &claims(10_000), 500);
            assert!(memo.len() <= 8);
        }
        // Expired entries are dropped first when full.
        let memo = VerifiedTokens::new(4, 0);
        for n in 0..3 {
            memo.insert(&format!("old-{n}"), &claims(100), 50);
        }
        memo.insert("live", &claims(10_000), 50);
        memo.insert("newer", &claims(10_000), 500);
        assert!(memo.get("live", 500).is_some());
        assert!(memo.get("newer", 500).is_some());
        assert_eq!(memo.len(), 2);
    }
}
