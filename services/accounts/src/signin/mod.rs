//! Sign-in: identify the user, check the first factor, the second when the account has one, then
//! begin the session. Every way in ends in [`begin`].

pub mod devices;
pub mod recovery;
mod session;

pub use session::{Notice, access_token, begin, body_with_tokens};
