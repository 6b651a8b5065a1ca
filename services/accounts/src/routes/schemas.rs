//! The request and response envelopes several routes share, with the constraints the OpenAPI
//! document states about them. Handlers import these; [`crate::routes::openapi`] assembles the document
//! from the handlers, and nothing here imports a handler.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    domain::REQUIRED,
    http::error::{ApiError, unknown_property},
    signin::step_up::Offered,
    users::UserBody,
};

/// Conduit's `{"user": {...}}` request envelope. Unknown properties are refused (400), so a
/// misspelt field never passes for an absent one; a body without `user` is told so first.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserEnvelope<T> {
    #[schema(required = true, nullable = false)]
    user: Option<T>,
    /// The first property besides `user`, refused once `user` is known to be there.
    #[schema(ignore)]
    unknown: Option<String>,
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for UserEnvelope<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        struct Raw {
            user: Option<serde_json::Value>,
            #[serde(flatten)]
            others: BTreeMap<String, serde::de::IgnoredAny>,
        }
        let raw = Raw::deserialize(deserializer)?;
        // `user` is an object: serde would also read `T` from an array of its field values.
        let user = match raw.user {
            None | Some(serde_json::Value::Null) => None,
            Some(object @ serde_json::Value::Object(_)) => {
                Some(T::deserialize(object).map_err(D::Error::custom)?)
            }
            Some(_) => return Err(D::Error::custom("invalid type, expected an object")),
        };
        Ok(Self {
            user,
            unknown: raw.others.into_keys().next(),
        })
    }
}

impl<T> UserEnvelope<T> {
    pub fn into_inner(self) -> Result<T, ApiError> {
        let user = self.user.ok_or_else(|| ApiError::field("user", REQUIRED))?;
        match self.unknown {
            Some(name) => Err(ApiError::field("body", unknown_property(&name))),
            None => Ok(user),
        }
    }
}

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
    #[schema(format = Email)]
    pub email: String,
    pub verified: bool,
}

#[derive(Serialize, ToSchema)]
pub struct ConfirmedResponse {
    pub user: ConfirmedUser,
}

/// `{}`: the body of a 202.
#[derive(Serialize, ToSchema)]
pub struct Accepted {}

/// `{"email"}`: the body of the routes that mail a link to an address.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailOnly {
    #[schema(required = true, nullable = false, format = Email, max_length = 254)]
    pub email: Option<String>,
}

/// Proof of a recent sign-in for a security setting: `{}` from a fresh session (see step-up),
/// else `current_password`, plus `code` (a TOTP or recovery code) when the account has TOTP; an
/// account whose only second factor is a passkey signs in again instead.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepUp {
    current_password: Option<String>,
    /// A TOTP or recovery code.
    code: Option<String>,
}

impl StepUp {
    pub fn offered(&self) -> Offered<'_> {
        Offered {
            current_password: self.current_password.as_deref(),
            code: self.code.as_deref(),
        }
    }
}
