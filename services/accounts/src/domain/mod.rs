//! Values that are valid by construction: request data becomes one of these at the edge, and
//! deeper code never sees a raw string.

mod email;
pub mod locale;
mod password;
pub mod profile;

pub use email::EmailAddress;
pub use password::{NewPassword, PasswordProblems};

use std::collections::BTreeMap;

/// Validation messages by field, exactly as the error envelope carries them.
pub type FieldErrors = BTreeMap<String, Vec<String>>;

pub const REQUIRED: &str = "This field is required.";

/// Adds `message` to `field` in `errors`.
pub fn push_error(errors: &mut FieldErrors, field: &str, message: impl Into<String>) {
    errors
        .entry(field.to_string())
        .or_default()
        .push(message.into());
}

/// Validates a new password against the user's attributes, recording problems into `errors`.
pub fn new_password(
    errors: &mut FieldErrors,
    password: &str,
    confirm: Option<&str>,
    email: Option<&str>,
    username: Option<&str>,
) -> Option<NewPassword> {
    let mut attributes = Vec::new();
    if let Some(email) = email {
        attributes.push(("email", email));
    }
    if let Some(username) = username {
        attributes.push(("username", username));
    }
    match NewPassword::parse(password, confirm, &attributes) {
        Ok(password) => Some(password),
        Err(problems) => {
            for message in problems.password {
                push_error(errors, "password", message);
            }
            for message in problems.confirm_password {
                push_error(errors, "confirm_password", message);
            }
            None
        }
    }
}
