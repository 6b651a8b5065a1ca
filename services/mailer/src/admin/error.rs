//! The admin API's errors, in the envelope accounts uses: `{"errors": {"<field>": ["message"]}}`.

use actix_web::{
    HttpResponse, ResponseError,
    http::{StatusCode, header},
};
use serde_json::json;

/// The words accounts (and Django REST framework) use, so clients handle both services alike.
pub const NO_CREDENTIALS: &str = "Authentication credentials were not provided.";
pub const BAD_TOKEN: &str = "Invalid authentication. Could not decode token.";
pub const NO_PERMISSION: &str = "You do not have permission to perform this action.";
const UNAVAILABLE: &str = "The service is temporarily unavailable. Try again shortly.";

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no credentials")]
    NoCredentials,
    #[error("bad token: {0}")]
    BadToken(&'static str),
    #[error("no permission")]
    NoPermission,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The request is valid but the resource's state refuses it.
    #[error("conflict on {field}: {message}")]
    Conflict {
        field: &'static str,
        message: String,
    },
    /// Our database cannot be reached; not the caller's fault, and passing.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// accounts' keys cannot be fetched, so the token cannot be checked. The `jwks` crate logs
    /// each failed fetch; logging every refused request too would let a flood flood the logs.
    #[error("accounts' signing keys are unavailable: {0}")]
    KeysUnavailable(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl AdminError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }
}

impl From<jwks::VerifyError> for AdminError {
    fn from(e: jwks::VerifyError) -> Self {
        match e {
            jwks::VerifyError::Invalid(reason) => Self::BadToken(reason),
            jwks::VerifyError::KeysUnavailable(why) => Self::KeysUnavailable(why),
        }
    }
}

impl From<crate::db::PoolError> for AdminError {
    fn from(e: crate::db::PoolError) -> Self {
        Self::Unavailable(format!("the mailer database: {e}"))
    }
}

impl From<diesel::result::Error> for AdminError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Unexpected(e.into())
    }
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NoCredentials | Self::BadToken(_) => StatusCode::UNAUTHORIZED,
            Self::NoPermission => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Invalid { .. } => StatusCode::BAD_REQUEST,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Unavailable(_) | Self::KeysUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        let body = match self {
            Self::NoCredentials => json!({ "errors": { "token": [NO_CREDENTIALS] } }),
            Self::BadToken(reason) => {
                tracing::debug!(reason, "admin API: token refused");
                json!({ "errors": { "token": [BAD_TOKEN] } })
            }
            Self::NoPermission => json!({ "errors": { "permission": [NO_PERMISSION] } }),
            Self::NotFound(what) => json!({ "errors": { *what: ["Not found."] } }),
            Self::Invalid { field, message } | Self::Conflict { field, message } => {
                json!({ "errors": { *field: [message] } })
            }
            Self::Unavailable(why) => {
                tracing::warn!(error = %why, "admin API: a dependency is unavailable");
                response.insert_header((header::RETRY_AFTER, "5"));
                json!({ "errors": { "server": [UNAVAILABLE] } })
            }
            Self::KeysUnavailable(why) => {
                tracing::debug!(error = %why, "admin API: cannot check a token");
                response.insert_header((header::RETRY_AFTER, "5"));
                json!({ "errors": { "server": [UNAVAILABLE] } })
            }
            Self::Unexpected(e) => {
                tracing::error!(error = format!("{e:#}"), "admin API: unexpected error");
                json!({ "errors": { "server": ["Internal server error."] } })
            }
        };
        if matches!(self, Self::NoCredentials | Self::BadToken(_)) {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        response.json(body)
    }
}
