//! Passkeys: the caller's (register, list, remove) and the passwordless sign-in. The workflow is
//! `signin::passkey`; these only parse and answer.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::schemas::{ErrorBody, StepUp, UserResponse};
use crate::{
    audit::Origin,
    auth::Authenticated,
    db,
    http::error::ApiError,
    http::json::JsonObject,
    signin::{
        self,
        mfa::passkeys::{self, MAX_NAME, PasskeyBody},
        passkey, step_up,
    },
    state::AppState,
};

/// A ceremony's id and its options in the browser's JSON form.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CeremonyResponse {
    /// Send it back with the credential. Single use; 5 minutes.
    ceremony: Uuid,
    /// For `PublicKeyCredential.parseCreationOptionsFromJSON` (registration) or
    /// `parseRequestOptionsFromJSON` (sign-in).
    #[serde(rename = "publicKey")]
    #[schema(value_type = Object)]
    public_key: Value,
}

#[utoipa::path(post, path = "/api/user/passkeys/options", tag = "passkeys", security(("token" = [])),
    request_body(content = Option<StepUp>, description = "Optional step-up proof when the session is not fresh"),
    responses((status = 200, description = "A registration ceremony for the caller", body = CeremonyResponse),
        (status = 400, description = "Passkeys are off, the address is not confirmed, or a wrong current_password or code", body = ErrorBody),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "Deactivated, or reauthentication needed", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords or codes; see Retry-After", body = ErrorBody)))]
pub async fn registration_options(
    auth: Authenticated,
    state: web::Data<AppState>,
    from: signin::Client,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: StepUp = super::optional_body(&body)?;
    step_up::require(&state, &auth, body.offered(), &from).await?;
    let (ceremony, public_key) = passkey::registration_options(&state, &auth).await?;
    Ok(HttpResponse::Ok().json(CeremonyResponse {
        ceremony,
        public_key,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPasskey {
    #[schema(required = true, nullable = false)]
    ceremony: Option<Uuid>,
    /// What `PublicKeyCredential.toJSON()` gives for the created credential.
    #[schema(required = true, value_type = Object)]
    credential: Option<Value>,
    #[schema(max_length = 64)]
    name: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AddedResponse {
    passkey: PasskeyBody,
    /// When this passkey turned the second factor on: the recovery codes (shown once).
    #[serde(skip_serializing_if = "Option::is_none")]
    recovery_codes: Option<Vec<String>>,
    /// When this passkey turned the second factor on: the caller's new `aal2` access token.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

#[utoipa::path(post, path = "/api/user/passkeys", tag = "passkeys", security(("token" = [])), request_body = NewPasskey,
    responses((status = 201, description = "Added (the first one turns the second factor on: other sessions end, recovery codes, an mfa-enabled mail); a passkey-added mail goes out", body = AddedResponse),
        (status = 400, description = "Unknown, used or expired ceremony, a credential that does not verify or is registered already, or passkeys are off", body = ErrorBody),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "Deactivated", body = ErrorBody)))]
pub async fn add(
    auth: Authenticated,
    state: web::Data<AppState>,
    from: signin::Client,
    origin: Origin,
    body: JsonObject<NewPasskey>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let ceremony = body
        .ceremony
        .ok_or_else(|| ApiError::field("ceremony", passkey::BAD_CEREMONY))?;
    let credential = body
        .credential
        .ok_or_else(|| ApiError::field("credential", passkey::NOT_A_CREDENTIAL))?;
    if body
        .name
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NAME)
    {
        return Err(ApiError::field(
            "name",
            format!("Ensure this field has no more than {MAX_NAME} characters."),
        ));
    }
    if body
        .name
        .as_deref()
        .is_some_and(|n| !passkeys::name_is_plain(n))
    {
        return Err(ApiError::field(
            "name",
            "Control, invisible and direction characters are not allowed.",
        ));
    }
    let added = passkey::add(
        &state,
        &auth,
        ceremony,
        &credential,
        body.name.as_deref(),
        &from,
        &origin,
    )
    .await?;
    Ok(HttpResponse::Created().json(AddedResponse {
        passkey: added.passkey,
        recovery_codes: added.recovery_codes,
        token: added.token,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PasskeysResponse {
    passkeys: Vec<PasskeyBody>,
}

#[utoipa::path(get, path = "/api/user/passkeys", tag = "passkeys", security(("token" = [])),
    responses((status = 200, description = "The caller's passkeys", body = PasskeysResponse),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "Deactivated", body = ErrorBody)))]
pub async fn list(
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let stored = db::reading(&state.pool, async |conn| {
        passkeys::of_user(conn, auth.user.id).await
    })
    .await??;
    Ok(HttpResponse::Ok().json(PasskeysResponse {
        passkeys: stored.into_iter().map(PasskeyBody::from).collect(),
    }))
}

#[utoipa::path(delete, path = "/api/user/passkeys/{id}", tag = "passkeys", security(("token" = [])),
    params(("id" = Uuid, Path)),
    request_body(content = Option<StepUp>, description = "Optional step-up proof when the session is not fresh"),
    responses((status = 204, description = "Removed; a passkey-removed mail goes out (and mfa-disabled when no second factor remains)"),
        (status = 400, description = "The last way in, or a wrong current_password or code", body = ErrorBody),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "Deactivated, or reauthentication needed", body = ErrorBody),
        (status = 404, description = "No such passkey of the caller's", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords or codes; see Retry-After", body = ErrorBody)))]
pub async fn remove(
    auth: Authenticated,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    from: signin::Client,
    origin: Origin,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: StepUp = super::optional_body(&body)?;
    step_up::require(&state, &auth, body.offered(), &from).await?;
    passkey::remove(&state, &auth, id.into_inner(), &from, &origin).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Nothing: the options name no account.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoFields {}

#[utoipa::path(post, path = "/api/users/login/passkey/options", tag = "passkeys",
    request_body(content = Option<NoFields>, description = "`{}` or nothing"),
    responses((status = 200, description = "A passwordless ceremony (discoverable credentials: the options name no account)", body = CeremonyResponse),
        (status = 400, description = "Passkeys are off, or a malformed body", body = ErrorBody),
        (status = 429, description = "Too many ceremonies from this client; see Retry-After", body = ErrorBody)))]
pub async fn login_options(
    state: web::Data<AppState>,
    from: signin::Client,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let _: NoFields = super::optional_body(&body)?;
    let (ceremony, public_key) = passkey::login_options(&state, &from).await?;
    Ok(HttpResponse::Ok().json(CeremonyResponse {
        ceremony,
        public_key,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyLogin {
    #[schema(required = true, nullable = false)]
    ceremony: Option<Uuid>,
    /// What `PublicKeyCredential.toJSON()` gives for the assertion.
    #[schema(required = true, value_type = Object)]
    credential: Option<Value>,
}

#[utoipa::path(post, path = "/api/users/login/passkey", tag = "passkeys", request_body = PasskeyLogin,
    responses((status = 200, description = "Logged in (aal2: the authenticator verified the user)", body = UserResponse),
        (status = 400, description = "Unknown, used or expired ceremony, not a credential, or passkeys are off", body = ErrorBody),
        (status = 401, description = "The passkey is not registered here, or its answer does not verify (a sign counter that went backwards is refused and audited)", body = ErrorBody),
        (status = 429, description = "Too many sign-ins from this client; see Retry-After", body = ErrorBody)))]
pub async fn login(
    state: web::Data<AppState>,
    from: signin::Client,
    body: JsonObject<PasskeyLogin>,
) -> Result<HttpResponse, ApiError> {
    state
        .client_rate
        .admit(crate::throttle::Route::Login, &from.addr)?;
    let body = body.into_inner();
    let ceremony = body
        .ceremony
        .ok_or_else(|| ApiError::field("ceremony", passkey::BAD_CEREMONY))?;
    let credential = body
        .credential
        .ok_or_else(|| ApiError::field("credential", passkey::NOT_A_CREDENTIAL))?;
    let user = passkey::sign_in(&state, ceremony, &credential, &from).await?;
    Ok(HttpResponse::Ok().json(UserResponse { user }))
}

/// A page that signs in with a password (a passkey as the second factor when the account has
/// one), adds a passkey and signs in with a passkey alone, in the browser's own WebAuthn JSON:
/// the flows can be seen without an app, and its script is the README's example.
#[utoipa::path(get, path = "/account/passkeys", tag = "pages",
    responses((status = 200, description = "HTML page", content_type = "text/html")))]
pub async fn passkeys_page(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    super::confirm::page(&state, "passkeys.html", &[])
}
