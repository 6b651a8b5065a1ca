//! Email confirmation: the link from the mail, and asking for a new one.

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use chrono::Utc;
use diesel_async::AsyncConnection;
use serde::Deserialize;
use serde_json::json;

use super::schemas::{Accepted, ConfirmedResponse, EmailOnly, ErrorBody, UserEnvelope};
use crate::{
    db::PooledConnection,
    domain::{EmailAddress, REQUIRED},
    http::client::ClientAddr,
    http::error::ApiError,
    http::telemetry::RequestId,
    state::AppState,
    throttle::{self, Route},
    tokens::{Claims, Purpose},
    users,
    users::links,
};

pub const BAD_LINK: &str = "The confirmation link is invalid or has expired.";

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// The token from the mailed link.
    token: Option<String>,
}

fn wants_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

fn redirect(to: &str) -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, to))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// `GET /api/users/confirm?token=`: 302 to the success or "request a new link" page, or JSON.
#[utoipa::path(get, path = "/api/users/confirm", tag = "confirmation", params(TokenQuery),
    responses((status = 302, description = "To the success page, or to the request-a-new-link page"),
        (status = 200, description = "With Accept: application/json, the confirmed address only", body = ConfirmedResponse),
        (status = 400, description = "With Accept: application/json, an invalid or expired link; or a malformed query string", body = ErrorBody)))]
pub async fn confirm(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<TokenQuery>,
) -> Result<HttpResponse, ApiError> {
    let settings = &state.settings;
    let success = settings
        .confirm_success_url
        .clone()
        .unwrap_or_else(|| settings.public_link("account/email-confirmed"));
    let failure = settings
        .confirm_failure_url
        .clone()
        .unwrap_or_else(|| settings.public_link("account/confirm-email"));
    let claims = query
        .token
        .as_deref()
        .and_then(|token| state.tokens.verify(token, Purpose::EmailConfirmation).ok());
    let confirmed = match claims {
        // A link names the address and the email epoch it was mailed under.
        Some(Claims {
            sub,
            email: Some(email),
            epoch: Some(epoch),
            ..
        }) => {
            let mut conn = state.pool.get().await?;
            users::mark_verified(&mut conn, sub, &email, epoch).await?
        }
        _ => None,
    };
    match (confirmed, wants_json(&req)) {
        // A link lying in a mailbox must not read out a profile: only what it confirmed.
        (Some(user), true) => Ok(HttpResponse::Ok().json(json!({ "user": {
            "id": user.id,
            "email": user.email,
            "verified": user.verified,
        } }))),
        (Some(user), false) => {
            tracing::info!(user_id = %user.id, "confirmed an email address");
            Ok(redirect(success.as_str()))
        }
        (None, true) => Err(ApiError::field("token", BAD_LINK)),
        (None, false) => Ok(redirect(failure.as_str())),
    }
}

/// The common start of a request that sends mail: a valid address, within the hourly limits of
/// the address and of the client. Counted for any address, so the limit reveals nothing about
/// which accounts exist.
pub async fn mail_request(
    state: &AppState,
    kind: &'static str,
    client: &ClientAddr,
    body: UserEnvelope<EmailOnly>,
) -> Result<(EmailAddress, PooledConnection), ApiError> {
    state.client_rate.admit(Route::MailRequest, client)?;
    let raw = body.into_inner()?.email.unwrap_or_default();
    if raw.trim().is_empty() {
        return Err(ApiError::field("email", REQUIRED));
    }
    let email = EmailAddress::parse(&raw).map_err(|m| ApiError::field("email", m))?;
    let mut conn = state.pool.get().await?;
    let limits = throttle::mail_limits(kind, email.as_str().to_string(), client, 1);
    throttle::hourly(&mut conn, limits, Utc::now()).await?;
    Ok((email, conn))
}

/// `POST /api/users/confirm/resend`: 202 for any address; mails only a real, unverified account.
#[utoipa::path(post, path = "/api/users/confirm/resend", tag = "confirmation", request_body = UserEnvelope<EmailOnly>,
    responses((status = 202, description = "Accepted for any address", body = Accepted),
        (status = 400, description = "Not an email address", body = ErrorBody),
        (status = 429, description = "Too many requests this hour: 3 per address, or 20 mail-sending requests per client; or more than 60 at once from this client; see Retry-After", body = ErrorBody)))]
pub async fn resend(
    state: web::Data<AppState>,
    request_id: RequestId,
    client: ClientAddr,
    body: web::Json<UserEnvelope<EmailOnly>>,
) -> Result<HttpResponse, ApiError> {
    let (email, mut conn) =
        mail_request(&state, "confirm:address", &client, body.into_inner()).await?;
    conn.transaction::<_, diesel::result::Error, _>(async |conn| {
        let Some(user) = users::find_by_email(conn, email.as_str()).await? else {
            return Ok(());
        };
        if user.verified || !user.active {
            return Ok(());
        }
        links::mail_confirmation(conn, state.get_ref(), &user, &request_id).await
    })
    .await?;
    Ok(HttpResponse::Accepted().json(json!({})))
}

#[utoipa::path(get, path = "/account/email-confirmed", tag = "pages", responses((status = 200, description = "HTML page", content_type = "text/html")))]
pub async fn success_page(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    page(&state, "email_confirmed.html", &[])
}

#[utoipa::path(get, path = "/account/confirm-email", tag = "pages", responses((status = 200, description = "HTML page with a resend form", content_type = "text/html")))]
pub async fn request_page(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    page(&state, "confirm_email.html", &[])
}

pub fn page(
    state: &AppState,
    name: &str,
    values: &[(&str, &str)],
) -> Result<HttpResponse, ApiError> {
    let api_base = state.settings.public_url.to_string();
    let mut values = values.to_vec();
    values.push(("api_base", &api_base));
    let html = state
        .pages
        .render(name, &values)
        .map_err(|e| ApiError::Unexpected(e.into()))?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(html))
}
