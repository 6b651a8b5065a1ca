//! The operators' HTTP API on MAILER_ADDR: failed sends, listed, shown and retried. Each route
//! names the permission it needs ([`auth::Authorized`]); tokens are accounts' access tokens,
//! verified against its JWKS (the `jwks` crate), so the mailer never calls accounts otherwise.

pub mod auth;
pub mod error;
mod failed_sends;

use actix_web::{HttpResponse, http::header, middleware::DefaultHeaders, web};
use jwks::{AccessTokenVerifier, VerifierConfig};

use crate::{config::Settings, db::Pool};
use error::AdminError;

pub struct AdminState {
    pub pool: Pool,
    pub verifier: AccessTokenVerifier,
    /// What the operator's retry workflow needs (it is the one `mailer failed retry` runs).
    pub settings: Settings,
}

/// The token verifier, from settings. It fetches nothing yet: the mailer starts while accounts is down.
pub fn verifier(settings: &Settings) -> anyhow::Result<AccessTokenVerifier> {
    let mut config = VerifierConfig::new(settings.jwks_url.clone(), settings.jwt_issuer.clone());
    config.min_refetch_interval = settings.jwks_refetch_interval;
    Ok(AccessTokenVerifier::new(config)?)
}

pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::scope("/admin")
            // Shown failed sends carry live links (confirmation, reset): never cache them.
            .wrap(DefaultHeaders::new().add((header::CACHE_CONTROL, "no-store")))
            .route("/failed-sends", web::get().to(failed_sends::list))
            .route("/failed-sends/{id}", web::get().to(failed_sends::show))
            .route(
                "/failed-sends/{id}/retry",
                web::post().to(failed_sends::retry),
            )
            .default_service(web::to(not_found)),
    );
}

async fn not_found() -> Result<HttpResponse, AdminError> {
    Err(AdminError::NotFound("route"))
}
