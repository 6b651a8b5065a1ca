//! The OpenAPI document, assembled here from the handlers' annotations, and the routes that serve
//! it (`/openapi.json`) and the offline docs page (`/docs`). Handlers never import this module.

use actix_web::{HttpResponse, web};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        Ref, RefOr, ResponseBuilder,
        header::HeaderBuilder,
        schema::{ObjectBuilder, Type},
        security::{ApiKey, ApiKeyValue, SecurityScheme},
    },
};

use crate::routes::{
    Endpoint, admin, confirm, email, health, mfa, passkeys, password, schemas::ErrorBody, sessions,
    social, user, users,
};

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

/// The answers that middleware and shared extractors give on any route, whatever its handler:
/// 413 for a body over the limit (checked on every route, before the handler), and on the API
/// routes 503 while the database is unreachable. Every 429 carries `Retry-After`.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let error = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        utoipa::openapi::ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            )
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                responses
                    .entry("413".into())
                    .or_insert_with(|| error("The request body is larger than 64 KiB"));
                if path.starts_with("/api/") {
                    responses
                        .entry("503".into())
                        .or_insert_with(|| error("The database is unreachable; see Retry-After"));
                }
                if let Some(RefOr::T(throttled)) = responses.get_mut("429") {
                    throttled.headers.insert(
                        "Retry-After".into(),
                        HeaderBuilder::new()
                            .schema(
                                ObjectBuilder::new()
                                    .schema_type(Type::Integer)
                                    .minimum(Some(1)),
                            )
                            .description(Some("Seconds until the next attempt can succeed"))
                            .build(),
                    );
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "accounts", description = "Users, sessions and tokens. Errors are always {\"errors\": {\"<field>\": [\"message\"]}}. Request bodies refuse unknown properties (400). A method a path does not answer gets 405 with an Allow header. Browser apps on the origins listed in ACCOUNTS_CORS_ORIGINS may call the API: preflights need no token, Retry-After and X-Request-Id are readable, and there is no credentials mode (tokens travel in the Authorization header); other origins read nothing."),
    paths(
        users::register, users::login, users::login_second_factor, users::refresh, users::logout,
        mfa::status, mfa::enrol_totp, mfa::confirm_totp, mfa::remove_totp,
        mfa::regenerate_recovery_codes,
        social::authorize, social::callback, social::token, social::list, social::link,
        social::unlink, social::signed_in_page,
        passkeys::registration_options, passkeys::add, passkeys::list, passkeys::remove,
        passkeys::login_options, passkeys::login, passkeys::passkeys_page,
        user::current, user::update,
        confirm::confirm, confirm::resend, confirm::success_page, confirm::request_page,
        password::forgot, password::reset, password::reset_page,
        email::revert, email::revert_page,
        sessions::list, sessions::delete, sessions::reject_sign_in, sessions::reject_sign_in_page,
        admin::list_users, admin::show_user, admin::deactivate, admin::activate, admin::set_roles,
        admin::end_sessions, admin::send_confirmation, admin::reset_mfa, admin::audit_trail,
        health::healthz, health::readyz, health::metrics, health::jwks,
    ),
    components(schemas(ErrorBody)),
    modifiers(&TokenAuth, &CommonResponses),
)]
pub struct ApiDoc;

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Serves the document and the docs page.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let document = web::Data::new(document());
    cfg.service(
        Endpoint::at("/openapi.json")
            .get(|document: web::Data<utoipa::openapi::OpenApi>| async move {
                HttpResponse::Ok().json(document.get_ref())
            })
            .into_resource()
            .app_data(document.clone()),
    )
    .service(
        utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}")
            .url("/docs/openapi.json", document.get_ref().clone()),
    )
    .service(
        Endpoint::at("/docs")
            .get(|| async {
                HttpResponse::Found()
                    .insert_header(("Location", "/docs/"))
                    .finish()
            })
            .into_resource(),
    );
}
