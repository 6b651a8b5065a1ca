//! The caller's sessions (devices): list them, end one, and the "this wasn't me" link of a new
//! sign-in notice.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use diesel_async::AsyncConnection;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{confirm::page, schemas::ErrorBody};
use serde_json::json;

use crate::{
    audit::{self, Origin},
    auth::Authenticated,
    db,
    http::error::ApiError,
    http::json::JsonObject,
    http::telemetry::RequestId,
    sessions::{self, Ending},
    signin::recovery,
    state::AppState,
    tokens::Purpose,
    users,
    users::email_changes,
    users::links,
};

pub const BAD_ACTION_LINK: &str = "The link is invalid, expired or already used.";

/// One session as its owner sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionBody {
    id: Uuid,
    created_at: DateTime<Utc>,
    last_used_at: DateTime<Utc>,
    user_agent: String,
    ip: String,
    /// Whether this is the session of the token making the request.
    current: bool,
    /// How the session began (RFC 8176): `pwd`, plus `otp` and `mfa` after a second factor.
    amr: Vec<String>,
    /// `aal1`, or `aal2` after two factors.
    aal: String,
}

impl SessionBody {
    /// `current` is the caller's session, when the caller is the owner.
    pub fn of(session: sessions::Session, current: Option<Uuid>) -> Self {
        Self {
            current: Some(session.id) == current,
            id: session.id,
            created_at: session.created_at,
            last_used_at: session.last_used_at,
            user_agent: session.user_agent,
            ip: session.ip,
            aal: sessions::aal(&session.amr).into(),
            amr: session.amr,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionsBody {
    sessions: Vec<SessionBody>,
}

#[utoipa::path(get, path = "/api/user/sessions", tag = "sessions", security(("token" = [])),
    responses((status = 200, description = "The caller's live sessions, newest first", body = SessionsBody),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "Deactivated", body = ErrorBody)))]
pub async fn list(
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.get().await?;
    let sessions = sessions::live(&mut conn, auth.user.id)
        .await?
        .into_iter()
        .map(|s| SessionBody::of(s, Some(auth.session_id)))
        .collect();
    Ok(HttpResponse::Ok().json(SessionsBody { sessions }))
}

#[utoipa::path(delete, path = "/api/user/sessions/{id}", tag = "sessions", security(("token" = [])),
    params(("id" = Uuid, Path, description = "A session id from the list")),
    responses((status = 204, description = "Ended: its refresh token and access tokens stop at once"),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "Deactivated", body = ErrorBody),
        (status = 404, description = "No such live session of the caller", body = ErrorBody)))]
pub async fn delete(
    auth: Authenticated,
    state: web::Data<AppState>,
    origin: Origin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    // Not a uuid, another user's session, or one already ended: all the same 404.
    let id = Uuid::parse_str(&path.into_inner()).map_err(|_| ApiError::NotFound)?;
    let mut conn = state.pool.get().await?;
    let origin = origin.by(auth.user.id);
    match sessions::end_now(&mut conn, auth.user.id, Ending::Only(vec![id]), &origin).await? {
        0 => Err(ApiError::NotFound),
        _ => Ok(HttpResponse::NoContent().finish()),
    }
}

/// `{token}`: the body of the routes behind "this wasn't me" links.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The token from the mailed link.
    #[schema(required = true, nullable = false, min_length = 1)]
    token: Option<String>,
}

impl TokenRequest {
    /// The token's claims for `purpose`, or the one 400 every bad link gets.
    pub fn verify(
        self,
        state: &AppState,
        purpose: Purpose,
    ) -> Result<crate::tokens::Claims, ApiError> {
        let token = self.token.unwrap_or_default();
        state
            .tokens
            .verify(token.trim(), purpose)
            .map_err(|_| ApiError::field("token", BAD_ACTION_LINK))
    }
}

#[utoipa::path(post, path = "/api/users/sign-in/reject", tag = "sessions", request_body = TokenRequest,
    responses((status = 204, description = "Every session ended at once; the password stops working until the reset link on its way is used"),
        (status = 400, description = "Invalid, expired or already used link", body = ErrorBody)))]
pub async fn reject_sign_in(
    state: web::Data<AppState>,
    request_id: RequestId,
    origin: Origin,
    body: JsonObject<TokenRequest>,
) -> Result<HttpResponse, ApiError> {
    let claims = body.into_inner().verify(&state, Purpose::SignInReject)?;
    let session_id = claims
        .sid
        .ok_or_else(|| ApiError::field("token", BAD_ACTION_LINK))?;
    let mut conn = state.pool.get().await?;
    let done = db::retrying(async || {
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            let Some(user) = users::lock(conn, claims.sub).await? else {
                return Ok(false);
            };
            // A notice mailed to an address that a revert has since undone (the intruder's own)
            // no longer speaks for the account.
            let mailed_to = claims.email.as_deref().unwrap_or_default();
            if !email_changes::speaks_for(conn, user.id, &user.email, mailed_to).await?
                || !links::consume(conn, &claims).await?
            {
                return Ok(false);
            }
            // The intruder may hold other sessions (a second sign-in from the same device sends
            // no notice) and knows the password: take all of it back.
            // Its device was remembered in the transaction that began the session.
            let signed_in_at = sessions::started_at(conn, user.id, session_id).await?;
            recovery::take_back(conn, &state, &user, signed_in_at, &request_id).await?;
            let details = json!({ "session": session_id, "by": "sign-in notice" });
            audit::record(conn, &origin, "sign-in.rejected", Some(user.id), details).await?;
            Ok(true)
        })
        .await
    })
    .await?;
    if !done {
        return Err(ApiError::field("token", BAD_ACTION_LINK));
    }
    tracing::info!(user_id = %claims.sub, "a sign-in was rejected by its owner");
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// The token from the mailed link.
    pub token: Option<String>,
}

/// The page the new sign-in mail links to. It does not consume the token (mail scanners prefetch
/// links); its button's POST does.
#[utoipa::path(get, path = "/account/reject-sign-in", tag = "pages", params(TokenQuery),
    responses((status = 200, description = "HTML page whose button posts to /api/users/sign-in/reject", content_type = "text/html"),
        (status = 400, description = "A malformed query string", body = ErrorBody)))]
pub async fn reject_sign_in_page(
    state: web::Data<AppState>,
    query: web::Query<TokenQuery>,
) -> Result<HttpResponse, ApiError> {
    let token = query.into_inner().token.unwrap_or_default();
    page(
        &state,
        "action.html",
        &[
            ("token", &token),
            ("title", "This wasn't me"),
            (
                "explanation",
                "If you did not sign in, take your account back here: every device is signed out at once, the current password stops working, and we mail you a link to choose a new one.",
            ),
            ("button", "Sign every device out"),
            ("endpoint", "../api/users/sign-in/reject"),
            (
                "done",
                "Every device is signed out and the password no longer works. Check your mailbox for a link to choose a new one.",
            ),
        ],
    )
}
