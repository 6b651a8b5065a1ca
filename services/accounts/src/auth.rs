//! The authentication extractor: a handler that takes [`Authenticated`] only runs for a live,
//! active user whose token was issued under their current token version.

use std::{future::Future, pin::Pin};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};

use crate::{
    error::{ApiError, NO_CREDENTIALS},
    state::AppState,
    tokens::{Claims, Purpose},
    users::{self, User},
};

pub const DEACTIVATED: &str = "This account is deactivated.";

pub struct Authenticated {
    pub user: User,
    pub claims: Claims,
    /// The access token as presented.
    pub token: String,
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer_token(req);
        Box::pin(async move {
            let state = state.expect("AppState is registered");
            let token = token?;
            let claims = state
                .tokens
                .verify(&token, Purpose::Access)
                .map_err(|_| ApiError::bad_token())?;
            let mut conn = state.pool.get().await?;
            let user = users::find(&mut conn, claims.sub)
                .await?
                .ok_or_else(ApiError::bad_token)?;
            if claims.ver != Some(user.token_version) {
                return Err(ApiError::bad_token());
            }
            if !user.active {
                return Err(ApiError::Forbidden(DEACTIVATED));
            }
            Ok(Self {
                user,
                claims,
                token,
            })
        })
    }
}

/// Accepts `Token <jwt>` (Conduit) and `Bearer <jwt>`.
fn bearer_token(req: &HttpRequest) -> Result<String, ApiError> {
    let missing = ApiError::Unauthorized {
        field: "token",
        message: NO_CREDENTIALS,
    };
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(missing)?
        .to_str()
        .map_err(|_| ApiError::bad_token())?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or_else(ApiError::bad_token)?;
    if !(scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer")) {
        return Err(ApiError::bad_token());
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::Unauthorized {
            field: "token",
            message: NO_CREDENTIALS,
        });
    }
    Ok(token.to_string())
}
