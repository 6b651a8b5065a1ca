//! What a signed-in client holds: an access token bound to its session, and the session's refresh
//! token. Registration, login and a password change begin sessions; refresh continues them.

use chrono::{DateTime, Utc};
use diesel::QueryResult;
use diesel_async::AsyncPgConnection;
use events::{Event, NewSignIn};

use super::Client;
use crate::{
    auth::authz::Grants,
    outbox,
    sessions::{self, Assurance, Session, Started},
    signin::devices,
    state::AppState,
    tokens::Purpose,
    users::links,
    users::{User, UserBody},
};

/// An access token for `user` in `session`: it carries the user's token version and the session,
/// so revoking either stops it at once, `auth_time` for reauthentication, and the user's grants.
pub fn access_token(state: &AppState, user: &User, session: &Session, grants: &Grants) -> String {
    let mut claims = state.tokens.claims(Purpose::Access, user.id);
    claims.ver = Some(user.token_version);
    claims.sid = Some(session.id);
    claims.auth_time = Some(session.auth_time.timestamp());
    claims.amr = session.amr.clone();
    claims.aal = Some(sessions::aal(&session.amr).into());
    claims.roles = grants.roles.clone();
    claims.permissions = grants.permissions.iter().cloned().collect();
    state.tokens.sign(&claims).token
}

/// The user as the client sees it, with the session's tokens.
pub fn body_with_tokens(
    state: &AppState,
    user: User,
    session: &Session,
    refresh_token: String,
    grants: &Grants,
) -> UserBody {
    let token = access_token(state, &user, session, grants);
    let mut body = UserBody::from(user);
    body.token = Some(token);
    body.refresh_token = Some(refresh_token);
    body
}

/// Whether a new sign-in from an unknown device should mail the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// A login: an unknown device gets a `new-sign-in` mail.
    NewDevice,
    /// Registration or a password change: the device is remembered, nobody is told.
    Silent,
}

/// Begins a session for `user`, whose credentials (as `assurance` says) were presented at
/// `auth_time`, from `device`. Records
/// the device, and for a device not seen lately puts a `new-sign-in` mail in the outbox. Runs in the
/// caller's transaction.
pub async fn begin(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    user: &User,
    client: &Client,
    auth_time: DateTime<Utc>,
    assurance: &Assurance,
    notice: Notice,
) -> QueryResult<Started> {
    let (device, request_id) = (&client.device, &client.request_id);
    let started = sessions::start(conn, user.id, device, auth_time, assurance).await?;
    let new_device =
        devices::remember(conn, user.id, &devices::key(&device.user_agent, &device.ip)).await?;
    if new_device && notice == Notice::NewDevice {
        let reject = links::sign_in_reject(state, user, started.session.id);
        let event = Event::NewSignIn(NewSignIn {
            user_id: user.id,
            email: user.email.clone(),
            username: user.username.clone(),
            device: devices::describe(&device.user_agent),
            ip: device.ip.clone(),
            signed_in_at: Utc::now(),
            reject_url: reject.url,
            reject_expires_at: reject.expires_at,
            locale: user.locale.clone(),
        });
        outbox::enqueue(conn, event, request_id).await?;
    }
    Ok(started)
}
