//! Who may call the admin API: an accounts access token (`Authorization: Bearer <jwt>`, or
//! Conduit's `Token <jwt>`) whose `permissions` include the one the route names.

use std::{future::Future, marker::PhantomData, pin::Pin};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use jwks::AccessToken;

use super::{AdminState, error::AdminError};

/// A permission a route requires, as a type, so the handler's signature names it:
/// `Authorized<MailRetry>`.
pub trait Required {
    const PERMISSION: &'static str;
}

/// Requires `mail.read`: list and show failed sends.
pub struct MailRead;
impl Required for MailRead {
    const PERMISSION: &'static str = "mail.read";
}

/// Requires `mail.retry`: hand a failed send back to the sender.
pub struct MailRetry;
impl Required for MailRetry {
    const PERMISSION: &'static str = "mail.retry";
}

/// A caller whose verified access token grants `P`. 401 without a valid token, 403 without the
/// permission, 503 when accounts' keys cannot be fetched to check the token.
pub struct Authorized<P: Required> {
    pub token: AccessToken,
    required: PhantomData<P>,
}

impl<P: Required + 'static> FromRequest for Authorized<P> {
    type Error = AdminError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let jwt = bearer_token(req);
        let state = req.app_data::<web::Data<AdminState>>().cloned();
        Box::pin(async move {
            let jwt = jwt?;
            let state =
                state.ok_or_else(|| anyhow::anyhow!("the admin state is not configured"))?;
            let token = state.verifier.verify(&jwt).await?;
            if !token.has_permission(P::PERMISSION) {
                return Err(AdminError::NoPermission);
            }
            Ok(Self {
                token,
                required: PhantomData,
            })
        })
    }
}

/// The JWT of `Authorization: Bearer <jwt>` or `Token <jwt>` (scheme case-insensitive).
fn bearer_token(req: &HttpRequest) -> Result<String, AdminError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(AdminError::NoCredentials);
    };
    let value = value
        .to_str()
        .map_err(|_| AdminError::BadToken("not ASCII"))?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(AdminError::BadToken("no scheme"))?;
    if !(scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token")) {
        return Err(AdminError::BadToken("unknown scheme"));
    }
    match token.trim() {
        "" => Err(AdminError::NoCredentials),
        token => Ok(token.to_string()),
    }
}
