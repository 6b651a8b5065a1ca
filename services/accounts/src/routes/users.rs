//! Registration, login, token refresh and logout.

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use chrono::Utc;
use diesel_async::AsyncConnection;
use events::{Event, UserRegistered};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::schemas::{ErrorBody, UserEnvelope, UserResponse};
use crate::{
    audit::Origin,
    auth::authz::{self, Grants},
    auth::{Authenticated, DEACTIVATED},
    db,
    domain::{self, EmailAddress, FieldErrors, REQUIRED, locale, profile, push_error},
    http::error::ApiError,
    http::json::JsonObject,
    outbox,
    sessions::{self, Assurance, Ending},
    signin::devices,
    signin::{
        self, Notice, Outcome, SecondFactor, SecondFactorNeeded, mfa::Proof, password::Identifier,
    },
    state::AppState,
    throttle::{self, HourlyLimit, Route},
    users::email_changes,
    users::links,
    users::{self, EMAIL_TAKEN, NewUser, USERNAME_TAKEN, UserBody},
};

pub const TOO_MANY_REGISTRATIONS: &str =
    "Too many registrations from your network. Try again later.";

/// A registration. Lengths count characters; the password's 71 is also a limit in UTF-8 bytes
/// (bcrypt reads no more), and it must not be all letters, all digits, common, or too similar to
/// the email or username.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    #[schema(required = true, nullable = false, format = Email, max_length = 254)]
    email: Option<String>,
    #[schema(required = true, nullable = false, min_length = 8, max_length = 71)]
    password: Option<String>,
    /// When given, it must equal `password`.
    #[schema(max_length = 71)]
    confirm_password: Option<String>,
    /// Letters, digits and @ . + - _; NFKC-normalized, unique by its confusable skeleton.
    #[schema(max_length = 150, pattern = r"^\s*[\w.@+-]*\s*$")]
    username: Option<String>,
    #[schema(
        max_length = 150,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    first_name: Option<String>,
    #[schema(
        max_length = 150,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    last_name: Option<String>,
    #[schema(
        max_length = 32,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    phone_number: Option<String>,
    #[schema(
        max_length = 500,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    address: Option<String>,
    terms_accepted: Option<bool>,
    /// A BCP 47 tag; when absent, the best shipped match of `Accept-Language`.
    #[schema(max_length = 35, pattern = r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$")]
    locale: Option<String>,
}

#[utoipa::path(post, path = "/api/users", tag = "users", request_body = UserEnvelope<Registration>,
    responses((status = 201, description = "Registered; a user-registered event is in the outbox", body = UserResponse),
        (status = 400, description = "Validation failed or malformed body", body = ErrorBody),
        (status = 429, description = "Too many registrations from this client this hour (ACCOUNTS_REGISTRATIONS_PER_HOUR) or more than 60 at once, or password hashing is saturated; see Retry-After", body = ErrorBody)))]
pub async fn register(
    state: web::Data<AppState>,
    req: HttpRequest,
    from: signin::Client,
    body: web::Json<UserEnvelope<Registration>>,
) -> Result<HttpResponse, ApiError> {
    if state.settings.registrations_per_hour > 0 {
        // A flood is refused before any database work; 0 turns registration limits off.
        state.client_rate.admit(Route::Registration, &from.addr)?;
    }
    let input = body.into_inner().into_inner()?;
    let mut errors = FieldErrors::new();
    let locale = match input.locale.as_deref() {
        Some(tag) => locale::parse(tag)
            .map_err(|message| push_error(&mut errors, "locale", message))
            .unwrap_or_default(),
        None => locale::from_accept_language(
            req.headers()
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok()),
        ),
    };
    let email = match input.email.as_deref().map(str::trim) {
        None | Some("") => {
            push_error(&mut errors, "email", REQUIRED);
            None
        }
        Some(raw) => EmailAddress::parse(raw)
            .map_err(|message| push_error(&mut errors, "email", message))
            .ok(),
    };
    let username = input
        .username
        .as_deref()
        .and_then(|u| profile::username(&mut errors, u));
    let password = match input.password.as_deref() {
        None | Some("") => {
            push_error(&mut errors, "password", REQUIRED);
            None
        }
        Some(password) => domain::new_password(
            &mut errors,
            password,
            input.confirm_password.as_deref(),
            input.email.as_deref(),
            username.as_deref(),
        ),
    };
    let mut text = |field: &str, value: &Option<String>| {
        profile::text(&mut errors, field, value.as_deref().unwrap_or_default())
    };
    let first_name = text("first_name", &input.first_name);
    let last_name = text("last_name", &input.last_name);
    let phone_number = text("phone_number", &input.phone_number);
    let address = text("address", &input.address);

    let mut conn = state.pool.get().await?;
    if let Some(email) = &email {
        // Counted before the duplicate check, which would otherwise tell anyone, unthrottled,
        // whether an address has an account.
        let limit = HourlyLimit {
            bucket: "register:client",
            key: from.addr.throttle_key(),
            per_hour: state.settings.registrations_per_hour,
            cost: 1,
            message: TOO_MANY_REGISTRATIONS,
        };
        throttle::hourly(&mut conn, vec![limit], Utc::now()).await?;
        if users::find_by_email(&mut conn, email.as_str())
            .await?
            .is_some()
            || email_changes::reserved_for_another(&mut conn, email.as_str(), None).await?
        {
            // Checked before hashing so a duplicate costs no bcrypt; the unique index still decides races.
            push_error(&mut errors, "email", EMAIL_TAKEN);
        }
    }
    let (Some(email), Some(password), true) = (email, password, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    // No connection is held while waiting for bcrypt.
    drop(conn);
    let password_hash = state.hasher.hash(password.secret()).await?;
    let mut conn = state.pool.get().await?;

    let new_user = NewUser {
        id: Uuid::now_v7(),
        email: email.as_str(),
        username: username.as_deref(),
        password_hash: Some(&password_hash),
        first_name: &first_name,
        last_name: &last_name,
        phone_number: &phone_number,
        address: &address,
        terms_accepted_at: input.terms_accepted.unwrap_or(false).then(Utc::now),
        locale: &locale,
    };
    let issue_tokens = !state.settings.require_verified_email;
    let result = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            // An address that an email change freed stays its account's while the change's
            // revert link lives; the lock orders this check after such a change commits.
            email_changes::lock_address(conn, new_user.email).await?;
            if email_changes::reserved_for_another(conn, new_user.email, None).await? {
                // Abandons the transaction; answered as the address being taken.
                return Err(diesel::result::Error::RollbackTransaction);
            }
            let user = users::insert(conn, &new_user).await?;
            let confirmation = links::confirmation(state.get_ref(), &user);
            let event = Event::UserRegistered(UserRegistered {
                user_id: user.id,
                email: user.email.clone(),
                username: user.username.clone(),
                confirmation_url: Some(confirmation.url),
                confirmation_expires_at: Some(confirmation.expires_at),
                locale: user.locale.clone(),
            });
            outbox::enqueue(conn, event, &from.request_id).await?;
            // Registration counts as the first device; the password was entered just now.
            let session = match issue_tokens {
                true => Some(
                    signin::begin(
                        conn,
                        &state,
                        &user,
                        &from,
                        Utc::now(),
                        &Assurance::password(),
                        Notice::Silent,
                    )
                    .await?,
                ),
                false => {
                    let key = devices::key(&from.device.user_agent, &from.device.ip);
                    devices::remember(conn, user.id, &key).await?;
                    None
                }
            };
            Ok((user, session))
        })
        .await;
    let (user, session) = match result {
        Ok(created) => created,
        Err(diesel::result::Error::RollbackTransaction) => {
            return Err(ApiError::field("email", EMAIL_TAKEN));
        }
        Err(e) if db::violates(&e, users::EMAIL_KEY) => {
            return Err(ApiError::field("email", EMAIL_TAKEN));
        }
        Err(e) if db::violates(&e, users::USERNAME_KEY) => {
            return Err(ApiError::field("username", USERNAME_TAKEN));
        }
        Err(e) => return Err(e.into()),
    };
    metrics::counter!("accounts_registrations_total").increment(1);
    tracing::info!(user_id = %user.id, "registered a user");
    let body = match session {
        Some(started) => signin::body_with_tokens(
            &state,
            user,
            &started.session,
            started.refresh_token,
            &Grants::default(),
        ),
        None => UserBody::from(user),
    };
    Ok(HttpResponse::Created().json(users::UserResponse { user: body }))
}

pub const ONE_IDENTIFIER: &str = "Enter either an email or a username, not both.";

/// Seed 002: one login form for either identifier. Exactly one of `email` and `username`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Any string: an address that does not parse is simply a wrong login (401). Give it or
    /// `username`, not both (400).
    #[schema(nullable = false, min_length = 1)]
    email: Option<String>,
    /// Matched as registration normalizes it (NFKC, case, confusable skeleton). Give it or
    /// `email`, not both (400).
    #[schema(nullable = false, min_length = 1)]
    username: Option<String>,
    #[schema(required = true, nullable = false, min_length = 1)]
    password: Option<String>,
}

#[utoipa::path(post, path = "/api/users/login", tag = "users", request_body = UserEnvelope<Credentials>,
    responses((status = 200, description = "Logged in (the user with its tokens); or, when the account has a second factor, `mfa` with a challenge and no tokens", body = LoginResponse),
        (status = 400, description = "Validation failed or malformed body", body = ErrorBody),
        (status = 401, description = "Incorrect email or password; a deactivated account gets this answer whether or not the password is right", body = ErrorBody),
        (status = 403, description = "Unverified when verification is mandatory", body = ErrorBody),
        (status = 429, description = "Throttled before any password check: this account and client locked after 5 failures, this account delayed after 20 failures in 15 minutes (1 s doubling to 15 min), this client locked after 50 failures, more than 60 logins at once from this client (then one a second), or hashing saturated; see Retry-After", body = ErrorBody)))]
pub async fn login(
    state: web::Data<AppState>,
    from: signin::Client,
    body: web::Json<UserEnvelope<Credentials>>,
) -> Result<HttpResponse, ApiError> {
    state.client_rate.admit(Route::Login, &from.addr)?;
    let input = body.into_inner().into_inner()?;
    let mut errors = FieldErrors::new();
    let given = input.email.as_deref().unwrap_or_default();
    let username = input.username.as_deref().filter(|u| !u.is_empty());
    let password = input.password.unwrap_or_default();
    // Only an absent or empty identifier is "required"; a blank one is a wrong login like any other.
    match (given.is_empty(), username.is_some()) {
        (true, false) => push_error(&mut errors, "email", REQUIRED),
        (false, true) => push_error(&mut errors, "username", ONE_IDENTIFIER),
        _ => {}
    }
    if password.is_empty() {
        push_error(&mut errors, "password", REQUIRED);
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let identifier = match username {
        Some(typed) => Identifier::Username(typed),
        None => Identifier::Email(given.trim()),
    };
    let outcome =
        signin::with_password(&state, identifier, SecretString::from(password), &from).await?;
    Ok(login_answer(outcome))
}

/// What a login answers (a password's or a social one's): the user with its tokens, or the `mfa`
/// challenge.
pub fn login_answer(outcome: Outcome) -> HttpResponse {
    HttpResponse::Ok().json(match outcome {
        Outcome::SignedIn(body) => LoginResponse::User(Box::new(UserResponse { user: *body })),
        Outcome::SecondFactor(needed) => LoginResponse::Mfa(needed.into()),
    })
}

/// What a login answers: the user with tokens, or the second-factor challenge.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum LoginResponse {
    User(Box<UserResponse>),
    Mfa(MfaChallengeResponse),
}

/// The second step of a login: the challenge and one second factor.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecondFactorLogin {
    /// The `mfa.challenge` of the password login.
    #[schema(required = true, nullable = false, min_length = 1, max_length = 128)]
    challenge: Option<String>,
    /// A code from the authenticator app (6 digits). Give it or `recovery_code` (null is absent).
    #[schema(max_length = 64)]
    code: Option<String>,
    /// One of the recovery codes (`xxxx-xxxx-xxxx`). Give it or `code` (null is absent).
    #[schema(max_length = 64)]
    recovery_code: Option<String>,
    /// A passkey assertion for the challenge's `passkey_options`, as
    /// `PublicKeyCredential.toJSON()` produces it (instead of a code).
    #[schema(value_type = Option<Object>)]
    credential: Option<serde_json::Value>,
}

/// A password login that needs a second factor: no tokens yet.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MfaChallengeResponse {
    mfa: MfaChallenge,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MfaChallenge {
    /// Opaque; send it to `POST /api/users/login/mfa` with one factor. Single use.
    challenge: String,
    /// The factors the account has: `totp`, `recovery_code`.
    methods: Vec<&'static str>,
    /// Seconds until the challenge expires (300).
    expires_in: i64,
    /// When the account has passkeys: `{"publicKey": ...}` for
    /// `PublicKeyCredential.parseRequestOptionsFromJSON`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    passkey_options: Option<serde_json::Value>,
}

impl From<SecondFactorNeeded> for MfaChallengeResponse {
    fn from(needed: SecondFactorNeeded) -> Self {
        Self {
            mfa: MfaChallenge {
                challenge: needed.challenge,
                methods: needed.methods,
                expires_in: needed.expires_in,
                passkey_options: needed
                    .passkey_options
                    .map(|options| serde_json::json!({ "publicKey": options })),
            },
        }
    }
}

pub const ONE_FACTOR: &str = "Give one of a code, a recovery code or a passkey credential.";

#[utoipa::path(post, path = "/api/users/login/mfa", tag = "users", request_body = SecondFactorLogin,
    responses((status = 200, description = "Logged in, with two factors", body = UserResponse),
        (status = 400, description = "Validation failed (the challenge and exactly one of code and recovery_code) or malformed body", body = ErrorBody),
        (status = 401, description = "The challenge is unknown, expired, spent or void (the password, the address or the account changed since), or the code is wrong or already used", body = ErrorBody),
        (status = 429, description = "Too many wrong codes: 5 in 15 minutes from this client, or, from a device that has not signed in lately, more than 10 in a day (then a doubling delay); see Retry-After", body = ErrorBody)))]
pub async fn login_second_factor(
    state: web::Data<AppState>,
    from: signin::Client,
    body: JsonObject<SecondFactorLogin>,
) -> Result<HttpResponse, ApiError> {
    state.client_rate.admit(Route::Login, &from.addr)?;
    let input = body.into_inner();
    let mut errors = FieldErrors::new();
    let challenge = input.challenge.unwrap_or_default();
    if challenge.is_empty() {
        push_error(&mut errors, "challenge", REQUIRED);
    }
    let code = input.code.filter(|c| !c.is_empty());
    let recovery_code = input.recovery_code.filter(|c| !c.is_empty());
    let credential = input.credential.filter(|c| !c.is_null());
    let proof = match (&code, &recovery_code, &credential) {
        (Some(code), None, None) => Some(SecondFactor::Code(Proof::Totp(code))),
        (None, Some(code), None) => Some(SecondFactor::Code(Proof::RecoveryCode(code))),
        (None, None, Some(credential)) => Some(SecondFactor::Passkey(credential)),
        (None, None, None) => {
            push_error(&mut errors, "code", REQUIRED);
            None
        }
        _ => {
            push_error(&mut errors, "recovery_code", ONE_FACTOR);
            None
        }
    };
    let Some(proof) = proof.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let body = signin::with_second_factor(&state, &challenge, proof, &from).await?;
    Ok(HttpResponse::Ok().json(UserResponse { user: body }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    #[schema(required = true, nullable = false, min_length = 1)]
    refresh_token: Option<String>,
}

pub const BAD_REFRESH: &str = "The refresh token is invalid, expired or revoked.";

#[utoipa::path(post, path = "/api/users/token/refresh", tag = "sessions", request_body = RefreshRequest,
    responses((status = 200, description = "A new access token and a rotated refresh token", body = UserResponse),
        (status = 400, description = "Validation failed or malformed body", body = ErrorBody),
        (status = 401, description = "Invalid, expired, revoked or reused refresh token", body = ErrorBody),
        (status = 403, description = "Deactivated", body = ErrorBody)))]
pub async fn refresh(
    state: web::Data<AppState>,
    req: HttpRequest,
    origin: Origin,
    body: JsonObject<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    let presented = body
        .into_inner()
        .refresh_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::field("refresh_token", REQUIRED))?;
    let presented = presented.trim();
    let device = sessions::Device::of(&req);
    let grace = chrono::Duration::from_std(state.settings.refresh_grace).unwrap_or_default();
    let mut conn = state.pool.get().await?;
    let (rotation, grants) = db::retrying(async || {
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            let rotation =
                sessions::rotate(conn, presented, &device, grace, &state.sealing).await?;
            let grants = match &rotation {
                sessions::Rotation::Rotated { user, .. } => authz::grants(conn, user).await?,
                _ => Grants::default(),
            };
            Ok((rotation, grants))
        })
        .await
    })
    .await?;
    let invalid = ApiError::Unauthorized {
        field: "refresh_token",
        message: BAD_REFRESH,
    };
    let (user, session, refresh_token) = match rotation {
        sessions::Rotation::Rotated {
            user,
            session,
            refresh_token,
        } => (user, session, refresh_token),
        sessions::Rotation::Reused => {
            tracing::warn!(
                "a refresh token was presented again after its grace window; ended its session"
            );
            return Err(invalid);
        }
        sessions::Rotation::Invalid => return Err(invalid),
    };
    if !user.active {
        // Deactivation ends every session; this one predates that rule.
        sessions::end_now(&mut conn, user.id, Ending::All, &origin).await?;
        return Err(ApiError::Forbidden(DEACTIVATED));
    }
    let body = signin::body_with_tokens(&state, *user, &session, refresh_token, &grants);
    Ok(HttpResponse::Ok().json(users::UserResponse { user: body }))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogoutRequest {
    /// Also end the session of this refresh token, when it is the caller's.
    refresh_token: Option<String>,
    /// End every session of the caller.
    #[serde(default)]
    all: bool,
}

#[utoipa::path(post, path = "/api/users/logout", tag = "sessions", request_body(content = Option<LogoutRequest>, description = "Optional: no body ends this session"),
    security(("token" = [])),
    responses((status = 204, description = "Logged out"),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "Deactivated", body = ErrorBody)))]
pub async fn logout(
    state: web::Data<AppState>,
    auth: Authenticated,
    origin: Origin,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    // The body is optional: an empty one, or `null`, means "this session", with nothing more to
    // revoke.
    let request: LogoutRequest = super::optional_body(&body)?;
    let mut conn = state.pool.get().await?;
    let also = match request.refresh_token.as_deref().map(str::trim) {
        Some(token) if !token.is_empty() && !request.all => {
            sessions::of_refresh_token(&mut conn, auth.user.id, token).await?
        }
        _ => None,
    };
    let ending = match request.all {
        true => Ending::All,
        false => Ending::Only(
            [Some(auth.session_id), also]
                .into_iter()
                .flatten()
                .collect(),
        ),
    };
    sessions::end_now(&mut conn, auth.user.id, ending, &origin.by(auth.user.id)).await?;
    Ok(HttpResponse::NoContent().finish())
}
