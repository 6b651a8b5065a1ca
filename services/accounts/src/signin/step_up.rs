//! Step-up: security settings need a recent, strong sign-in. A session whose credentials were
//! presented within `ACCOUNTS_REAUTH_SECONDS`, at `aal2` when the account has a second factor,
//! passes as it is; otherwise the request proves it again with `current_password`, plus a code
//! when the account has a second factor. Such codes count for the replay guard and the guessing
//! limits like a login's.

use chrono::Utc;
use diesel_async::AsyncConnection;
use secrecy::SecretString;

use super::{
    Client,
    mfa::{self, Proof, Verdict},
    password,
};
use crate::{
    auth::Authenticated,
    db,
    http::error::{ApiError, BAD_CODE, CODE_NEEDED, TOO_MANY_CODES, WRONG_CURRENT_PASSWORD},
    state::AppState,
    users,
};

/// What a request offers to prove its caller is the owner, now.
#[derive(Debug, Default, Clone, Copy)]
pub struct Offered<'a> {
    pub current_password: Option<&'a str>,
    pub code: Option<&'a str>,
}

/// Whether the caller's session is recent and strong enough as it is.
pub fn fresh(state: &AppState, auth: &Authenticated, has_second_factor: bool) -> bool {
    let recent = Utc::now() - auth.auth_time()
        < chrono::Duration::from_std(state.settings.reauth).unwrap_or_default();
    recent && (!has_second_factor || auth.claims.aal.as_deref() == Some("aal2"))
}

/// Passes a caller whose session is fresh, or who proves it again here; otherwise 403
/// `reauthentication` (no password to offer, or none offered), 400 for a missing code or a wrong
/// password or code, 429 when guessing is throttled.
pub async fn require(
    state: &AppState,
    auth: &Authenticated,
    offered: Offered<'_>,
    client: &Client,
) -> Result<(), ApiError> {
    let mut conn = state.pool.get().await?;
    let factors = mfa::factors(&mut conn, auth.user.id).await?;
    drop(conn);
    let (has_second_factor, has_totp) = (factors.any(), factors.totp);
    if fresh(state, auth, has_second_factor) {
        return Ok(());
    }
    let current_password = offered.current_password.filter(|p| !p.is_empty());
    let (Some(current_password), Some(_)) = (current_password, &auth.user.password_hash) else {
        return Err(ApiError::Reauthenticate);
    };
    // An account whose only second factor is a passkey proves it by signing in again (a
    // passkey sign-in is fresh and aal2), not with a code here.
    if has_second_factor && !has_totp {
        return Err(ApiError::Reauthenticate);
    }
    if has_second_factor && offered.code.is_none_or(str::is_empty) {
        return Err(ApiError::field("code", CODE_NEEDED));
    }
    check_password(state, auth, current_password, client).await?;
    if has_second_factor {
        second_factor(state, auth, offered.code.unwrap_or_default(), client).await?;
    }
    Ok(())
}

/// The caller's current password, counted by the login throttle: 400 `current_password` when
/// wrong.
pub async fn check_password(
    state: &AppState,
    auth: &Authenticated,
    current_password: &str,
    client: &Client,
) -> Result<(), ApiError> {
    let origin = client.origin().by(auth.user.id);
    let matched = password::check(
        state,
        &auth.user.email,
        &client.addr,
        &origin,
        Some(&auth.user),
        SecretString::from(current_password),
    )
    .await?;
    if matched {
        Ok(())
    } else {
        Err(ApiError::field("current_password", WRONG_CURRENT_PASSWORD))
    }
}

/// Checks `code` (TOTP or recovery code) for the caller under its row lock: 400 `code` when wrong,
/// 429 when guessing is throttled.
pub async fn second_factor(
    state: &AppState,
    auth: &Authenticated,
    code: &str,
    client: &Client,
) -> Result<(), ApiError> {
    let origin = client.origin().by(auth.user.id);
    let attempt = mfa::Attempt::new(&client.device, &origin, &client.request_id);
    let mut conn = state.pool.get().await?;
    let verdict = db::retrying(async || {
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            let user = users::lock(conn, auth.user.id)
                .await?
                .ok_or(diesel::result::Error::NotFound)?;
            mfa::verify(conn, state, &user, Proof::either(code), &attempt).await
        })
        .await
    })
    .await?;
    match verdict {
        Verdict::Accepted => Ok(()),
        Verdict::Rejected => Err(ApiError::field("code", BAD_CODE)),
        Verdict::Throttled(retry_after) => Err(ApiError::Throttled {
            message: TOO_MANY_CODES,
            retry_after,
        }),
    }
}
