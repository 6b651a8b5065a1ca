//! The current user: read and update.

use actix_web::{HttpResponse, web};
use chrono::Utc;
use diesel::QueryResult;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use events::{EmailChanged, Event};
use serde::{Deserialize, Deserializer};
use serde_json::json;

use super::schemas::{ErrorBody, UserEnvelope, UserResponse};
use crate::{
    audit::{self, Origin},
    auth::Authenticated,
    auth::authz,
    db,
    domain::{self, EmailAddress, FieldErrors, REQUIRED, locale, profile, push_error},
    http::error::{ApiError, CODE_NEEDED, REAUTHENTICATE, WRONG_CURRENT_PASSWORD},
    http::telemetry::RequestId,
    outbox,
    signin::{self, Notice, recovery, step_up},
    state::AppState,
    throttle,
    users::email_changes,
    users::links,
    users::{self, EMAIL_TAKEN, USERNAME_TAKEN, User, UserBody, UserChanges},
};

#[utoipa::path(get, path = "/api/user", tag = "user", security(("token" = [])),
    responses((status = 200, description = "The current user", body = UserResponse),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "Deactivated", body = ErrorBody)))]
pub async fn current(auth: Authenticated) -> HttpResponse {
    // Conduit echoes the token; the presented one is valid, so no signing on this hot path.
    let mut body = UserBody::from(auth.user);
    body.token = Some(auth.token);
    HttpResponse::Ok().json(users::UserResponse { user: body })
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A profile update: absent fields stay as they are, `null` clears `username`, `bio` and `image`.
/// Lengths count characters; the password's 71 is also a limit in UTF-8 bytes (bcrypt reads no more).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileUpdate {
    /// A new address needs `current_password` unless the session is fresh.
    #[schema(format = Email, max_length = 254)]
    email: Option<String>,
    /// Letters, digits and @ . + - _; NFKC-normalized, unique by its confusable skeleton.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 150, pattern = r"^\s*[\w.@+-]*\s*$")]
    username: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 2000, pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$")]
    bio: Option<Option<String>>,
    /// An http(s) URL, or empty to clear it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 2048, pattern = r"^\s*([Hh][Tt][Tt][Pp][Ss]?:[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*)?$")]
    image: Option<Option<String>>,
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
    /// A new password; needs `current_password`.
    #[schema(min_length = 8, max_length = 71)]
    password: Option<String>,
    /// When given, it must equal `password`.
    #[schema(max_length = 71)]
    confirm_password: Option<String>,
    current_password: Option<String>,
    /// A TOTP or recovery code: needed with `current_password` for an email or password change on
    /// an account with a second factor, unless the session is fresh and `aal2`.
    #[schema(max_length = 64)]
    code: Option<String>,
    #[schema(max_length = 35, pattern = r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$")]
    locale: Option<String>,
}

#[utoipa::path(put, path = "/api/user", tag = "user", security(("token" = [])), request_body = UserEnvelope<ProfileUpdate>,
    responses((status = 200, description = "The updated user (with fresh tokens after a password change)", body = UserResponse),
        (status = 400, description = "Validation failed or malformed body", body = ErrorBody),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "Deactivated", body = ErrorBody),
        (status = 429, description = "A wrong current_password counts as a failed login: throttled like login; or an email change beyond the mail-sending limits (3 an hour per account, 20 mails an hour per client: a change sends two); or hashing saturated; see Retry-After", body = ErrorBody)))]
pub async fn update(
    auth: Authenticated,
    state: web::Data<AppState>,
    origin: Origin,
    from: signin::Client,
    body: web::Json<UserEnvelope<ProfileUpdate>>,
) -> Result<HttpResponse, ApiError> {
    let input = body.into_inner().into_inner()?;
    let user = &auth.user;
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

    if let Some(tag) = input.locale.as_deref() {
        changes.locale = locale::parse(tag)
            .map_err(|message| push_error(&mut errors, "locale", message))
            .ok();
    }

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
            domain::new_password(
                &mut errors,
                password,
                input.confirm_password.as_deref(),
                Some(email),
                username,
            )
        }
    };
    let current_password = input.current_password.filter(|p| !p.is_empty());
    let code = input.code.filter(|c| !c.is_empty());
    // A stolen access token must not be enough to take the account over: the password always
    // needs the current one, the email needs it unless the session is fresh (and, on an account
    // with a second factor, `aal2`); with a second factor, a code goes with the password.
    let mut conn = state.pool.get().await?;
    let second_factor = (new_password.is_some() || new_email.is_some())
        && signin::mfa::enabled(&mut conn, user.id).await?;
    let fresh = step_up::fresh(&state, &auth, second_factor);
    let needs_password = new_password.is_some() || (new_email.is_some() && !fresh);
    if needs_password && current_password.is_none() {
        push_error(&mut errors, "current_password", REAUTHENTICATE);
    }
    let needs_code = second_factor && !fresh;
    if needs_code && code.is_none() {
        push_error(&mut errors, "code", CODE_NEEDED);
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    // An email change mails the new address and the old one: it counts twice against the client's
    // mail-sending limit and once against the account's, before its duplicate check (which would
    // otherwise tell anyone, unthrottled, whether an address has an account). A spent limit is
    // refused before bcrypt and without a write; the count itself waits for the password, so
    // mistyping it spends nothing.
    let mail_limits = new_email
        .as_ref()
        .map(|_| throttle::mail_limits("email-change:account", user.id.to_string(), &from.addr, 2));
    if let Some(limits) = &mail_limits {
        throttle::already_spent(&mut conn, limits, Utc::now()).await?;
    }
    if let Some(current) = &current_password {
        // A wrong current password is a failed login: the same throttle counts it, before bcrypt.
        // No connection is held while waiting for bcrypt.
        drop(conn);
        step_up::check_password(&state, &auth, current, &from).await?;
        if let Some(code) = code.as_deref().filter(|_| needs_code) {
            step_up::second_factor(&state, &auth, code, &from).await?;
        }
        conn = state.pool.get().await?;
    }
    if let Some(limits) = mail_limits {
        throttle::hourly(&mut conn, limits, Utc::now()).await?;
    }
    if let Some(password) = &new_password {
        drop(conn);
        let hashed = state.hasher.hash(password.secret()).await;
        conn = state.pool.get().await?;
        changes.password_hash = Some(Some(hashed?));
    }
    if let Some(email) = &new_email {
        changes.email = Some(email.as_str().to_string());
        changes.verified = Some(false);
    }
    changes.updated_at = Some(Utc::now());

    let checked_hash = user.password_hash.clone();
    let result = db::retrying(async || {
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            let Some(before) = users::lock(conn, user.id).await? else {
                return Ok(None);
            };
            if before.password_hash != checked_hash {
                // The password changed since this request checked it: start again.
                return Ok(None);
            }
            if !auth.holds(conn, &before).await? {
                // The session ended (or every session did) while this request was under way: a
                // change it was authenticated for must not outlive the revocation.
                return Err(diesel::result::Error::NotFound);
            }
            if let Some(email) = &new_email {
                // Both addresses, in one order: the one this change frees stays reserved to
                // this account by the change's revert link, and the new one may be another's.
                let mut addresses = [before.email.as_str(), email.as_str()];
                addresses.sort_unstable();
                for address in addresses {
                    email_changes::lock_address(conn, address).await?;
                }
                if email_changes::reserved_for_another(conn, email.as_str(), Some(user.id)).await? {
                    // Abandons the transaction; answered as the address being taken.
                    return Err(diesel::result::Error::RollbackTransaction);
                }
            }
            let updated = users::update(conn, user.id, &changes).await?;
            let origin = origin.clone().by(user.id);
            if new_email.is_some() {
                mail_email_change(conn, &state, &before, &updated, &from.request_id).await?;
                audit::record(conn, &origin, "email.changed", Some(user.id), json!({})).await?;
            }
            if new_password.is_none() {
                return Ok(Some((updated, None)));
            }
            // A new password ends every session; this client gets a new one, fresh, as strong
            // as the one it had.
            recovery::password_replaced(
                conn,
                &updated,
                "password.changed",
                &origin,
                &from.request_id,
            )
            .await?;
            let refreshed = users::find(conn, updated.id)
                .await?
                .ok_or(diesel::result::Error::NotFound)?;
            let started = signin::begin(
                conn,
                &state,
                &refreshed,
                &from,
                Utc::now(),
                &auth.assurance(),
                Notice::Silent,
            )
            .await?;
            let grants = authz::grants(conn, &refreshed).await?;
            Ok(Some((refreshed, Some((started, grants)))))
        })
        .await
    })
    .await;
    let body = match result {
        Ok(Some((updated, Some((started, grants))))) => signin::body_with_tokens(
            &state,
            updated,
            &started.session,
            started.refresh_token,
            &grants,
        ),
        Ok(Some((updated, None))) => {
            let mut body = UserBody::from(updated);
            body.token = Some(auth.token);
            body
        }
        Ok(None) => return Err(ApiError::field("current_password", WRONG_CURRENT_PASSWORD)),
        Err(diesel::result::Error::RollbackTransaction) => {
            return Err(ApiError::field("email", EMAIL_TAKEN));
        }
        Err(e) if db::violates(&e, users::EMAIL_KEY) => {
            return Err(ApiError::field("email", EMAIL_TAKEN));
        }
        Err(e) if db::violates(&e, users::USERNAME_KEY) => {
            return Err(ApiError::field("username", USERNAME_TAKEN));
        }
        // The caller's session ended meanwhile (or the account went).
        Err(diesel::result::Error::NotFound) => return Err(ApiError::bad_token()),
        Err(e) => return Err(e.into()),
    };
    Ok(HttpResponse::Ok().json(users::UserResponse { user: body }))
}

/// After an email change: a confirmation link to the new address, and to the old one a notice with
/// a link that undoes the change (the owner's way back from a takeover).
async fn mail_email_change(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    before: &User,
    after: &User,
    request_id: &RequestId,
) -> QueryResult<()> {
    links::mail_confirmation(conn, state, after, request_id).await?;
    let revert_expires_at = links::email_revert_expiry(state);
    let change = email_changes::record(
        conn,
        after.id,
        (&before.email, before.verified),
        &after.email,
        revert_expires_at,
    )
    .await?;
    let revert = links::email_revert(state, after.id, change, revert_expires_at);
    let event = Event::EmailChanged(EmailChanged {
        user_id: after.id,
        email: before.email.clone(),
        new_email: after.email.clone(),
        username: after.username.clone(),
        changed_at: Utc::now(),
        revert_url: revert.url,
        revert_expires_at: revert.expires_at,
        locale: after.locale.clone(),
    });
    outbox::enqueue(conn, event, request_id).await
}
