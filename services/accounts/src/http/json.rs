//! JSON bodies that must be objects. serde reads a struct from a JSON array of its field values
//! too (`["token", null]`), which no client means and the OpenAPI document does not allow; this
//! extractor takes an object, then the struct, with the error envelope for anything else.

use std::{future::Future, pin::Pin};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::{ApiError, body_error};

/// A request body that is a JSON object of `T`'s shape.
pub struct JsonObject<T>(pub T);

impl<T> JsonObject<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for JsonObject<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonObject<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        // The JSON extractor keeps its configuration: content type, size limit, error envelope.
        let object = web::Json::<Value>::from_request(req, payload);
        Box::pin(async move {
            let value = object.await?.into_inner();
            Ok(JsonObject(from_object(value)?))
        })
    }
}

/// `T` from a JSON object; anything else (an array of field values included) is a 400.
pub fn from_object<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    match value {
        Value::Object(_) => serde_json::from_value(value).map_err(|e| body_error(&e)),
        _ => Err(ApiError::field("body", "Expected a JSON object.")),
    }
}
