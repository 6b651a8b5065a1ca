//! Getting an account back: a password reset by mail (forgot-password, an email revert and a
//! rejected sign-in all end with one), and what a revert or a reject takes from whoever else holds
//! the account.

use chrono::{DateTime, Utc};
use diesel::QueryResult;
use diesel_async::AsyncPgConnection;
use events::{Event, PasswordChanged, PasswordResetRequested};
use serde_json::json;

use crate::{
    audit::{self, Origin},
    http::telemetry::RequestId,
    outbox, sessions,
    signin::{devices, mfa, social},
    state::AppState,
    users::links,
    users::{self, User},
};

/// Puts a `password-reset-requested` event for `user` in the outbox, in the caller's transaction.
pub async fn mail_reset_link(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    user: &User,
    request_id: &RequestId,
) -> QueryResult<()> {
    let link = links::password_reset(state, user);
    let event = Event::PasswordResetRequested(PasswordResetRequested {
        user_id: user.id,
        email: user.email.clone(),
        username: user.username.clone(),
        reset_url: link.url,
        reset_expires_at: link.expires_at,
        locale: user.locale.clone(),
    });
    outbox::enqueue(conn, event, request_id).await
}

/// Takes the account back from an intruder who got in at `since` (or at an unknown time), in the caller's transaction, the
/// user's row locked: every session ends, the current password (which the intruder may know, or
/// have set) stops working, the email epoch moves (every confirmation and reset link mailed
/// before dies), the devices seen since `since` are forgotten, and a reset link goes to the
/// account's address, the only way back in. Returns the user as it is now.
pub async fn take_back(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    user: &User,
    since: Option<DateTime<Utc>>,
    request_id: &RequestId,
) -> QueryResult<User> {
    let user = users::remove_password(conn, user.id).await?;
    sessions::end_all(conn, user.id).await?;
    devices::forget_since(conn, user.id, since).await?;
    // A second factor the intruder added would lock the owner out after the reset, and recovery
    // codes the intruder generated would let them back in (with `None`, as for a revert, every
    // one goes: the owner enrols again).
    let removed_totp = mfa::totp::remove_enabled_since(conn, user.id, since).await?;
    // A passkey the intruder added would sign them straight back in.
    let removed_passkeys = mfa::passkeys::remove_since(conn, user.id, since).await? > 0;
    // Every recovery code: a set regenerated with a stolen session before the rejected sign-in
    // (no mail tells of it) would let the intruder back in after the reset. The owner, signed in
    // again with the authenticator, makes a new set.
    mfa::recovery_codes::remove_all(conn, user.id).await?;
    // A provider account the intruder linked would sign them straight back in.
    social::identities::unlink_since(conn, user.id, since).await?;
    if removed_totp || removed_passkeys {
        mfa::after_removal(conn, &user, request_id).await?;
    }
    if user.active {
        mail_reset_link(conn, state, &user, request_id).await?;
    }
    Ok(user)
}

/// After a password change (`action`: `password.changed`) or reset (`password.reset`), in the
/// caller's transaction, the user's row locked: every session ends, the second-factor guessing
/// counts start over (pending challenges died with the token version), the user is told, and
/// the audit records it.
pub async fn password_replaced(
    conn: &mut AsyncPgConnection,
    user: &User,
    action: &str,
    origin: &Origin,
    request_id: &RequestId,
) -> QueryResult<()> {
    sessions::end_all(conn, user.id).await?;
    mfa::guessing::clear(conn, user.id).await?;
    audit::record(conn, origin, action, Some(user.id), json!({})).await?;
    let event = Event::PasswordChanged(PasswordChanged {
        user_id: user.id,
        email: user.email.clone(),
        username: user.username.clone(),
        changed_at: Utc::now(),
        locale: user.locale.clone(),
    });
    outbox::enqueue(conn, event, request_id).await
}
