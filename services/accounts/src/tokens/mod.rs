//! Signed tokens (access JWTs, confirmation and reset links) and opaque refresh tokens.

mod key_file;
mod keys;
pub mod refresh;
mod sealing;
mod verified;

pub use keys::{KeyError, SigningKeys};
pub use sealing::{SealingKey, SealingKeyError, check_against_database};

use verified::VerifiedTokens;

use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a signed token is for. Each purpose has its own audience and `typ`, so a token minted for
/// one purpose is rejected everywhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Access,
    EmailConfirmation,
    PasswordReset,
    /// The "this wasn't me" link mailed to the old address after an email change.
    EmailRevert,
    /// The "this wasn't me" link of a new sign-in notice.
    SignInReject,
}

impl Purpose {
    fn typ(self) -> &'static str {
        match self {
            Purpose::Access => "access",
            Purpose::EmailConfirmation => "email-confirmation",
            Purpose::PasswordReset => "password-reset",
            Purpose::EmailRevert => "email-revert",
            Purpose::SignInReject => "sign-in-reject",
        }
    }

    fn audience(self) -> &'static str {
        match self {
            Purpose::Access => "accounts-api",
            Purpose::EmailConfirmation => "accounts:email-confirmation",
            Purpose::PasswordReset => "accounts:password-reset",
            Purpose::EmailRevert => "accounts:email-revert",
            Purpose::SignInReject => "accounts:sign-in-reject",
        }
    }

    /// The default lifetime; the email-revert link's comes from settings.
    pub fn lifetime(self) -> Duration {
        match self {
            Purpose::Access => Duration::minutes(15),
            // The seed's CONFIRMATION_LINK_TIMEOUT = 3600.
            Purpose::EmailConfirmation | Purpose::PasswordReset => Duration::hours(1),
            Purpose::EmailRevert | Purpose::SignInReject => Duration::days(7),
        }
    }

    const ALL: [Purpose; 5] = [
        Purpose::Access,
        Purpose::EmailConfirmation,
        Purpose::PasswordReset,
        Purpose::EmailRevert,
        Purpose::SignInReject,
    ];
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: Uuid,
    pub exp: i64,
    pub iat: i64,
    pub jti: Uuid,
    pub typ: String,
    /// Access: the user's token version when issued (logout-all, resets and deactivation move it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ver: Option<i32>,
    /// Access and sign-in reject: the session (refresh-token family) the token belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Uuid>,
    /// Access: when the password that began the session was entered (Unix seconds). A refresh
    /// keeps it, so only a password makes a session fresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// Access: how the session began (RFC 8176 values), kept by refresh.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// Access: the session's assurance level, `aal1` or `aal2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aal: Option<String>,
    /// Access: the user's roles, omitted when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Access: the permissions those roles grant (all of them for a superuser), omitted when none.
    /// Services that verify tokens through JWKS authorize with these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<String>,
    /// Email confirmation: the address being confirmed, so a link for an old address is void.
    /// Sign-in reject: the address the notice was mailed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Password reset: a fingerprint of the current hash, so the link dies once the password changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pwd: Option<String>,
    /// Email confirmation and password reset: the account's email epoch when mailed, so the link
    /// dies with the next email change or revert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i32>,
}

/// A freshly signed token and when it stops working.
#[derive(Debug)]
pub struct SignedToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid token: {0}")]
pub struct InvalidToken(String);

/// Signs and verifies every JWT accounts issues.
pub struct TokenIssuer {
    keys: SigningKeys,
    issuer: String,
    /// One prepared validation per purpose, so verifying allocates nothing for the rules.
    validations: Vec<(Purpose, Validation)>,
    /// Access tokens that already verified, so a repeat skips the signature check.
    verified_access: VerifiedTokens,
}

/// Seconds of clock skew allowed on `exp`, `nbf` and `iat`.
const LEEWAY: i64 = 5;
/// Access tokens remembered as verified (about 1 KiB each).
const VERIFIED_ACCESS_TOKENS: usize = 4096;

impl TokenIssuer {
    /// The issuer the service runs with: the key at `ACCOUNTS_JWT_KEY_FILE` (a development key
    /// created there when allowed), and the public URL as `iss`.
    pub fn load(settings: &crate::config::Settings) -> anyhow::Result<Self> {
        use anyhow::Context;
        let keys = SigningKeys::load(
            &settings.jwt_key_file,
            settings.development_key_allowed(),
            &settings.jwt_previous_key_files,
        )
        .context("loading the JWT signing key (ACCOUNTS_JWT_KEY_FILE)")?;
        let issuer = settings.public_url.as_str().trim_end_matches('/');
        Ok(Self::new(keys, issuer.to_string()))
    }

    pub fn new(keys: SigningKeys, issuer: String) -> Self {
        let validation = |purpose: Purpose| {
            let mut validation = Validation::new(Algorithm::EdDSA);
            validation.set_audience(&[purpose.audience()]);
            validation.set_issuer(&[&issuer]);
            validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
            validation.leeway = LEEWAY as u64;
            validation.validate_nbf = true;
            (purpose, validation)
        };
        let validations = Purpose::ALL.into_iter().map(validation).collect();
        Self {
            keys,
            issuer,
            validations,
            verified_access: VerifiedTokens::new(VERIFIED_ACCESS_TOKENS, LEEWAY),
        }
    }

    pub fn keys(&self) -> &SigningKeys {
        &self.keys
    }

    /// Claims with the standard fields filled in for `purpose`; callers add purpose-specific ones.
    pub fn claims(&self, purpose: Purpose, user_id: Uuid) -> Claims {
        let now = Utc::now();
        Claims {
            iss: self.issuer.clone(),
            aud: purpose.audience().into(),
            sub: user_id,
            iat: now.timestamp(),
            exp: (now + purpose.lifetime()).timestamp(),
            jti: Uuid::new_v4(),
            typ: purpose.typ().into(),
            ver: None,
            sid: None,
            auth_time: None,
            amr: Vec::new(),
            aal: None,
            roles: Vec::new(),
            permissions: Vec::new(),
            email: None,
            pwd: None,
            epoch: None,
        }
    }

    pub fn sign(&self, claims: &Claims) -> SignedToken {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.keys.current_kid().to_string());
        header.typ = Some("JWT".into());
        let token = jsonwebtoken::encode(&header, claims, self.keys.encoding_key())
            .expect("signing with a loaded Ed25519 key cannot fail");
        SignedToken {
            token,
            expires_at: DateTime::from_timestamp(claims.exp, 0).unwrap_or_default(),
        }
    }

    /// Verifies signature, algorithm, issuer, audience, expiry and `typ` for `purpose`.
    ///
    /// An access token that verified before is recognised without a second signature check, its
    /// expiry checked again. Revocation is not decided here: callers check the session and token
    /// version in the database every time.
    pub fn verify(&self, token: &str, purpose: Purpose) -> Result<Claims, InvalidToken> {
        if purpose != Purpose::Access {
            return self.verify_signed(token, purpose);
        }
        let now = Utc::now().timestamp();
        if let Some(claims) = self.verified_access.get(token, now) {
            return Ok(claims);
        }
        let claims = self.verify_signed(token, purpose)?;
        self.verified_access.insert(token, &claims, now);
        Ok(claims)
    }

    /// [`Self::verify`] without the memo: always checks the signature (benchmarks use it).
    pub fn verify_signed(&self, token: &str, purpose: Purpose) -> Result<Claims, InvalidToken> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| InvalidToken(e.to_string()))?;
        let kid = header
            .kid
            .ok_or_else(|| InvalidToken("no kid in header".into()))?;
        let key = self
            .keys
            .decoding_key(&kid)
            .ok_or_else(|| InvalidToken("unknown kid".into()))?;
        let (_, validation) = self
            .validations
            .iter()
            .find(|(p, _)| *p == purpose)
            .expect("every purpose has a validation");
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|e| InvalidToken(e.to_string()))?
            .claims;
        if claims.typ != purpose.typ() {
            return Err(InvalidToken(format!(
                "typ {} is not {}",
                claims.typ,
                purpose.typ()
            )));
        }
        if claims.iat > Utc::now().timestamp() + LEEWAY {
            return Err(InvalidToken("issued in the future".into()));
        }
        Ok(claims)
    }
}
