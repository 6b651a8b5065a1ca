//! The pages' script and stylesheet files (`GET /account/assets/{name}`).

use actix_web::{HttpResponse, http::header, web};

use crate::{http::error::ApiError, http::pages};

pub async fn asset(name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (content_type, body) = pages::asset(&name).ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(body))
}
