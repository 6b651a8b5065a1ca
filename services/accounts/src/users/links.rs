//! The signed links mail carries. Each is a JWT for one purpose, in the `token` query parameter of a
//! page or API route under `ACCOUNTS_PUBLIC_URL`.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use events::{EmailConfirmationRequested, Event};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    config::Settings,
    http::telemetry::RequestId,
    outbox,
    schema::used_links,
    state::AppState,
    tokens::{Claims, Purpose, TokenIssuer},
    users::User,
};

/// What signing a link takes: the token issuer, and the settings that say where links point and
/// how long they live. The service has them in its state; the CLI loads them itself.
pub trait Signer: Sync {
    fn tokens(&self) -> &TokenIssuer;
    fn settings(&self) -> &Settings;
}

impl Signer for AppState {
    fn tokens(&self) -> &TokenIssuer {
        &self.tokens
    }

    fn settings(&self) -> &Settings {
        &self.settings
    }
}

/// The signer of the command line: the same key and settings as the service's.
pub struct OfflineSigner {
    pub tokens: TokenIssuer,
    pub settings: Settings,
}

impl Signer for OfflineSigner {
    fn tokens(&self) -> &TokenIssuer {
        &self.tokens
    }

    fn settings(&self) -> &Settings {
        &self.settings
    }
}

/// A link and when it stops working.
pub struct Link {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

fn link(state: &impl Signer, path: &str, claims: &Claims) -> Link {
    let signed = state.tokens().sign(claims);
    let mut url = state.settings().public_link(path);
    url.query_pairs_mut().append_pair("token", &signed.token);
    Link {
        url: url.to_string(),
        expires_at: signed.expires_at,
    }
}

/// Confirms `user`'s current address in the current email epoch; a link for a previous address,
/// or for this address before the email moved away and back, is void.
pub fn confirmation(state: &impl Signer, user: &User) -> Link {
    let mut claims = state.tokens().claims(Purpose::EmailConfirmation, user.id);
    claims.email = Some(user.email.clone());
    claims.epoch = Some(user.email_epoch);
    link(state, "api/users/confirm", &claims)
}

/// Ties a reset token to the password it replaces: once the password changes, the token is void.
/// An account without a usable password has a fingerprint too; reset links are also single use
/// ([`consume`]), so one used while the password was unusable stays used when it is again.
pub fn password_fingerprint(user: &User) -> String {
    let hash = user.password_hash.as_deref().unwrap_or_default();
    URL_SAFE_NO_PAD.encode(&Sha256::digest(hash.as_bytes())[..12])
}

/// Whether a reset link's claims still hold for `user`: active, the same password, the same
/// email epoch (an email change or revert voids links mailed before it).
pub fn reset_holds(claims: &Claims, user: &User) -> bool {
    user.active
        && claims.epoch == Some(user.email_epoch)
        && claims.pwd.as_deref() == Some(password_fingerprint(user).as_str())
}

/// Opens the reset page (or the operator's own, `ACCOUNTS_RESET_PASSWORD_URL`).
pub fn password_reset(state: &impl Signer, user: &User) -> Link {
    let mut claims = state.tokens().claims(Purpose::PasswordReset, user.id);
    claims.pwd = Some(password_fingerprint(user));
    claims.epoch = Some(user.email_epoch);
    match &state.settings().reset_password_url {
        Some(base) => {
            let signed = state.tokens().sign(&claims);
            let mut url = base.clone();
            url.query_pairs_mut().append_pair("token", &signed.token);
            Link {
                url: url.to_string(),
                expires_at: signed.expires_at,
            }
        }
        None => link(state, "account/reset-password", &claims),
    }
}

/// When a revert link mailed now stops working.
pub fn email_revert_expiry(state: &impl Signer) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(state.settings().email_revert).unwrap_or_default()
}

/// "This wasn't me", mailed to the old address after the email change `change_id` (the link's
/// `jti`, see [`crate::users::email_changes`]): undoes that change and every later one.
pub fn email_revert(
    state: &impl Signer,
    user_id: Uuid,
    change_id: Uuid,
    expires_at: DateTime<Utc>,
) -> Link {
    let mut claims = state.tokens().claims(Purpose::EmailRevert, user_id);
    claims.jti = change_id;
    claims.exp = expires_at.timestamp();
    link(state, "account/revert-email", &claims)
}

/// "This wasn't me" of a new sign-in notice mailed to `user`'s address: names the session it
/// rejects, and the address, so that a revert which undoes that address voids it
/// ([`crate::users::email_changes::speaks_for`]).
pub fn sign_in_reject(state: &impl Signer, user: &User, session_id: Uuid) -> Link {
    let mut claims = state.tokens().claims(Purpose::SignInReject, user.id);
    claims.sid = Some(session_id);
    claims.email = Some(user.email.clone());
    link(state, "account/reject-sign-in", &claims)
}

/// Puts an `email-confirmation-requested` event for `user`'s current address in the outbox, in the
/// caller's transaction: a resend, an operator's, or the confirmation of a changed address.
pub async fn mail_confirmation(
    conn: &mut AsyncPgConnection,
    state: &impl Signer,
    user: &User,
    request_id: &RequestId,
) -> QueryResult<()> {
    let link = confirmation(state, user);
    let event = Event::EmailConfirmationRequested(EmailConfirmationRequested {
        user_id: user.id,
        email: user.email.clone(),
        username: user.username.clone(),
        confirmation_url: link.url,
        confirmation_expires_at: link.expires_at,
        locale: user.locale.clone(),
    });
    outbox::enqueue(conn, event, request_id).await
}

/// Marks a single-use link as used, in the caller's transaction; `false` when it already was.
pub async fn consume(conn: &mut AsyncPgConnection, claims: &Claims) -> QueryResult<bool> {
    let expires_at = DateTime::from_timestamp(claims.exp, 0).unwrap_or_else(Utc::now);
    let inserted = diesel::insert_into(used_links::table)
        .values((
            used_links::jti.eq(claims.jti),
            used_links::expires_at.eq(expires_at),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    // An expired link fails verification anyway; its record can go.
    diesel::delete(used_links::table.filter(used_links::expires_at.lt(Utc::now())))
        .execute(conn)
        .await?;
    Ok(inserted == 1)
}
