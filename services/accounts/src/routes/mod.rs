//! HTTP routes. One module per resource; `configure` is the whole route table.

pub(crate) mod admin;
pub(crate) mod assets;
pub(crate) mod confirm;
pub(crate) mod email;
pub(crate) mod health;
pub(crate) mod password;
pub(crate) mod sessions;
pub(crate) mod user;
pub(crate) mod users;

use actix_web::web;
use serde::Deserialize;

use crate::{domain::REQUIRED, error::ApiError};

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Routes are tried in order, and every `{id}` pattern tried costs a regex match (twice: the
    // request log asks for the matched pattern too), so the hottest routes come first.
    cfg.service(
        resource("/api/user")
            .route(web::get().to(user::current))
            .route(web::put().to(user::update)),
    )
    .service(resource("/api/users/login").route(web::post().to(users::login)))
    .service(resource("/api/users").route(web::post().to(users::register)))
    .service(resource("/api/users/token/refresh").route(web::post().to(users::refresh)))
    .service(resource("/api/users/logout").route(web::post().to(users::logout)))
    .service(resource("/api/users/confirm").route(web::get().to(confirm::confirm)))
    .service(resource("/api/users/confirm/resend").route(web::post().to(confirm::resend)))
    .service(resource("/api/users/password/forgot").route(web::post().to(password::forgot)))
    .service(resource("/api/users/password/reset").route(web::post().to(password::reset)))
    .service(resource("/api/users/email/revert").route(web::post().to(email::revert)))
    .service(resource("/api/users/sign-in/reject").route(web::post().to(sessions::reject_sign_in)))
    .service(resource("/api/user/sessions").route(web::get().to(sessions::list)))
    .service(resource("/api/admin/users").route(web::get().to(admin::list_users)))
    .service(resource("/api/admin/users/{id}").route(web::get().to(admin::show_user)))
    .service(resource("/api/admin/users/{id}/deactivate").route(web::post().to(admin::deactivate)))
    .service(resource("/api/admin/users/{id}/activate").route(web::post().to(admin::activate)))
    .service(resource("/api/admin/users/{id}/roles").route(web::put().to(admin::set_roles)))
    .service(
        resource("/api/admin/users/{id}/sessions").route(web::delete().to(admin::end_sessions)),
    )
    .service(
        resource("/api/admin/users/{id}/confirmation")
            .route(web::post().to(admin::send_confirmation)),
    )
    .service(resource("/api/admin/audit").route(web::get().to(admin::audit_trail)))
    .service(resource("/api/user/sessions/{id}").route(web::delete().to(sessions::delete)))
    .service(resource("/account/email-confirmed").route(web::get().to(confirm::success_page)))
    .service(resource("/account/confirm-email").route(web::get().to(confirm::request_page)))
    .service(resource("/account/reset-password").route(web::get().to(password::reset_page)))
    .service(resource("/account/revert-email").route(web::get().to(email::revert_page)))
    .service(
        resource("/account/reject-sign-in").route(web::get().to(sessions::reject_sign_in_page)),
    )
    .service(resource("/account/assets/{name}").route(web::get().to(assets::asset)))
    .service(resource("/.well-known/jwks.json").route(web::get().to(health::jwks)))
    .service(resource("/healthz").route(web::get().to(health::healthz)))
    .service(resource("/readyz").route(web::get().to(health::readyz)))
    .service(resource("/metrics").route(web::get().to(health::metrics)))
    .service(resource("/openapi.json").route(web::get().to(health::openapi)))
    .service(
        utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}")
            .url("/docs/openapi.json", crate::openapi::document()),
    )
    .service(resource("/docs").route(web::get().to(|| async {
        actix_web::HttpResponse::Found()
            .insert_header(("Location", "/docs/"))
            .finish()
    })));
}

/// A resource whose unsupported methods get 405 in the error envelope.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(|| async {
        actix_web::HttpResponse::MethodNotAllowed()
            .json(serde_json::json!({ "errors": { "method": ["Method not allowed."] } }))
    }))
}

/// Anything no route matches.
pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

/// Conduit's `{"user": {...}}` request envelope.
#[derive(Debug, Deserialize)]
pub struct UserEnvelope<T> {
    user: Option<T>,
}

impl<T> UserEnvelope<T> {
    pub fn into_inner(self) -> Result<T, ApiError> {
        self.user.ok_or_else(|| ApiError::field("user", REQUIRED))
    }
}

/// The device a request comes from, as a session records it.
pub fn device(req: &actix_web::HttpRequest) -> crate::sessions::Device {
    crate::sessions::Device {
        user_agent: req
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        ip: crate::client::ClientAddr::of(req).to_string(),
    }
}
