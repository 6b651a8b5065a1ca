//! Starting a password reset by mail: forgot-password, an email revert and a rejected sign-in all
//! end with it.

use diesel::QueryResult;
use diesel_async::AsyncPgConnection;
use events::{Event, PasswordResetRequested};

use crate::{links, outbox, state::AppState, telemetry::RequestId, users::User};

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
