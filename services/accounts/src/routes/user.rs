//! The current user: read and update.

use actix_web::{HttpResponse, web};
use chrono::Utc;
use diesel_async::AsyncConnection;
use events::{EmailConfirmationRequested, Event, PasswordChanged};
use secrecy::SecretString;
use serde::{Deserialize, Deserializer};
use serde_json::json;

use super::{
    UserEnvelope,
    users::{EMAIL_TAKEN, USERNAME_TAKEN, access_token, confirmation_link},
};
use crate::{
    auth::Authenticated,
    db,
    domain::{self, EmailAddress, FieldErrors, REQUIRED, profile, push_error},
    error::ApiError,
    outbox, sessions,
    state::AppState,
    telemetry::RequestId,
    users::{self, UserBody, UserChanges},
};

pub const WRONG_CURRENT_PASSWORD: &str = "Your current password was entered incorrectly.";

#[utoipa::path(get, path = "/api/user", tag = "user", security(("token" = [])),
    responses((status = 200, description = "The current user", body = crate::openapi::UserResponse),
        (status = 401, description = "Missing or invalid access token", body = crate::openapi::ErrorBody),
        (status = 403, description = "Deactivated", body = crate::openapi::ErrorBody)))]
pub async fn current(auth: Authenticated) -> HttpResponse {
    // Conduit echoes the token; the presented one is valid, so no signing on this hot path.
    let mut body = UserBody::from(auth.user);
    body.token = Some(auth.token);
    HttpResponse::Ok().json(json!({ "user": body }))
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ProfileUpdate {
    email: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    username: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    bio: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    image: Option<Option<String>>,
    first_name: Option<String>,
    last_name: Option<String>,
    phone_number: Option<String>,
    address: Option<String>,
    password: Option<String>,
    confirm_password: Option<String>,
    current_password: Option<String>,
}

#[utoipa::path(put, path = "/api/user", tag = "user", security(("token" = [])), request_body = crate::openapi::ProfileRequest,
    responses((status = 200, description = "The updated user (with fresh tokens after a password change)", body = crate::openapi::UserResponse), (status = 400, description = "Validation failed or malformed body", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid access token", body = crate::openapi::ErrorBody)))]
pub async fn update(
    auth: Authenticated,
    state: web::Data<AppState>,
    request_id: RequestId,
    body: web::Json<UserEnvelope<ProfileUpdate>>,
) -> Result<HttpResponse, ApiError> {
    let input = body.into_inner().into_inner()?;
    let user = auth.user;
    let mut errors = FieldErrors::new();
    let mut changes = UserChanges::default();

    let new_email = match input.email.as_deref().map(str::trim) {
        None => None,
        Some("") => {
            push_error(&mut errors, "email", REQUIRED);
            None
        }
        Some(raw) => match EmailAddress::parse(raw) {
            Ok(email) if email.as_str() == user.email => None,
            Ok(email) => Some(email),
            Err(message) => {
                push_error(&mut errors, "email", message);
                None
            }
        },
    };
    if let Some(username) = &input.username {
        changes.username = Some(
            username
                .as_deref()
                .and_then(|u| profile::username(&mut errors, u)),
        );
    }
    if let Some(bio) = &input.bio {
        changes.bio = Some(
            bio.as_deref()
                .map(|b| profile::text(&mut errors, "bio", b))
                .filter(|b| !b.is_empty()),
        );
    }
    if let Some(image) = &input.image {
        changes.image = Some(
            image
                .as_deref()
                .and_then(|i| profile::image(&mut errors, i)),
        );
    }
    changes.first_name = input
        .first_name
        .as_deref()
        .map(|v| profile::text(&mut errors, "first_name", v));
    changes.last_name = input
        .last_name
        .as_deref()
        .map(|v| profile::text(&mut errors, "last_name", v));
    changes.phone_number = input
        .phone_number
        .as_deref()
        .map(|v| profile::text(&mut errors, "phone_number", v));
    changes.address = input
        .address
        .as_deref()
        .map(|v| profile::text(&mut errors, "address", v));

    let new_password = match input.password.as_deref() {
        None => None,
        Some("") => {
            push_error(&mut errors, "password", REQUIRED);
            None
        }
        Some(password) => {
            let email = new_email
                .as_ref()
                .map_or(user.email.as_str(), |e| e.as_str());
            let username = match &changes.username {
                Some(u) => u.as_deref(),
                None => user.username.as_deref(),
            };
            let checked = domain::new_password(
                &mut errors,
                password,
                input.confirm_password.as_deref(),
                Some(email),
                username,
            );
            if input
                .current_password
                .as_deref()
                .unwrap_or_default()
                .is_empty()
            {
                push_error(&mut errors, "current_password", REQUIRED);
            }
            checked
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    if let Some(password) = &new_password {
        let current = SecretString::from(input.current_password.unwrap_or_default());
        let matched = state
            .hasher
            .verify(&current, Some(user.password_hash.clone()))
            .await?;
        if !matched {
            return Err(ApiError::field("current_password", WRONG_CURRENT_PASSWORD));
        }
        changes.password_hash = Some(state.hasher.hash(password.secret()).await?);
    }
    if let Some(email) = &new_email {
        changes.email = Some(email.as_str().to_string());
        changes.verified = Some(false);
    }
    changes.updated_at = Some(Utc::now());

    let password_changed = new_password.is_some();
    let email_changed = new_email.is_some();
    let tx_state = state.clone();
    let mut conn = state.pool.get().await?;
    let result = conn
        .transaction::<_, diesel::result::Error, _>(async move |conn| {
            let updated = users::update(conn, user.id, &changes).await?;
            if email_changed {
                let (confirmation_url, confirmation_expires_at) =
                    confirmation_link(&tx_state, &updated);
                let event = Event::EmailConfirmationRequested(EmailConfirmationRequested {
                    user_id: updated.id,
                    email: updated.email.clone(),
                    username: updated.username.clone(),
                    confirmation_url,
                    confirmation_expires_at,
                });
                outbox::enqueue(conn, event, &request_id).await?;
            }
            if !password_changed {
                return Ok((updated, None));
            }
            // A new password ends every other session; this client gets a fresh one.
            sessions::end_all(conn, updated.id).await?;
            users::revoke_access_tokens(conn, updated.id).await?;
            let event = Event::PasswordChanged(PasswordChanged {
                user_id: updated.id,
                email: updated.email.clone(),
                username: updated.username.clone(),
                changed_at: Utc::now(),
            });
            outbox::enqueue(conn, event, &request_id).await?;
            let refreshed = users::find(conn, updated.id)
                .await?
                .ok_or(diesel::result::Error::NotFound)?;
            let refresh_token = sessions::start(conn, refreshed.id).await?;
            Ok((refreshed, Some(refresh_token)))
        })
        .await;
    let (updated, refresh_token) = match result {
        Ok(done) => done,
        Err(e) if db::violates(&e, users::EMAIL_KEY) => {
            return Err(ApiError::field("email", EMAIL_TAKEN));
        }
        Err(e) if db::violates(&e, users::USERNAME_KEY) => {
            return Err(ApiError::field("username", USERNAME_TAKEN));
        }
        Err(e) => return Err(e.into()),
    };
    let token = access_token(&state, &updated);
    let mut body = UserBody::from(updated);
    body.token = Some(token);
    body.refresh_token = refresh_token;
    Ok(HttpResponse::Ok().json(json!({ "user": body })))
}
