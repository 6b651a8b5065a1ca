//! Social login: the browser's trip to a provider and back, the app's code redemption, and the
//! caller's linked provider accounts. The workflow is `signin::social`; these only parse and answer.

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use serde::{Deserialize, Serialize};

use super::schemas::{ErrorBody, StepUp};
use crate::{
    audit::Origin,
    auth::Authenticated,
    db,
    domain::locale,
    http::error::ApiError,
    http::json::JsonObject,
    signin::{
        self,
        social::{
            self, Returned, Start,
            identities::{self, IdentityBody},
        },
        step_up::{self, Offered},
    },
    state::AppState,
};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuthorizeQuery {
    /// Where the answer goes: one of ACCOUNTS_SOCIAL_REDIRECTS, exactly.
    redirect_to: Option<String>,
    /// The S256 challenge of the app's code_verifier (43 base64url characters).
    code_challenge: Option<String>,
    /// Only `S256`.
    code_challenge_method: Option<String>,
    /// The app's own state, echoed back.
    state: Option<String>,
    /// `login` asks the provider for a fresh sign-in (`prompt=login`, `max_age=0`; OpenID Connect
    /// providers only), checked through the ID token's `auth_time`: how an account without a
    /// password steps up.
    prompt: Option<String>,
    /// A one-time link ticket from `POST /api/user/identities/{provider}` (instead of the above).
    link: Option<String>,
}

#[utoipa::path(get, path = "/api/auth/{provider}/authorize", tag = "social", params(("provider" = String, Path), AuthorizeQuery),
    responses((status = 302, description = "To the provider; a browser-binding cookie is set"),
        (status = 400, description = "redirect_to not listed, code_challenge missing or not S256, or a bad link ticket", body = ErrorBody),
        (status = 404, description = "No such provider", body = ErrorBody),
        (status = 429, description = "Too many sign-ins started from this client; see Retry-After", body = ErrorBody),
        (status = 503, description = "The provider has not been discovered (yet)", body = ErrorBody)))]
pub async fn authorize(
    req: HttpRequest,
    state: web::Data<AppState>,
    provider: web::Path<String>,
    query: web::Query<AuthorizeQuery>,
    from: signin::Client,
) -> Result<HttpResponse, ApiError> {
    if state.social.get(&provider).is_none() {
        return Err(ApiError::NotFound);
    }
    let query = query.into_inner();
    let start = match query.link {
        Some(ticket) => Start::Link(ticket),
        None => {
            if query
                .code_challenge_method
                .as_deref()
                .is_some_and(|m| m != "S256")
            {
                return Err(ApiError::field(
                    "code_challenge_method",
                    "Only S256 is accepted.",
                ));
            }
            Start::App(social::app_request(
                &state,
                query.redirect_to,
                query.code_challenge,
                query.state,
                query.prompt,
            )?)
        }
    };
    let browser = req.cookie(social::cookie_name(&state));
    let started = social::start(
        &state,
        &provider,
        start,
        browser.as_ref().map(|c| c.value()),
        &from,
    )
    .await?;
    let mut answer = HttpResponse::Found();
    answer
        .insert_header((header::LOCATION, started.location.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    if let Some(value) = &started.new_browser {
        answer.insert_header((header::SET_COOKIE, social::binding_cookie(&state, value)));
    }
    Ok(answer.finish())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    /// RFC 9207: the issuer of the answer, when the provider sends it.
    iss: Option<String>,
    error: Option<String>,
}

#[utoipa::path(get, path = "/api/auth/{provider}/callback", tag = "social", params(("provider" = String, Path), CallbackQuery),
    responses((status = 302, description = "To the app's redirect_to with `code` and `state`, or with `error`, `error_description` and `state`"),
        (status = 400, description = "The flow is unknown, spent, expired, another provider's, or not started in this browser", body = ErrorBody),
        (status = 404, description = "No such provider", body = ErrorBody)))]
pub async fn callback(
    req: HttpRequest,
    state: web::Data<AppState>,
    provider: web::Path<String>,
    query: web::Query<CallbackQuery>,
    from: signin::Client,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let returned = Returned {
        code: query.code,
        state: query.state,
        iss: query.iss,
        error: query.error,
    };
    let locale = locale::from_accept_language(
        req.headers()
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    );
    let browser = req.cookie(social::cookie_name(&state));
    let location = social::callback(
        &state,
        &provider,
        returned,
        browser.as_ref().map(|c| c.value()),
        &from,
        locale,
    )
    .await?;
    Ok(HttpResponse::Found()
        .insert_header((header::LOCATION, location.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}

/// Our one-time code and the app's PKCE verifier.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeRedemption {
    #[schema(required = true, nullable = false, min_length = 1, max_length = 128)]
    code: Option<String>,
    #[schema(required = true, nullable = false, min_length = 43, max_length = 128)]
    code_verifier: Option<String>,
}

#[utoipa::path(post, path = "/api/auth/token", tag = "social", request_body = CodeRedemption,
    responses((status = 200, description = "Exactly a password login's answer: the user with tokens, or `mfa` with a challenge", body = super::users::LoginResponse),
        (status = 400, description = "The code is unknown, spent or expired, or the verifier does not match (the code is spent either way)", body = ErrorBody)))]
pub async fn token(
    state: web::Data<AppState>,
    from: signin::Client,
    body: JsonObject<CodeRedemption>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let code = body.code.unwrap_or_default();
    if code.is_empty() || code.len() > 128 {
        return Err(ApiError::field("code", social::BAD_SOCIAL_CODE));
    }
    let verifier = body.code_verifier.unwrap_or_default();
    let outcome = social::redeem(&state, &code, &verifier, &from).await?;
    Ok(super::users::login_answer(outcome))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct IdentitiesResponse {
    identities: Vec<IdentityBody>,
}

#[utoipa::path(get, path = "/api/user/identities", tag = "social", security(("token" = [])),
    responses((status = 200, description = "The caller's linked provider accounts", body = IdentitiesResponse),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "Deactivated", body = ErrorBody)))]
pub async fn list(
    auth: Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let linked = db::reading(&state.pool, async |conn| {
        identities::of_user(conn, auth.user.id).await
    })
    .await??;
    Ok(HttpResponse::Ok().json(IdentitiesResponse {
        identities: linked.into_iter().map(IdentityBody::from).collect(),
    }))
}

/// A link request: where the app wants the answer, its PKCE challenge, and the step-up proof.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    #[schema(required = true, nullable = false)]
    redirect_to: Option<String>,
    #[schema(required = true, nullable = false, min_length = 43, max_length = 43)]
    code_challenge: Option<String>,
    #[schema(max_length = 512)]
    state: Option<String>,
    current_password: Option<String>,
    /// A TOTP or recovery code.
    code: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuthorizeUrlResponse {
    /// Open it in the browser (a top-level navigation): it lives 60 seconds and works once.
    authorize_url: String,
}

#[utoipa::path(post, path = "/api/user/identities/{provider}", tag = "social", security(("token" = [])),
    params(("provider" = String, Path)), request_body = LinkRequest,
    responses((status = 200, description = "Where to send the browser to link the provider account", body = AuthorizeUrlResponse),
        (status = 400, description = "redirect_to not listed, code_challenge missing, or a wrong current_password or code", body = ErrorBody),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "Deactivated, or reauthentication needed", body = ErrorBody),
        (status = 404, description = "No such provider", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords or codes; see Retry-After", body = ErrorBody)))]
pub async fn link(
    auth: Authenticated,
    state: web::Data<AppState>,
    provider: web::Path<String>,
    from: signin::Client,
    body: JsonObject<LinkRequest>,
) -> Result<HttpResponse, ApiError> {
    if state.social.get(&provider).is_none() {
        return Err(ApiError::NotFound);
    }
    let body = body.into_inner();
    let offered = Offered {
        current_password: body.current_password.as_deref(),
        code: body.code.as_deref(),
    };
    let app = social::app_request(
        &state,
        body.redirect_to.clone(),
        body.code_challenge.clone(),
        body.state.clone(),
        None,
    )?;
    step_up::require(&state, &auth, offered, &from).await?;
    let url = social::begin_link(&state, &auth, &provider, app).await?;
    Ok(HttpResponse::Ok().json(AuthorizeUrlResponse {
        authorize_url: url.to_string(),
    }))
}

#[utoipa::path(delete, path = "/api/user/identities/{provider}", tag = "social", security(("token" = [])),
    params(("provider" = String, Path)),
    request_body(content = Option<StepUp>, description = "Optional: `current_password` and `code` when the session is not fresh"),
    responses((status = 204, description = "Unlinked; an identity-unlinked mail goes out"),
        (status = 400, description = "The last way in, or a wrong current_password or code", body = ErrorBody),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "Deactivated, or reauthentication needed", body = ErrorBody),
        (status = 404, description = "No account of this provider is linked", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords or codes; see Retry-After", body = ErrorBody)))]
pub async fn unlink(
    auth: Authenticated,
    state: web::Data<AppState>,
    provider: web::Path<String>,
    from: signin::Client,
    origin: Origin,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: StepUp = super::optional_body(&body)?;
    step_up::require(&state, &auth, body.offered(), &from).await?;
    social::unlink(&state, &auth, &provider, &origin, &from).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SignedInQuery {
    /// Start a sign-in with this provider at once (the `make run` link).
    provider: Option<String>,
}

/// The default `redirect_to`: starts a sign-in (PKCE in the browser), exchanges the returning code
/// and shows who signed in, so the flow can be seen without an app.
#[utoipa::path(get, path = "/account/signed-in", tag = "pages", params(SignedInQuery),
    responses((status = 200, description = "HTML page", content_type = "text/html"),
        (status = 400, description = "A malformed query string", body = ErrorBody)))]
pub async fn signed_in_page(
    state: web::Data<AppState>,
    query: web::Query<SignedInQuery>,
) -> Result<HttpResponse, ApiError> {
    let redirect_to = state.settings.public_link("account/signed-in").to_string();
    let mut names: Vec<String> = state
        .settings
        .social
        .providers
        .iter()
        .map(|p| p.name.clone())
        .collect();
    names.sort();
    let providers = names.join(",");
    let start = query
        .into_inner()
        .provider
        .filter(|p| state.social.get(p).is_some())
        .unwrap_or_default();
    super::confirm::page(
        &state,
        "signed_in.html",
        &[
            ("redirect_to", &redirect_to),
            ("providers", &providers),
            ("start", &start),
        ],
    )
}
