//! What every route shares: the error envelope, the client's address, request ids and logs, body
//! limits, and the static pages.

pub mod client;
pub mod error;
pub mod json;
pub mod pages;
pub mod policy;
pub mod telemetry;
