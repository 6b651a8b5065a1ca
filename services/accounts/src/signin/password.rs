//! The first factor: who the user says they are, and the password that proves it. A login and a
//! step-up's `current_password` go through the same throttle, the same bcrypt and the same count.

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use crate::{
    audit::Origin,
    domain::{EmailAddress, FieldErrors, profile, profile::username_skeleton},
    http::client::ClientAddr,
    http::error::{ApiError, BAD_LOGIN, BAD_USERNAME_LOGIN},
    state::AppState,
    throttle::ThrottleError,
    users::{self, User},
};

/// What the client typed to say who it is.
#[derive(Debug, Clone, Copy)]
pub enum Identifier<'a> {
    Email(&'a str),
    Username(&'a str),
}

/// The account an identifier names, if any, and the key the throttle counts it under: the
/// account's address whatever was typed, so alternating email and username never doubles a
/// guesser's budget.
pub struct Identified {
    pub account: String,
    pub user: Option<User>,
    /// The 401 message for this kind of identifier.
    pub bad_login: &'static str,
}

/// Looks the identifier up. A client the lockout memory knows as locked is refused first, before
/// any database work, so a flood's 429s stay cheap.
pub async fn identify(
    state: &AppState,
    identifier: Identifier<'_>,
    client: &ClientAddr,
    now: DateTime<Utc>,
) -> Result<Identified, ApiError> {
    match identifier {
        Identifier::Username(typed) => {
            refuse_remembered(state, &unknown_username(typed), client, now)?;
            // A name registration would refuse (a NUL byte, 10,000 characters) has no account.
            let mut refused = FieldErrors::new();
            let user = match profile::username(&mut refused, typed) {
                Some(_) if refused.is_empty() => {
                    let mut conn = state.pool.get().await?;
                    users::find_by_username(&mut conn, typed).await?
                }
                _ => None,
            };
            let account = user
                .as_ref()
                .map_or_else(|| unknown_username(typed), |u| u.email.clone());
            // The name's account, now known, may be locked for this client.
            refuse_remembered(state, &account, client, now)?;
            Ok(Identified {
                account,
                user,
                bad_login: BAD_USERNAME_LOGIN,
            })
        }
        Identifier::Email(typed) => {
            let address = EmailAddress::parse(typed).ok();
            let account = address
                .as_ref()
                .map_or_else(|| unparseable_account(typed), |a| a.as_str().to_string());
            refuse_remembered(state, &account, client, now)?;
            let user = match &address {
                Some(address) => {
                    let mut conn = state.pool.get().await?;
                    users::find_by_email(&mut conn, address.as_str()).await?
                }
                None => None,
            };
            Ok(Identified {
                account,
                user,
                bad_login: BAD_LOGIN,
            })
        }
    }
}

/// Whether `password` is `user`'s and the account may sign in, counted by the login throttle
/// under `account` for `client` (a refusal is 429 before bcrypt). An unknown account, an account
/// without a password and a deactivated one cost the same bcrypt and count the same failure.
pub async fn check(
    state: &AppState,
    account: &str,
    client: &ClientAddr,
    origin: &Origin,
    user: Option<&User>,
    password: SecretString,
) -> Result<bool, ApiError> {
    let mut conn = state.pool.get().await?;
    let attempt = state
        .login_guard
        .begin(&mut conn, account, client, origin, Utc::now())
        .await
        .map_err(counted)?;
    // No connection is held while waiting for bcrypt, so a login storm cannot take the pool from
    // token-authenticated requests.
    drop(conn);
    let verified = state
        .hasher
        .verify(&password, user.and_then(|u| u.password_hash.clone()))
        .await;
    let mut conn = state.pool.get().await?;
    match verified {
        Err(e) => {
            attempt.cancel(&mut conn).await?;
            Err(e.into())
        }
        Ok(true) if user.is_some_and(|u| u.active) => {
            attempt.succeeded(&mut conn).await?;
            Ok(true)
        }
        Ok(_) => {
            attempt.failed(&mut conn).await?;
            Ok(false)
        }
    }
}

fn refuse_remembered(
    state: &AppState,
    account: &str,
    client: &ClientAddr,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    state
        .login_guard
        .refuse_remembered(account, client, now)
        .map_err(counted)
        .map_err(ApiError::from)
}

/// Counts a throttled login in the metrics.
fn counted(e: ThrottleError) -> ThrottleError {
    if matches!(e, ThrottleError::Throttled(_)) {
        metrics::counter!("accounts_logins_total", "outcome" => "locked").increment(1);
    }
    e
}

/// The throttle key of a login whose email does not parse: such an address has no account, but
/// guessing at it is still counted, under a bounded key.
fn unparseable_account(email: &str) -> String {
    format!("unparseable:{:x}", Sha256::digest(email.to_lowercase()))
}

/// The throttle key of a login by a username no account has, bounded like the one above.
fn unknown_username(typed: &str) -> String {
    format!(
        "username:{:x}",
        Sha256::digest(username_skeleton(typed.trim()))
    )
}
