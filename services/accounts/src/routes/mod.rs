//! HTTP routes. One module per resource; `configure` is the whole route table.

pub mod openapi;

pub(crate) mod admin;
pub(crate) mod assets;
pub(crate) mod confirm;
pub(crate) mod email;
pub(crate) mod health;
pub(crate) mod mfa;
pub(crate) mod passkeys;
pub(crate) mod password;
pub mod schemas;
pub(crate) mod sessions;
pub(crate) mod social;
pub(crate) mod user;
pub(crate) mod users;

use actix_web::{
    FromRequest, Handler, HttpResponse, Resource, Responder, Route,
    http::{Method, header},
    web,
};

use crate::http::{
    error::{ApiError, body_error},
    json::from_object,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Routes are tried in order, and every `{id}` pattern tried costs a regex match (twice: the
    // request log asks for the matched pattern too), so the hottest routes come first.
    let endpoints = [
        Endpoint::at("/api/user")
            .get(user::current)
            .put(user::update),
        Endpoint::at("/api/users/login").post(users::login),
        Endpoint::at("/api/users/login/mfa").post(users::login_second_factor),
        Endpoint::at("/api/users").post(users::register),
        Endpoint::at("/api/users/token/refresh").post(users::refresh),
        Endpoint::at("/api/users/logout").post(users::logout),
        Endpoint::at("/api/users/confirm").get(confirm::confirm),
        Endpoint::at("/api/users/confirm/resend").post(confirm::resend),
        Endpoint::at("/api/users/password/forgot").post(password::forgot),
        Endpoint::at("/api/users/password/reset").post(password::reset),
        Endpoint::at("/api/users/email/revert").post(email::revert),
        Endpoint::at("/api/users/sign-in/reject").post(sessions::reject_sign_in),
        Endpoint::at("/api/user/sessions").get(sessions::list),
        Endpoint::at("/api/user/mfa").get(mfa::status),
        Endpoint::at("/api/user/mfa/totp")
            .post(mfa::enrol_totp)
            .delete(mfa::remove_totp),
        Endpoint::at("/api/user/mfa/totp/confirm").post(mfa::confirm_totp),
        Endpoint::at("/api/user/mfa/recovery-codes").post(mfa::regenerate_recovery_codes),
        Endpoint::at("/api/users/login/passkey/options").post(passkeys::login_options),
        Endpoint::at("/api/users/login/passkey").post(passkeys::login),
        Endpoint::at("/api/user/passkeys/options").post(passkeys::registration_options),
        Endpoint::at("/api/user/passkeys")
            .get(passkeys::list)
            .post(passkeys::add),
        Endpoint::at("/api/user/passkeys/{id}").delete(passkeys::remove),
        Endpoint::at("/api/auth/token").post(social::token),
        Endpoint::at("/api/user/identities").get(social::list),
        Endpoint::at("/api/user/identities/{provider}")
            .post(social::link)
            .delete(social::unlink),
        Endpoint::at("/api/auth/{provider}/authorize").get(social::authorize),
        Endpoint::at("/api/auth/{provider}/callback").get(social::callback),
        Endpoint::at("/api/admin/users").get(admin::list_users),
        Endpoint::at("/api/admin/users/{id}").get(admin::show_user),
        Endpoint::at("/api/admin/users/{id}/deactivate").post(admin::deactivate),
        Endpoint::at("/api/admin/users/{id}/activate").post(admin::activate),
        Endpoint::at("/api/admin/users/{id}/roles").put(admin::set_roles),
        Endpoint::at("/api/admin/users/{id}/sessions").delete(admin::end_sessions),
        Endpoint::at("/api/admin/users/{id}/confirmation").post(admin::send_confirmation),
        Endpoint::at("/api/admin/users/{id}/mfa").delete(admin::reset_mfa),
        Endpoint::at("/api/admin/audit").get(admin::audit_trail),
        Endpoint::at("/api/user/sessions/{id}").delete(sessions::delete),
        Endpoint::at("/account/email-confirmed").get(confirm::success_page),
        Endpoint::at("/account/confirm-email").get(confirm::request_page),
        Endpoint::at("/account/reset-password").get(password::reset_page),
        Endpoint::at("/account/revert-email").get(email::revert_page),
        Endpoint::at("/account/reject-sign-in").get(sessions::reject_sign_in_page),
        Endpoint::at("/account/signed-in").get(social::signed_in_page),
        Endpoint::at("/account/passkeys").get(passkeys::passkeys_page),
        Endpoint::at("/account/assets/{name}").get(assets::asset),
        Endpoint::at("/.well-known/jwks.json").get(health::jwks),
        Endpoint::at("/healthz").get(health::healthz),
        Endpoint::at("/readyz").get(health::readyz),
        Endpoint::at("/metrics").get(health::metrics),
    ];
    for endpoint in endpoints {
        cfg.service(endpoint.into_resource());
    }
}

/// A path and the methods it answers. Any other method gets 405 in the error envelope, with the
/// `Allow` header RFC 9110 requires.
pub(crate) struct Endpoint {
    path: &'static str,
    routes: Vec<(Method, Route)>,
}

impl Endpoint {
    pub(crate) fn at(path: &'static str) -> Self {
        Self {
            path,
            routes: Vec::new(),
        }
    }

    pub(crate) fn get<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(Method::GET, handler)
    }

    pub(crate) fn post<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(Method::POST, handler)
    }

    pub(crate) fn put<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(Method::PUT, handler)
    }

    pub(crate) fn delete<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(Method::DELETE, handler)
    }

    fn route<F, Args>(mut self, method: Method, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        let route = web::route().method(method.clone()).to(handler);
        self.routes.push((method, route));
        self
    }

    pub(crate) fn into_resource(self) -> Resource {
        let allow = self
            .routes
            .iter()
            .map(|(method, _)| method.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let resource = self
            .routes
            .into_iter()
            .fold(web::resource(self.path), |resource, (_, route)| {
                resource.route(route)
            });
        resource.default_service(web::to(move || {
            let allow = allow.clone();
            async move { method_not_allowed(&allow) }
        }))
    }
}

fn method_not_allowed(allow: &str) -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header((header::ALLOW, allow.to_string()))
        .json(serde_json::json!({ "errors": { "method": ["Method not allowed."] } }))
}

/// Anything no route matches.
pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

/// A JSON body that may be absent: nothing (or only whitespace) and `null` read as the default,
/// anything else must be a JSON object of `T`'s shape.
pub(crate) fn optional_body<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    match serde_json::from_slice(body).map_err(|e| body_error(&e))? {
        serde_json::Value::Null => Ok(T::default()),
        value => from_object(value),
    }
}
