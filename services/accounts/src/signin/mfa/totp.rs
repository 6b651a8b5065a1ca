//! TOTP (RFC 6238: SHA-1, 6 digits, 30 s steps, one step of skew either way). The secret is sealed
//! under the encryption key and bound to its user; a code is accepted once, by moving the stored
//! step forward with a compare-and-set.

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use rand::RngCore;
use totp_rs::{Builder, Secret, Totp};
use uuid::Uuid;

use crate::{schema::totp_authenticators, state::AppState, tokens::SealingKey};

/// 160 bits, as RFC 4226 recommends.
const SECRET_LEN: usize = 20;

/// A pending secret for the user to scan: base32 and its `otpauth://` URI.
pub struct Enrolment {
    pub secret: String,
    pub uri: String,
}

fn context(user_id: Uuid) -> Vec<u8> {
    [b"totp:".as_slice(), user_id.as_bytes()].concat()
}

/// The generator for `secret`; `account` and `issuer` only label it in an authenticator app.
fn generator(secret: Vec<u8>, account: &str, issuer: &str) -> Option<Totp> {
    Builder::new()
        .with_secret(Secret::from(secret))
        .with_account_name(account)
        .with_issuer(Some(issuer))
        .build()
        .ok()
}

/// The time step `code` matches for `secret` now (within one step either way), if any.
pub fn matched_step(secret: Vec<u8>, code: &str, now: u64) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Builder::new()
        .with_secret(Secret::from(secret))
        .build()
        .ok()?
        .check(&code, now)
}

fn now() -> u64 {
    u64::try_from(Utc::now().timestamp()).unwrap_or_default()
}

/// Replaces the user's pending secret with a new one, which only `session_id` may confirm.
/// Nothing else changes until it is confirmed.
pub async fn enrol(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    user_id: Uuid,
    session_id: Uuid,
    email: &str,
) -> QueryResult<Enrolment> {
    let mut secret = vec![0u8; SECRET_LEN];
    rand::rng().fill_bytes(&mut secret);
    let sealed = seal(&state.sealing, user_id, &secret);
    diesel::insert_into(totp_authenticators::table)
        .values((
            totp_authenticators::user_id.eq(user_id),
            totp_authenticators::pending_secret.eq(&sealed),
            totp_authenticators::pending_session.eq(session_id),
        ))
        .on_conflict(totp_authenticators::user_id)
        .do_update()
        .set((
            totp_authenticators::pending_secret.eq(&sealed),
            totp_authenticators::pending_session.eq(session_id),
            totp_authenticators::updated_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await?;
    // The otpauth format refuses a colon in either label; the app shows a space instead.
    let label = |s: &str| s.replace(':', " ");
    let generator = generator(secret, &label(email), &label(&state.settings.product_name))
        .expect("a 160-bit secret with labels free of colons builds a generator");
    Ok(Enrolment {
        secret: generator.secret().to_base32(),
        uri: generator.to_url().unwrap_or_default(),
    })
}

fn seal(key: &SealingKey, user_id: Uuid, secret: &[u8]) -> Vec<u8> {
    key.seal(secret, &context(user_id))
        .expect("AES-GCM seals 20 bytes")
}

/// What confirming a pending secret came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Confirmation {
    Confirmed,
    /// No secret is pending for this session (another session's does not count).
    NothingPending,
    /// The code is wrong, or its step already spent.
    WrongCode,
}

/// Confirms the pending secret that `session_id` enrolled, with a code from it: it becomes the
/// user's TOTP, and the code's step is spent. Lock the user first.
pub async fn confirm(
    conn: &mut AsyncPgConnection,
    key: &SealingKey,
    user_id: Uuid,
    session_id: Uuid,
    code: &str,
) -> QueryResult<Confirmation> {
    let row: Option<(Option<Vec<u8>>, Option<Uuid>, i64)> = totp_authenticators::table
        .find(user_id)
        .select((
            totp_authenticators::pending_secret,
            totp_authenticators::pending_session,
            totp_authenticators::last_step,
        ))
        .for_update()
        .first(conn)
        .await
        .optional()?;
    let Some((Some(pending), Some(enrolled_by), last_step)) = row else {
        return Ok(Confirmation::NothingPending);
    };
    if enrolled_by != session_id {
        return Ok(Confirmation::NothingPending);
    }
    let Some(secret) = key.open(&pending, &context(user_id)) else {
        return Ok(Confirmation::NothingPending);
    };
    let Some(step) = matched_step(secret, code, now()).and_then(|s| i64::try_from(s).ok()) else {
        return Ok(Confirmation::WrongCode);
    };
    if step <= last_step {
        return Ok(Confirmation::WrongCode);
    }
    let now = Utc::now();
    diesel::update(totp_authenticators::table.find(user_id))
        .set((
            totp_authenticators::secret.eq(Some(pending)),
            totp_authenticators::pending_secret.eq(None::<Vec<u8>>),
            totp_authenticators::pending_session.eq(None::<Uuid>),
            // The database's clock, as every device sighting in this transaction uses it.
            totp_authenticators::enabled_at.eq(diesel::dsl::sql::<
                diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>,
            >("now()")),
            totp_authenticators::last_step.eq(step),
            totp_authenticators::updated_at.eq(now),
        ))
        .execute(conn)
        .await?;
    Ok(Confirmation::Confirmed)
}

/// Whether `code` is the user's current TOTP code, spending its step: the same code never works
/// twice, even from parallel requests (the step only moves forward, in one conditional UPDATE).
pub async fn verify(
    conn: &mut AsyncPgConnection,
    key: &SealingKey,
    user_id: Uuid,
    code: &str,
) -> QueryResult<bool> {
    let sealed: Option<Option<Vec<u8>>> = totp_authenticators::table
        .find(user_id)
        .select(totp_authenticators::secret)
        .first(conn)
        .await
        .optional()?;
    let Some(secret) = sealed
        .flatten()
        .and_then(|s| key.open(&s, &context(user_id)))
    else {
        return Ok(false);
    };
    let Some(step) = matched_step(secret, code, now()).and_then(|s| i64::try_from(s).ok()) else {
        return Ok(false);
    };
    let advanced = diesel::update(
        totp_authenticators::table
            .find(user_id)
            .filter(totp_authenticators::secret.is_not_null())
            .filter(totp_authenticators::last_step.lt(step)),
    )
    .set(totp_authenticators::last_step.eq(step))
    .execute(conn)
    .await?;
    Ok(advanced == 1)
}

/// When the user's TOTP was turned on, if it is.
pub async fn enabled_at(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
) -> QueryResult<Option<chrono::DateTime<Utc>>> {
    totp_authenticators::table
        .find(user_id)
        .select(totp_authenticators::enabled_at)
        .first(conn)
        .await
        .optional()
        .map(Option::flatten)
}

/// Removes the user's TOTP, confirmed or pending; `true` when a confirmed one went.
pub async fn remove(conn: &mut AsyncPgConnection, user_id: Uuid) -> QueryResult<bool> {
    let removed: Vec<Option<Vec<u8>>> = diesel::delete(totp_authenticators::table.find(user_id))
        .returning(totp_authenticators::secret)
        .get_results(conn)
        .await?;
    Ok(removed.iter().any(Option::is_some))
}

/// Removes a TOTP confirmed at or after `since` (a takeover's), and any pending one (whoever
/// enrolled it); `true` when a confirmed one went.
pub async fn remove_enabled_since(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    since: Option<chrono::DateTime<Utc>>,
) -> QueryResult<bool> {
    diesel::update(totp_authenticators::table.find(user_id))
        .set((
            totp_authenticators::pending_secret.eq(None::<Vec<u8>>),
            totp_authenticators::pending_session.eq(None::<Uuid>),
        ))
        .execute(conn)
        .await?;
    let mut query = diesel::delete(totp_authenticators::table.find(user_id)).into_boxed();
    if let Some(since) = since {
        query = query.filter(
            totp_authenticators::enabled_at
                .is_null()
                .or(totp_authenticators::enabled_at.ge(since)),
        );
    }
    let removed: Vec<Option<Vec<u8>>> = query
        .returning(totp_authenticators::secret)
        .get_results(conn)
        .await?;
    Ok(removed.iter().any(Option::is_some))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238, Appendix B: the SHA-1 seed and its 8-digit values; our 6 digits are their last
    /// six (the truncation is the same, modulo 10^6).
    #[test]
    fn matches_the_rfc_6238_vectors() {
        let seed = b"12345678901234567890".to_vec();
        let vectors = [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ];
        for (time, eight) in vectors {
            let code = &eight[2..];
            assert_eq!(
                matched_step(seed.clone(), code, time),
                Some(time / 30),
                "{time}"
            );
        }
    }

    #[test]
    fn one_step_of_skew_either_way_and_no_more() {
        let seed = b"12345678901234567890".to_vec();
        // "287082" is the code of step 1 (t = 59).
        assert_eq!(matched_step(seed.clone(), "287082", 59 + 30), Some(1));
        assert_eq!(matched_step(seed.clone(), "287082", 59 - 30), Some(1));
        assert_eq!(matched_step(seed.clone(), "287082", 59 + 60), None);
        assert_eq!(matched_step(seed.clone(), "287 082", 59), Some(1));
        for junk in ["", "28708", "2870820", "28708a", "２８７０８２", "287082\0"] {
            assert_eq!(matched_step(seed.clone(), junk, 59), None, "{junk:?}");
        }
    }
}
