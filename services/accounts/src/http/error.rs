//! The one error type handlers return, rendered as `{"errors": {"<field>": ["message"]}}`.

use std::time::Duration;

use actix_web::{
    HttpRequest, HttpResponse, ResponseError,
    error::{JsonPayloadError, QueryPayloadError},
    http::{StatusCode, header},
};
use serde_json::json;

use crate::domain::FieldErrors;

pub const NO_CREDENTIALS: &str = "Authentication credentials were not provided.";
/// Django REST framework's words for a caller without the permission.
pub const NO_PERMISSION: &str = "You do not have permission to perform this action.";
pub const WRONG_CURRENT_PASSWORD: &str = "Your current password was entered incorrectly.";
pub const REAUTHENTICATE: &str = "Enter your current password to change this.";
pub const SIGN_IN_AGAIN: &str = "Sign in again to change this.";
pub const BAD_CODE: &str = "The code is invalid or expired.";
pub const CODE_NEEDED: &str = "Enter a code from your authenticator app or a recovery code.";
pub const BAD_CHALLENGE: &str = "The sign-in challenge is invalid or expired. Sign in again.";
pub const TOO_MANY_CODES: &str = "Too many wrong codes. Try again later.";
pub const BAD_TOKEN: &str = "Invalid authentication. Could not decode token.";
pub const BAD_LOGIN: &str = "Incorrect email or password.";
pub const BAD_USERNAME_LOGIN: &str = "Incorrect username or password.";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("validation failed: {0:?}")]
    Validation(FieldErrors),
    #[error("unauthorized ({field}): {message}")]
    Unauthorized {
        field: &'static str,
        message: &'static str,
    },
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// A security setting needs a recent, strong sign-in that the caller cannot prove here.
    #[error("forbidden: reauthentication needed")]
    Reauthenticate,
    /// The caller is signed in but lacks the permission (Django REST framework's words).
    #[error("forbidden: no permission")]
    NoPermission,
    #[error("not found")]
    NotFound,
    #[error("the request body is too large")]
    PayloadTooLarge,
    #[error("throttled: {message}")]
    Throttled {
        message: &'static str,
        retry_after: Duration,
    },
    #[error("a dependency is unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ApiError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let mut errors = FieldErrors::new();
        crate::domain::push_error(&mut errors, field, message);
        Self::Validation(errors)
    }

    pub fn bad_token() -> Self {
        Self::Unauthorized {
            field: "token",
            message: BAD_TOKEN,
        }
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        let unavailable = crate::db::is_unavailable(&e);
        if unavailable {
            Self::Unavailable(e.into())
        } else {
            Self::Unexpected(e.into())
        }
    }
}

impl From<crate::db::PoolError> for ApiError {
    fn from(e: crate::db::PoolError) -> Self {
        Self::Unavailable(e.into())
    }
}

impl From<crate::hashing::HashingError> for ApiError {
    fn from(e: crate::hashing::HashingError) -> Self {
        match e {
            crate::hashing::HashingError::Busy { retry_after } => Self::Throttled {
                message: "Too many sign-ins in progress. Try again shortly.",
                retry_after,
            },
            other => Self::Unexpected(other.into()),
        }
    }
}

impl From<crate::throttle::ThrottleError> for ApiError {
    fn from(e: crate::throttle::ThrottleError) -> Self {
        match e {
            crate::throttle::ThrottleError::Throttled(throttled) => Self::Throttled {
                message: throttled.message,
                retry_after: throttled.retry_after,
            },
            crate::throttle::ThrottleError::Database(e) => e.into(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::Reauthenticate | ApiError::NoPermission => {
                StatusCode::FORBIDDEN
            }
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        let body = match self {
            ApiError::Validation(errors) => json!({ "errors": errors }),
            ApiError::Unauthorized { field, message } => json!({ "errors": { *field: [message] } }),
            ApiError::Forbidden(message) => json!({ "errors": { "account": [message] } }),
            ApiError::Reauthenticate => {
                json!({ "errors": { "reauthentication": [SIGN_IN_AGAIN] } })
            }
            ApiError::NoPermission => {
                json!({ "errors": { "permission": [NO_PERMISSION] } })
            }
            ApiError::NotFound => json!({ "errors": { "route": ["Not found."] } }),
            ApiError::PayloadTooLarge => {
                json!({ "errors": { "body": ["The request body is too large."] } })
            }
            ApiError::Throttled {
                message,
                retry_after,
            } => {
                response.insert_header((
                    header::RETRY_AFTER,
                    retry_after.as_secs().max(1).to_string(),
                ));
                json!({ "errors": { "throttle": [message] } })
            }
            ApiError::Unavailable(e) => {
                tracing::warn!(error = %format!("{e:#}"), "dependency unavailable");
                response.insert_header((header::RETRY_AFTER, "1"));
                json!({ "errors": { "server": ["The service is temporarily unavailable. Try again shortly."] } })
            }
            ApiError::Unexpected(e) => {
                tracing::error!(error = ?e, "unexpected error");
                json!({ "errors": { "server": ["Internal server error."] } })
            }
        };
        response.json(body)
    }
}

/// Turns actix's JSON extractor failures into the envelope: 413 for size, 400 otherwise, with
/// serde's description (it names the field and the expected type, never echoes secrets).
pub fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let api = match &err {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            ApiError::PayloadTooLarge
        }
        JsonPayloadError::Payload(actix_web::error::PayloadError::Overflow) => {
            ApiError::PayloadTooLarge
        }
        JsonPayloadError::ContentType => ApiError::field(
            "body",
            "Expected a JSON body (Content-Type: application/json).",
        ),
        JsonPayloadError::Deserialize(e) => ApiError::field("body", describe_serde(e)),
        _ => ApiError::field("body", "The request body could not be read."),
    };
    api.into()
}

/// A JSON body read by hand (one that may be absent) that does not parse: the same 400 the JSON
/// extractor answers.
pub fn body_error(e: &serde_json::Error) -> ApiError {
    ApiError::field("body", describe_serde(e))
}

pub fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::field("query", format!("Invalid query string: {err}")).into()
}

/// The message of a property a body must not have. The name is the caller's own key, not a value;
/// it is cut short all the same.
pub fn unknown_property(name: &str) -> String {
    let name: String = name.chars().take(64).collect();
    format!("Unknown property `{name}`.")
}

fn describe_serde(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof => {
            format!("Malformed JSON at line {} column {}.", e.line(), e.column())
        }
        _ if e.to_string().starts_with("unknown field") => {
            // "unknown field `x`, expected ...": the name is the caller's own key, not a value.
            let text = e.to_string();
            unknown_property(text.split('`').nth(1).unwrap_or_default())
        }
        _ => {
            // serde's message may quote the offending value (a password, say): keep only what was
            // expected, e.g. "expected a string".
            let text = e.to_string();
            let expected = text
                .split(", expected ")
                .nth(1)
                .and_then(|rest| rest.split(" at line ").next())
                .unwrap_or("a different type");
            format!("Invalid request body: a value has the wrong type (expected {expected}).")
        }
    }
}
