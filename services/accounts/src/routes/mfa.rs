//! The caller's second factors: TOTP, recovery codes, and what the account has.

use actix_web::{HttpRequest, HttpResponse, web};
use diesel_async::AsyncConnection;
use serde::{Deserialize, Serialize};

use super::schemas::ErrorBody;
use crate::{
    audit::Origin,
    auth::Authenticated,
    auth::authz,
    db,
    http::client::ClientAddr,
    http::error::{ApiError, BAD_CODE},
    http::telemetry::RequestId,
    sessions,
    signin::{
        self, access_token,
        mfa::{self, recovery_codes, totp},
        step_up::{self, Offered},
    },
    state::AppState,
    users,
};

pub const UNVERIFIED_ADDRESS: &str = "Confirm your email address before adding a second factor.";
pub const NO_SECOND_FACTOR: &str = "Turn on a second factor first.";

/// Proof of a recent sign-in for a security setting: `{}` from a fresh session (see step-up),
/// else `current_password`, plus `code` when the account has a second factor.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepUp {
    current_password: Option<String>,
    /// A TOTP or recovery code.
    code: Option<String>,
}

impl StepUp {
    fn offered(&self) -> Offered<'_> {
        Offered {
            current_password: self.current_password.as_deref(),
            code: self.code.as_deref(),
        }
    }
}

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

/// Where a request comes from, for the sign-in workflow.
fn client<'a>(
    addr: &'a ClientAddr,
    device: &'a sessions::Device,
    request_id: &'a RequestId,
) -> signin::Client<'a> {
    signin::Client {
        addr,
        device,
        request_id,
    }
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
    req: HttpRequest,
    request_id: RequestId,
    addr: ClientAddr,
    body: web::Json<StepUp>,
) -> Result<HttpResponse, ApiError> {
    if !auth.user.verified {
        return Err(ApiError::Forbidden(UNVERIFIED_ADDRESS));
    }
    let device = sessions::Device::of(&req);
    step_up::require(
        &state,
        &auth,
        body.offered(),
        &client(&addr, &device, &request_id),
    )
    .await?;
    let mut conn = state.pool.get().await?;
    let enrolment = totp::enrol(&mut conn, &state, auth.user.id, &auth.user.email).await?;
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
    request_id: RequestId,
    origin: Origin,
    body: web::Json<TotpConfirmation>,
) -> Result<HttpResponse, ApiError> {
    if !auth.user.verified {
        return Err(ApiError::Forbidden(UNVERIFIED_ADDRESS));
    }
    let code = body.into_inner().code.unwrap_or_default();
    let origin = origin.by(auth.user.id);
    let mut conn = state.pool.get().await?;
    let confirmed = db::retrying(async || {
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            let Some(user) = users::lock(conn, auth.user.id).await? else {
                return Ok(None);
            };
            // A token from before a revert, a reject or a reset is void by now.
            if user.token_version != auth.user.token_version || !user.verified {
                return Ok(None);
            }
            if !totp::confirm(conn, &state.sealing, user.id, &code).await? {
                return Ok(Some(None));
            }
            let session = sessions::live(conn, user.id)
                .await?
                .into_iter()
                .find(|s| s.id == auth.session_id)
                .ok_or(diesel::result::Error::RollbackTransaction)?;
            let (codes, raised) =
                mfa::turned_on(conn, &state, &user, &session, "totp", &origin, &request_id).await?;
            let user = users::find(conn, user.id)
                .await?
                .ok_or(diesel::result::Error::NotFound)?;
            let grants = authz::grants(conn, &user).await?;
            let token = raised.map(|session| access_token(&state, &user, &session, &grants));
            Ok(Some(Some((codes, token))))
        })
        .await
    })
    .await;
    match confirmed {
        Ok(Some(Some((recovery_codes, token)))) => {
            Ok(HttpResponse::Ok().json(RecoveryCodesResponse {
                recovery_codes,
                token,
            }))
        }
        Ok(Some(None)) => Err(ApiError::field("code", BAD_CODE)),
        Ok(None) | Err(diesel::result::Error::RollbackTransaction) => Err(ApiError::bad_token()),
        Err(e) => Err(e.into()),
    }
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
    req: HttpRequest,
    request_id: RequestId,
    addr: ClientAddr,
    origin: Origin,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    // A DELETE may come without a body (a fresh session has nothing to prove); one that is there
    // must parse, or a typo would pass as "nothing offered".
    let body: StepUp = super::optional_body(&body)?;
    let device = sessions::Device::of(&req);
    step_up::require(
        &state,
        &auth,
        body.offered(),
        &client(&addr, &device, &request_id),
    )
    .await?;
    let origin = origin.by(auth.user.id);
    let mut conn = state.pool.get().await?;
    db::retrying(async || {
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            let Some(user) = users::lock(conn, auth.user.id).await? else {
                return Ok(());
            };
            if totp::remove(conn, user.id).await? {
                let details = serde_json::json!({ "method": "totp" });
                crate::audit::record(conn, &origin, "mfa.removed", Some(user.id), details).await?;
                mfa::after_removal(conn, &user, &request_id).await?;
            }
            Ok(())
        })
        .await
    })
    .await?;
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
    req: HttpRequest,
    request_id: RequestId,
    addr: ClientAddr,
    origin: Origin,
    body: web::Json<StepUp>,
) -> Result<HttpResponse, ApiError> {
    let device = sessions::Device::of(&req);
    step_up::require(
        &state,
        &auth,
        body.offered(),
        &client(&addr, &device, &request_id),
    )
    .await?;
    let origin = origin.by(auth.user.id);
    let mut conn = state.pool.get().await?;
    let codes = db::retrying(async || {
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            let Some(user) = users::lock(conn, auth.user.id).await? else {
                return Ok(None);
            };
            if !mfa::enabled(conn, user.id).await? {
                return Ok(None);
            }
            let codes = recovery_codes::replace(conn, &state.sealing, user.id).await?;
            crate::audit::record(
                conn,
                &origin,
                "mfa.recovery_codes_replaced",
                Some(user.id),
                serde_json::json!({}),
            )
            .await?;
            Ok(Some(codes))
        })
        .await
    })
    .await?;
    let Some(recovery_codes) = codes else {
        return Err(ApiError::field("mfa", NO_SECOND_FACTOR));
    };
    Ok(HttpResponse::Ok().json(RecoveryCodesResponse {
        recovery_codes,
        token: None,
    }))
}
