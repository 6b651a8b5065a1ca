//! The OpenAPI document, generated from the handlers' annotations, and the offline docs page.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::{
    Modify, OpenApi, ToSchema,
    openapi::security::{ApiKey, ApiKeyValue, SecurityScheme},
};

use crate::{
    routes::{
        admin,
        confirm::{self, EmailOnly},
        email, health, password, sessions, user,
        user::ProfileUpdate,
        users::{self, Credentials, Registration},
    },
    users::UserBody,
};

/// `{"user": {...}}`, the success envelope.
#[derive(Serialize, ToSchema)]
pub struct UserResponse {
    pub user: UserBody,
}

/// `{"errors": {"<field>": ["message", ...]}}`, every error.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub errors: BTreeMap<String, Vec<String>>,
}

/// What the JSON confirm answer reads out: nothing beyond what the link confirmed.
#[derive(Serialize, ToSchema)]
pub struct ConfirmedUser {
    pub id: uuid::Uuid,
    pub email: String,
    pub verified: bool,
}

#[derive(Serialize, ToSchema)]
pub struct ConfirmedResponse {
    pub user: ConfirmedUser,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RegisterRequest {
    user: Registration,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LoginRequest {
    user: Credentials,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ProfileRequest {
    user: ProfileUpdate,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EmailRequest {
    user: EmailOnly,
}

struct TokenAuth;

impl Modify for TokenAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`Token <jwt>` (Conduit) or `Bearer <jwt>`",
            ))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "accounts", description = "Users, sessions and tokens. Errors are always {\"errors\": {\"<field>\": [\"message\"]}}."),
    paths(
        users::register, users::login, users::refresh, users::logout,
        user::current, user::update,
        confirm::confirm, confirm::resend, confirm::success_page, confirm::request_page,
        password::forgot, password::reset, password::reset_page,
        email::revert, email::revert_page,
        sessions::list, sessions::delete, sessions::reject_sign_in, sessions::reject_sign_in_page,
        admin::list_users, admin::show_user, admin::deactivate, admin::activate, admin::set_roles,
        admin::end_sessions, admin::send_confirmation, admin::audit_trail,
        health::healthz, health::readyz, health::metrics, health::jwks,
    ),
    components(schemas(UserResponse, ConfirmedResponse, ErrorBody, RegisterRequest, LoginRequest, ProfileRequest, EmailRequest)),
    modifiers(&TokenAuth),
)]
pub struct ApiDoc;

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
