//! Verifies the access tokens `accounts` issues, with the public keys it publishes at
//! `/.well-known/jwks.json`, so a service authorizes callers without calling accounts.
//!
//! ```no_run
//! # async fn example(jwt: &str) -> Result<(), Box<dyn std::error::Error>> {
//! let url = "http://localhost:8080/.well-known/jwks.json".parse()?;
//! let config = jwks::VerifierConfig::new(url, "http://localhost:8080");
//! // Once, at startup; it fetches nothing yet. Share it (it is a cheap `Clone`).
//! let verifier = jwks::AccessTokenVerifier::new(config)?;
//! // Per request: 401 on `VerifyError::Invalid`, 503 on `VerifyError::KeysUnavailable`.
//! let token = verifier.verify(jwt).await?;
//! if token.has_permission("mail.read") { /* ... */ }
//! # Ok(()) }
//! ```
//!
//! A grant or a revocation reaches a verifying service within the token's lifetime (15 minutes):
//! the token, not a database, is the authority here.

mod claims;
mod keys;
mod verifier;

pub use claims::{ACCESS_AUDIENCE, AccessToken, LEEWAY_SECONDS};
pub use verifier::{AccessTokenVerifier, ClientError, VerifierConfig, VerifyError};
