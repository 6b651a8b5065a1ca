//! Undoing an email change: the "this wasn't me" link mailed to the old address.

use actix_web::{HttpResponse, web};
use chrono::Utc;
use diesel_async::AsyncConnection;

use super::{
    confirm::page,
    schemas::ErrorBody,
    sessions::{BAD_ACTION_LINK, TokenQuery, TokenRequest},
};
use serde_json::json;

use crate::{
    audit::{self, Origin},
    db,
    http::error::ApiError,
    http::json::JsonObject,
    http::telemetry::RequestId,
    signin::recovery,
    state::AppState,
    tokens::Purpose,
    users::email_changes,
    users::{self, UserChanges},
};

pub const ADDRESS_TAKEN: &str = "The previous address now belongs to another account.";

enum Reverted {
    Done,
    Used,
}

/// Restores the address the link was mailed to (verified), undoes every later email change (their
/// revert links die with it), ends every session, makes the current password unusable and mails a
/// reset link to the restored address: whoever changed the email is out, and only the owner of
/// the restored address gets back in.
#[utoipa::path(post, path = "/api/users/email/revert", tag = "user", request_body = TokenRequest,
    responses((status = 204, description = "The old address is back; every session ended; the password stops working until the reset link on its way is used"),
        (status = 400, description = "Invalid, expired or already used link (a revert of an earlier change undoes later ones), or the old address was taken meanwhile", body = ErrorBody)))]
pub async fn revert(
    state: web::Data<AppState>,
    request_id: RequestId,
    origin: Origin,
    body: JsonObject<TokenRequest>,
) -> Result<HttpResponse, ApiError> {
    let claims = body.into_inner().verify(&state, Purpose::EmailRevert)?;
    let mut conn = state.pool.get().await?;
    let outcome = db::retrying(async || {
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            let Some(user) = users::lock(conn, claims.sub).await? else {
                return Ok(Reverted::Used);
            };
            // The link's jti names its change.
            let Some(change) = email_changes::settle_from(conn, user.id, claims.jti).await? else {
                return Ok(Reverted::Used);
            };
            if users::find_by_email(conn, &change.old_email)
                .await?
                .is_some_and(|other| other.id != user.id)
            {
                // Rolls back the settling too: this transaction is abandoned.
                return Err(diesel::result::Error::RollbackTransaction);
            }
            let changes = UserChanges {
                email: Some(change.old_email.clone()),
                verified: Some(true),
                updated_at: Some(Utc::now()),
                ..UserChanges::default()
            };
            let restored = users::update(conn, user.id, &changes).await?;
            // When the intruder got in is unknown (a stolen token may be old, the sign-in that
            // led to the change earlier still): every device is new again, so the owner hears
            // of the next sign-in from each.
            recovery::take_back(conn, &state, &restored, None, &request_id).await?;
            let origin = origin.clone().by(user.id);
            let details = json!({ "change": change.id });
            audit::record(conn, &origin, "email.reverted", Some(user.id), details).await?;
            Ok(Reverted::Done)
        })
        .await
    })
    .await;
    match outcome {
        Ok(Reverted::Done) => {
            tracing::info!(user_id = %claims.sub, "an email change was reverted by its owner");
            Ok(HttpResponse::NoContent().finish())
        }
        Ok(Reverted::Used) => Err(ApiError::field("token", BAD_ACTION_LINK)),
        Err(diesel::result::Error::RollbackTransaction) => {
            Err(ApiError::field("token", ADDRESS_TAKEN))
        }
        Err(e) if db::violates(&e, users::EMAIL_KEY) => {
            Err(ApiError::field("token", ADDRESS_TAKEN))
        }
        Err(e) => Err(e.into()),
    }
}

/// The page the email-changed mail links to. It does not consume the token; its button's POST does.
#[utoipa::path(get, path = "/account/revert-email", tag = "pages", params(TokenQuery),
    responses((status = 200, description = "HTML page whose button posts to /api/users/email/revert", content_type = "text/html"),
        (status = 400, description = "A malformed query string", body = ErrorBody)))]
pub async fn revert_page(
    state: web::Data<AppState>,
    query: web::Query<TokenQuery>,
) -> Result<HttpResponse, ApiError> {
    let token = query.into_inner().token.unwrap_or_default();
    page(
        &state,
        "action.html",
        &[
            ("token", &token),
            ("title", "Undo the email change"),
            (
                "explanation",
                "If you did not change the email address of your account, undo it here: your previous address comes back (and any later change is undone), every device is signed out, the current password stops working, and we mail you a link to choose a new one.",
            ),
            ("button", "Restore my previous address"),
            ("endpoint", "../api/users/email/revert"),
            (
                "done",
                "Your previous address is back, every device is signed out and the password no longer works. Check your mailbox for a link to choose a new one.",
            ),
        ],
    )
}
