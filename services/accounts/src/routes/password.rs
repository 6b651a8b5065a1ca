//! Forgotten passwords: request a single-use link, open its page, set a new password.

use actix_web::{HttpResponse, web};
use chrono::Utc;
use diesel_async::AsyncConnection;
use serde::Deserialize;
use serde_json::json;

use super::{
    confirm::{mail_request, page},
    schemas::{Accepted, EmailOnly, ErrorBody, UserEnvelope},
};
use crate::{
    audit::Origin,
    db,
    domain::{self, FieldErrors, REQUIRED, push_error},
    http::client::ClientAddr,
    http::error::ApiError,
    http::json::JsonObject,
    http::telemetry::RequestId,
    signin::recovery,
    state::AppState,
    tokens::Purpose,
    users::links,
    users::{self, UserChanges},
};

pub const BAD_RESET_LINK: &str = "The reset link is invalid, expired or already used.";

/// `POST /api/users/password/forgot`: always 202; mails a reset link to a real, active account.
#[utoipa::path(post, path = "/api/users/password/forgot", tag = "password", request_body = UserEnvelope<EmailOnly>,
    responses((status = 202, description = "Accepted for any address", body = Accepted),
        (status = 400, description = "Not an email address", body = ErrorBody),
        (status = 429, description = "Too many requests this hour: 3 per address, or 20 mail-sending requests per client; or more than 60 at once from this client; see Retry-After", body = ErrorBody)))]
pub async fn forgot(
    state: web::Data<AppState>,
    request_id: RequestId,
    client: ClientAddr,
    body: web::Json<UserEnvelope<EmailOnly>>,
) -> Result<HttpResponse, ApiError> {
    let (email, mut conn) =
        mail_request(&state, "reset:address", &client, body.into_inner()).await?;
    // Both paths do the same lookup inside a transaction; only a real account adds one insert.
    conn.transaction::<_, diesel::result::Error, _>(async |conn| {
        match users::find_by_email(conn, email.as_str()).await? {
            Some(user) if user.active => {
                recovery::mail_reset_link(conn, &state, &user, &request_id).await
            }
            _ => Ok(()),
        }
    })
    .await?;
    Ok(HttpResponse::Accepted().json(json!({})))
}

/// The new password must not be all letters, all digits, common, or too similar to the email or
/// username; its 71 is also a limit in UTF-8 bytes (bcrypt reads no more).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// The token from the mailed link.
    #[schema(required = true, nullable = false, min_length = 1)]
    token: Option<String>,
    #[schema(required = true, nullable = false, min_length = 8, max_length = 71)]
    password: Option<String>,
    /// When given, it must equal `password`.
    #[schema(max_length = 71)]
    confirm_password: Option<String>,
}

/// `POST /api/users/password/reset`: sets the password, ends every session, emits password-changed.
#[utoipa::path(post, path = "/api/users/password/reset", tag = "password", request_body = ResetRequest,
    responses((status = 204, description = "Password set; every session ended"),
        (status = 400, description = "Validation failed or malformed body, or an invalid, expired or used link", body = ErrorBody),
        (status = 429, description = "Password hashing is saturated; see Retry-After", body = ErrorBody)))]
pub async fn reset(
    state: web::Data<AppState>,
    request_id: RequestId,
    origin: Origin,
    body: JsonObject<ResetRequest>,
) -> Result<HttpResponse, ApiError> {
    let input = body.into_inner();
    let mut errors = FieldErrors::new();
    let token = input.token.unwrap_or_default();
    if token.trim().is_empty() {
        push_error(&mut errors, "token", REQUIRED);
    }
    let password = input.password.unwrap_or_default();
    if password.is_empty() {
        push_error(&mut errors, "password", REQUIRED);
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let claims = state
        .tokens
        .verify(token.trim(), Purpose::PasswordReset)
        .map_err(|_| ApiError::field("token", BAD_RESET_LINK))?;
    let mut conn = state.pool.get().await?;
    let user = users::find(&mut conn, claims.sub)
        .await?
        .filter(|u| links::reset_holds(&claims, u))
        .ok_or_else(|| ApiError::field("token", BAD_RESET_LINK))?;
    let new_password = domain::new_password(
        &mut errors,
        &password,
        input.confirm_password.as_deref(),
        Some(&user.email),
        user.username.as_deref(),
    );
    let Some(new_password) = new_password else {
        return Err(ApiError::Validation(errors));
    };
    // No connection is held while waiting for bcrypt.
    drop(conn);
    let hash = state.hasher.hash(new_password.secret()).await?;
    let mut conn = state.pool.get().await?;
    let used = db::retrying(async || {
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            // Re-read under the row lock: two submissions of one link cannot both win, and a
            // refresh in flight either finished before (its session ends here) or waits and fails.
            let Some(current) = users::lock(conn, user.id).await? else {
                return Ok(false);
            };
            if !links::reset_holds(&claims, &current) || !links::consume(conn, &claims).await? {
                return Ok(false);
            }
            let changes = UserChanges {
                password_hash: Some(Some(hash.clone())),
                updated_at: Some(Utc::now()),
                ..UserChanges::default()
            };
            let updated = users::update(conn, user.id, &changes).await?;
            let origin = origin.clone().by(user.id);
            recovery::password_replaced(conn, &updated, "password.reset", &origin, &request_id)
                .await?;
            Ok(true)
        })
        .await
    })
    .await?;
    if !used {
        return Err(ApiError::field("token", BAD_RESET_LINK));
    }
    tracing::info!(user_id = %claims.sub, "reset a password");
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResetPageQuery {
    /// The token from the mailed link.
    token: Option<String>,
}

/// The page the mailed link opens. It does not consume the token (mail scanners prefetch links);
/// only the form's POST does.
#[utoipa::path(get, path = "/account/reset-password", tag = "pages", params(ResetPageQuery),
    responses((status = 200, description = "HTML form that posts to /api/users/password/reset", content_type = "text/html"),
        (status = 400, description = "A malformed query string", body = ErrorBody)))]
pub async fn reset_page(
    state: web::Data<AppState>,
    query: web::Query<ResetPageQuery>,
) -> Result<HttpResponse, ApiError> {
    let token = query.into_inner().token.unwrap_or_default();
    page(&state, "reset_password.html", &[("token", &token)])
}
