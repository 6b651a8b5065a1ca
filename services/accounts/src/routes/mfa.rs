//! The caller's second factors: TOTP, recovery codes, and what the account has.

use actix_web::{HttpResponse, web};
use diesel_async::AsyncConnection;
use serde::{Deserialize, Serialize};

use super::schemas::{ErrorBody, StepUp};
use crate::{
    audit::Origin,
    auth::Authenticated,
    auth::authz,
    db,
    http::error::{ApiError, BAD_CODE, TOO_MANY_CODES},
    http::json::JsonObject,
    sessions,
    signin::{
        self, access_token,
        mfa::{
            self, Notify,
            totp::{self, Confirmation},
        },
        step_up,
    },
    state::AppState,
    users,
};

pub const UNVERIFIED_ADDRESS: &str = "Confirm your email address before adding a second factor.";
pub const NO_SECOND_FACTOR: &str = "Turn on a second factor first.";
pub const NOTHING_PENDING: &str = "No authenticator setup is in progress in this session: start it again (POST /api/user/mfa/totp).";

#[derive(Serialize, utoipa::ToSchema)]
pub struct MfaStatusResponse {
    mfa: MfaStatus,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MfaStatus {
    totp: bool,
    passkeys: i64,
    recovery_codes_left: i64,
}

#[utoipa::path(get, path = "/api/user/mfa", tag = "mfa", security(("token" = [])),
    responses((status = 200, description = "The caller's second factors", body = MfaStatusResponse),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "Deactivated", body = ErrorBody)))]
pub async fn status(
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let status = db::reading(&state.pool, async |conn| {
        mfa::status(conn, auth.user.id).await
    })
    .await??;
    Ok(HttpResponse::Ok().json(MfaStatusResponse {
        mfa: MfaStatus {
            totp: status.totp,
            passkeys: status.passkeys,
            recovery_codes_left: status.recovery_codes_left,
        },
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TotpEnrolmentResponse {
    totp: TotpEnrolment,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TotpEnrolment {
    /// The secret, base32 (160 bits), for apps that cannot scan the URI.
    secret: String,
    /// `otpauth://totp/<issuer>:<email>?secret=...`, for a QR code.
    uri: String,
}

#[utoipa::path(post, path = "/api/user/mfa/totp", tag = "mfa", security(("token" = [])), request_body = StepUp,
    responses((status = 200, description = "A new pending secret; nothing changes until it is confirmed. A second call replaces it", body = TotpEnrolmentResponse),
        (status = 400, description = "Malformed body, wrong current_password or code, or a code missing on an account with a second factor", body = ErrorBody),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "Deactivated; the address is not confirmed; or reauthentication needed (the session is not fresh, or not aal2, and no current_password was given)", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords or codes; see Retry-After", body = ErrorBody)))]
pub async fn enrol_totp(
    auth: Authenticated,
    state: web::Data<AppState>,
    from: signin::Client,
    body: JsonObject<StepUp>,
) -> Result<HttpResponse, ApiError> {
    if !auth.user.verified {
        return Err(ApiError::Forbidden(UNVERIFIED_ADDRESS));
    }
    step_up::require(&state, &auth, body.offered(), &from).await?;
    let mut conn = state.pool.get().await?;
    let enrolment = totp::enrol(
        &mut conn,
        &state,
        auth.user.id,
        auth.session_id,
        &auth.user.email,
    )
    .await?;
    Ok(HttpResponse::Ok().json(TotpEnrolmentResponse {
        totp: TotpEnrolment {
            secret: enrolment.secret,
            uri: enrolment.uri,
        },
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpConfirmation {
    /// The app's current code for the pending secret.
    #[schema(required = true, nullable = false, min_length = 1, max_length = 64)]
    code: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RecoveryCodesResponse {
    /// Shown once: each signs in once in place of a code.
    recovery_codes: Vec<String>,
    /// A new access token for this session, now `aal2` (every earlier token stopped).
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

#[utoipa::path(post, path = "/api/user/mfa/totp/confirm", tag = "mfa", security(("token" = [])), request_body = TotpConfirmation,
    responses((status = 200, description = "TOTP is on: every other session ended, this one is aal2 (use the new token), an mfa-enabled mail went out, and here are 10 recovery codes", body = RecoveryCodesResponse),
        (status = 400, description = "No pending secret, or the code is wrong, or already used", body = ErrorBody),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "Deactivated, or the address is not confirmed", body = ErrorBody)))]
pub async fn confirm_totp(
    auth: Authenticated,
    state: web::Data<AppState>,
    from: signin::Client,
    origin: Origin,
    body: JsonObject<TotpConfirmation>,
) -> Result<HttpResponse, ApiError> {
    if !auth.user.verified {
        return Err(ApiError::Forbidden(UNVERIFIED_ADDRESS));
    }
    let code = body.into_inner().code.unwrap_or_default();
    let attempt = mfa::Attempt::new(&from.device, &origin, &from.request_id);
    let origin = origin.clone().by(auth.user.id);
    let mut conn = state.pool.get().await?;
    let confirmed = db::retrying(async || {
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            let Some(user) = users::lock(conn, auth.user.id).await? else {
                return Ok(Confirmed::Revoked);
            };
            // A token from before a revert, a reject, a reset or a logout is void by now.
            if !auth.holds(conn, &user).await? || !user.verified {
                return Ok(Confirmed::Revoked);
            }
            // Confirmation codes are guesses like any other: the same limits count them.
            if let Some(wait) = mfa::refusal(conn, &user, &attempt).await? {
                return Ok(Confirmed::Throttled(wait));
            }
            match totp::confirm(conn, &state.sealing, user.id, auth.session_id, &code).await? {
                Confirmation::Confirmed => {}
                Confirmation::NothingPending => return Ok(Confirmed::NothingPending),
                Confirmation::WrongCode => {
                    mfa::failed(conn, &user, &attempt, "totp", Notify::Nobody).await?;
                    return Ok(Confirmed::WrongCode);
                }
            }
            let session = sessions::live(conn, user.id)
                .await?
                .into_iter()
                .find(|s| s.id == auth.session_id)
                .ok_or(diesel::result::Error::RollbackTransaction)?;
            let (codes, raised) = mfa::turned_on(
                conn,
                &state,
                &user,
                &session,
                "totp",
                &origin,
                &from.request_id,
            )
            .await?;
            let user = users::find(conn, user.id)
                .await?
                .ok_or(diesel::result::Error::NotFound)?;
            let grants = authz::grants(conn, &user).await?;
            let token = raised.map(|session| access_token(&state, &user, &session, &grants));
            Ok(Confirmed::On(codes, token))
        })
        .await
    })
    .await;
    match confirmed {
        Ok(Confirmed::On(recovery_codes, token)) => {
            Ok(HttpResponse::Ok().json(RecoveryCodesResponse {
                recovery_codes,
                token,
            }))
        }
        Ok(Confirmed::WrongCode) => Err(ApiError::field("code", BAD_CODE)),
        Ok(Confirmed::NothingPending) => Err(ApiError::field("code", NOTHING_PENDING)),
        Ok(Confirmed::Throttled(retry_after)) => Err(ApiError::Throttled {
            message: TOO_MANY_CODES,
            retry_after,
        }),
        Ok(Confirmed::Revoked) | Err(diesel::result::Error::RollbackTransaction) => {
            Err(ApiError::bad_token())
        }
        Err(e) => Err(e.into()),
    }
}

enum Confirmed {
    On(Vec<String>, Option<String>),
    WrongCode,
    NothingPending,
    Throttled(std::time::Duration),
    Revoked,
}

#[utoipa::path(delete, path = "/api/user/mfa/totp", tag = "mfa", security(("token" = [])),
    request_body(content = Option<StepUp>, description = "Optional: `current_password` and `code` when the session is not fresh"),
    responses((status = 204, description = "TOTP removed (and the recovery codes with it when no other second factor remains; an mfa-disabled mail goes out then)"),
        (status = 400, description = "Wrong current_password or code, or a code missing", body = ErrorBody),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "Deactivated, or reauthentication needed", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords or codes; see Retry-After", body = ErrorBody)))]
pub async fn remove_totp(
    auth: Authenticated,
    state: web::Data<AppState>,
    from: signin::Client,
    origin: Origin,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    // A DELETE may come without a body (a fresh session has nothing to prove); one that is there
    // must parse, or a typo would pass as "nothing offered".
    let body: StepUp = super::optional_body(&body)?;
    step_up::require(&state, &auth, body.offered(), &from).await?;
    let origin = origin.by(auth.user.id);
    let mut conn = state.pool.get().await?;
    let removed = db::retrying(async || {
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            let Some(user) = users::lock(conn, auth.user.id).await? else {
                return Ok(false);
            };
            if !auth.holds(conn, &user).await? {
                return Ok(false);
            }
            if totp::remove(conn, user.id).await? {
                let details = serde_json::json!({ "method": "totp" });
                crate::audit::record(conn, &origin, "mfa.removed", Some(user.id), details).await?;
                mfa::after_removal(conn, &user, &from.request_id).await?;
            }
            Ok(true)
        })
        .await
    })
    .await?;
    if !removed {
        return Err(ApiError::bad_token());
    }
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/api/user/mfa/recovery-codes", tag = "mfa", security(("token" = [])), request_body = StepUp,
    responses((status = 200, description = "A new set of 10 recovery codes; the old set stops working", body = RecoveryCodesResponse),
        (status = 400, description = "No second factor is on; wrong current_password or code, or a code missing", body = ErrorBody),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "Deactivated, or reauthentication needed", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords or codes; see Retry-After", body = ErrorBody)))]
pub async fn regenerate_recovery_codes(
    auth: Authenticated,
    state: web::Data<AppState>,
    from: signin::Client,
    origin: Origin,
    body: JsonObject<StepUp>,
) -> Result<HttpResponse, ApiError> {
    step_up::require(&state, &auth, body.offered(), &from).await?;
    let origin = origin.by(auth.user.id);
    let mut conn = state.pool.get().await?;
    let codes = db::retrying(async || {
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            let Some(user) = users::lock(conn, auth.user.id).await? else {
                return Ok(Err(ApiError::bad_token()));
            };
            if !auth.holds(conn, &user).await? {
                return Ok(Err(ApiError::bad_token()));
            }
            if !mfa::enabled(conn, user.id).await? {
                return Ok(Err(ApiError::field("mfa", NO_SECOND_FACTOR)));
            }
            let codes =
                mfa::replace_recovery_codes(conn, &state, &user, &origin, &from.request_id).await?;
            Ok(Ok(codes))
        })
        .await
    })
    .await?;
    let recovery_codes = codes?;
    Ok(HttpResponse::Ok().json(RecoveryCodesResponse {
        recovery_codes,
        token: None,
    }))
}
