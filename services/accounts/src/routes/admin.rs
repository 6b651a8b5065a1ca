//! The admin API: each route names the permission it needs in its extractor
//! ([`Authorized`]), which checks the database, not the token. Actions are the workflows of
//! [`crate::admin`], shared with the CLI; they also measure the target against the caller (an
//! operator acts only on users whose permissions are a subset of their own, only a superuser on a
//! superuser). Reads under `users.read` show any user.

use std::{future::Future, marker::PhantomData, pin::Pin};

use actix_web::{FromRequest, HttpRequest, HttpResponse, dev::Payload, web};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::{schemas::ErrorBody, sessions::SessionBody};
use crate::{
    admin::{self, AdminError, Operator},
    audit::{self, Origin},
    auth::authz::{
        self, AuditRead, Authorized, Required, RolesManage, SessionsRevoke, UsersDeactivate,
        UsersRead, UsersWrite,
    },
    http::client::ClientAddr,
    http::error::ApiError,
    http::json::JsonObject,
    http::telemetry::RequestId,
    schema::{user_roles, users},
    sessions,
    state::AppState,
    users::{User, UserBody},
};

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::NoUser => ApiError::NotFound,
            AdminError::UnknownRoles(names) => {
                ApiError::field("roles", format!("Unknown role: {}.", names.join(", ")))
            }
            AdminError::NotPermitted => ApiError::NoPermission,
            AdminError::Database(e) => e.into(),
        }
    }
}

/// An admin action on the user the path names: the caller holds `P` (checked first, so 401 and 403
/// come before 404), the target is a user id (anything else is 404), and `operator` is what the
/// caller holds (the workflow measures the target against it) and where they act from.
pub struct OnUser<P: Required> {
    target: Uuid,
    operator: Operator,
    _caller: PhantomData<P>,
}

impl<P: Required + 'static> FromRequest for OnUser<P> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let authorized = Authorized::<P>::from_request(req, payload);
        let target = req.match_info().get("id").map(Uuid::parse_str);
        let client = ClientAddr::of(req).to_string();
        let request_id = RequestId::extract(req).into_inner();
        Box::pin(async move {
            let caller = authorized.await?;
            let target = match target {
                Some(Ok(id)) => id,
                _ => return Err(ApiError::NotFound),
            };
            let origin = match request_id {
                Ok(id) => Origin::new(Some(caller.caller.user.id), &client, &id),
                Err(never) => match never {},
            };
            Ok(Self {
                target,
                operator: Operator {
                    grants: caller.grants,
                    origin,
                },
                _caller: PhantomData,
            })
        })
    }
}

/// A user as an administrator sees it: the profile plus account state and roles.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdminUser {
    #[serde(flatten)]
    profile: UserBody,
    active: bool,
    is_superuser: bool,
    last_login: Option<DateTime<Utc>>,
    locale: String,
    roles: Vec<String>,
}

impl AdminUser {
    fn new(user: User, roles: Vec<String>) -> Self {
        Self {
            active: user.active,
            is_superuser: user.is_superuser,
            last_login: user.last_login,
            locale: user.locale.clone(),
            profile: UserBody::from(user),
            roles,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserQuery {
    /// Case-insensitive substring of the email or the username.
    #[param(max_length = 254, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    search: Option<String>,
    verified: Option<bool>,
    active: Option<bool>,
    /// Only users holding this role.
    #[param(max_length = 64, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    role: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<Uuid>,
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

/// A filter value that can reach a query: bounded, and without control characters (Postgres
/// refuses a NUL in text, which must be the caller's 400, never our 500).
fn filter_text<'a>(field: &str, value: &'a str, max: usize) -> Result<&'a str, ApiError> {
    if value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(ApiError::field(
            field,
            format!("Enter at most {max} characters, without control characters."),
        ));
    }
    Ok(value)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserPage {
    users: Vec<AdminUser>,
    /// Pass as `cursor` for the next page; null on the last one. Stable under concurrent inserts:
    /// pages follow the time-ordered user id.
    next_cursor: Option<Uuid>,
}

/// `limit` of a page, or the one 400 every admin list gives.
fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::field(
            "limit",
            format!("Enter a number from 1 to {MAX_LIMIT}."),
        ));
    }
    Ok(limit)
}

#[utoipa::path(get, path = "/api/admin/users", tag = "admin", security(("token" = [])), params(UserQuery),
    responses((status = 200, description = "A page of users (needs users.read)", body = UserPage),
        (status = 400, description = "A bad filter or a malformed query string", body = ErrorBody),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "No users.read", body = ErrorBody)))]
pub async fn list_users(
    _caller: Authorized<UsersRead>,
    state: web::Data<AppState>,
    query: web::Query<UserQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let limit = page_limit(query.limit)?;
    let mut select = users::table
        .select(User::as_select())
        .order(users::id)
        .limit(limit)
        .into_boxed();
    let search = query.search.as_deref().unwrap_or_default();
    let search = filter_text("search", search, 254)?.trim();
    if !search.is_empty() {
        let pattern = crate::users::contains_pattern(search);
        select = select.filter(
            users::email
                .ilike(pattern.clone())
                .or(users::username.ilike(pattern)),
        );
    }
    if let Some(verified) = query.verified {
        select = select.filter(users::verified.eq(verified));
    }
    if let Some(active) = query.active {
        select = select.filter(users::active.eq(active));
    }
    if let Some(role) = query.role {
        filter_text("role", &role, 64)?;
        select = select.filter(
            users::id.eq_any(
                user_roles::table
                    .filter(user_roles::role.eq(role))
                    .select(user_roles::user_id),
            ),
        );
    }
    if let Some(cursor) = query.cursor {
        select = select.filter(users::id.gt(cursor));
    }
    let mut conn = state.pool.get().await?;
    let found: Vec<User> = select.load(&mut conn).await?;
    let ids: Vec<Uuid> = found.iter().map(|u| u.id).collect();
    let roles = authz::roles_of(&mut conn, &ids).await?;
    let next_cursor = (found.len() as i64 == limit)
        .then(|| ids.last().copied())
        .flatten();
    let users = found
        .into_iter()
        .map(|user| {
            let mine = roles
                .iter()
                .filter(|(id, _)| *id == user.id)
                .map(|(_, r)| r.clone())
                .collect();
            AdminUser::new(user, mine)
        })
        .collect();
    Ok(HttpResponse::Ok().json(UserPage { users, next_cursor }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdminUserDetail {
    #[serde(flatten)]
    user: AdminUser,
    sessions: Vec<SessionBody>,
}

/// `{"user": {...}}` of an administrator's view.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdminUserResponse {
    user: AdminUserDetail,
}

#[utoipa::path(get, path = "/api/admin/users/{id}", tag = "admin", security(("token" = [])),
    params(("id" = Uuid, Path, description = "The user's id; anything else is 404")),
    responses((status = 200, description = "The user, with roles and live sessions (needs users.read)", body = AdminUserResponse),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "No users.read", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody)))]
pub async fn show_user(
    action: OnUser<UsersRead>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = action.target;
    let mut conn = state.pool.get().await?;
    let user = crate::users::find(&mut conn, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let roles = authz::grants(&mut conn, &user).await?.roles;
    let live = sessions::live(&mut conn, id).await?;
    Ok(HttpResponse::Ok().json(AdminUserResponse {
        user: AdminUserDetail {
            user: AdminUser::new(user, roles),
            sessions: live.into_iter().map(|s| SessionBody::of(s, None)).collect(),
        },
    }))
}

#[utoipa::path(post, path = "/api/admin/users/{id}/deactivate", tag = "admin", security(("token" = [])),
    params(("id" = Uuid, Path, description = "The user's id; anything else is 404")),
    responses((status = 204, description = "Deactivated; every session and token stopped at once (needs users.deactivate)"),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "No users.deactivate, or the user holds a permission the caller lacks (or is a superuser)", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody)))]
pub async fn deactivate(
    action: OnUser<UsersDeactivate>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.get().await?;
    admin::set_active(&mut conn, &action.operator, action.target, false).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/api/admin/users/{id}/activate", tag = "admin", security(("token" = [])),
    params(("id" = Uuid, Path, description = "The user's id; anything else is 404")),
    responses((status = 204, description = "Active again (needs users.deactivate)"),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "No users.deactivate, or the user holds a permission the caller lacks (or is a superuser)", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody)))]
pub async fn activate(
    action: OnUser<UsersDeactivate>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.get().await?;
    admin::set_active(&mut conn, &action.operator, action.target, true).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolesRequest {
    /// The user's roles after the change: exactly these.
    #[schema(max_items = 32)]
    roles: Vec<String>,
}

/// The user's roles after the change, and what changed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RolesSet {
    roles: Vec<String>,
    granted: Vec<String>,
    revoked: Vec<String>,
}

#[utoipa::path(put, path = "/api/admin/users/{id}/roles", tag = "admin", security(("token" = [])),
    params(("id" = Uuid, Path, description = "The user's id; anything else is 404")), request_body = RolesRequest,
    responses((status = 200, description = "Roles set; a revoked role stops the user's tokens at once (needs roles.manage)", body = RolesSet),
        (status = 400, description = "An unknown role, or a malformed body", body = ErrorBody),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "No roles.manage, the user holds a permission the caller lacks (or is a superuser), or a granted role carries one", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody)))]
pub async fn set_roles(
    action: OnUser<RolesManage>,
    state: web::Data<AppState>,
    body: JsonObject<RolesRequest>,
) -> Result<HttpResponse, ApiError> {
    let wanted = body.into_inner().roles;
    if wanted.len() > 32 {
        return Err(ApiError::field(
            "roles",
            "Ensure this list has no more than 32 roles.",
        ));
    }
    let mut conn = state.pool.get().await?;
    let change = admin::set_roles(&mut conn, &action.operator, action.target, &wanted).await?;
    Ok(HttpResponse::Ok().json(RolesSet {
        roles: change.roles,
        granted: change.granted,
        revoked: change.revoked,
    }))
}

#[utoipa::path(delete, path = "/api/admin/users/{id}/sessions", tag = "admin", security(("token" = [])),
    params(("id" = Uuid, Path, description = "The user's id; anything else is 404")),
    responses((status = 204, description = "Every session of the user ended at once (needs sessions.revoke)"),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "No sessions.revoke, or the user holds a permission the caller lacks (or is a superuser)", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody)))]
pub async fn end_sessions(
    action: OnUser<SessionsRevoke>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.get().await?;
    admin::end_sessions(&mut conn, &action.operator, action.target).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/api/admin/users/{id}/confirmation", tag = "admin", security(("token" = [])),
    params(("id" = Uuid, Path, description = "The user's id; anything else is 404")),
    responses((status = 202, description = "A new confirmation link is on its way (needs users.write)", body = super::schemas::Accepted),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "No users.write, or the user holds a permission the caller lacks (or is a superuser)", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody)))]
pub async fn send_confirmation(
    action: OnUser<UsersWrite>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.get().await?;
    admin::send_confirmation(&mut conn, &state, &action.operator, action.target).await?;
    Ok(HttpResponse::Accepted().json(json!({})))
}

#[utoipa::path(delete, path = "/api/admin/users/{id}/mfa", tag = "admin", security(("token" = [])),
    params(("id" = Uuid, Path, description = "The user's id; anything else is 404")),
    responses((status = 204, description = "Every second factor removed, every session ended, the password unusable; the user is mailed one mfa-disabled notice with a reset link (needs users.write)"),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "No users.write, or the user holds a permission the caller lacks (or is a superuser)", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody)))]
pub async fn reset_mfa(
    action: OnUser<UsersWrite>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.get().await?;
    admin::reset_mfa(&mut conn, state.get_ref(), &action.operator, action.target).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    actor: Option<Uuid>,
    target: Option<Uuid>,
    /// Only entries of this action, e.g. `login.failed`.
    #[param(max_length = 64, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    action: Option<String>,
    /// `next_cursor` of the previous page (entries come newest first).
    cursor: Option<i64>,
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    entries: Vec<audit::Entry>,
    next_cursor: Option<i64>,
}

#[utoipa::path(get, path = "/api/admin/audit", tag = "admin", security(("token" = [])), params(AuditQuery),
    responses((status = 200, description = "The audit trail, newest first (needs audit.read)", body = AuditPage),
        (status = 400, description = "A bad filter or a malformed query string", body = ErrorBody),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 403, description = "No audit.read", body = ErrorBody)))]
pub async fn audit_trail(
    _caller: Authorized<AuditRead>,
    state: web::Data<AppState>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let limit = page_limit(query.limit)?;
    if let Some(action) = &query.action {
        filter_text("action", action, 64)?;
    }
    let filter = audit::Filter {
        actor: query.actor,
        target: query.target,
        action: query.action,
        before: query.cursor,
        limit,
    };
    let mut conn = state.pool.get().await?;
    let entries = audit::list(&mut conn, &filter).await?;
    let next_cursor = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(HttpResponse::Ok().json(AuditPage {
        entries,
        next_cursor,
    }))
}
