//! What a valid access token says, and the rules that decide validity: the same ones accounts
//! applies to its own access tokens.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;
use uuid::Uuid;

use crate::VerifyError;

/// The audience of accounts' access tokens (its other tokens, such as reset links, have others).
pub const ACCESS_AUDIENCE: &str = "accounts-api";

/// Clock skew tolerated on `exp` and `iat`, as accounts tolerates it.
pub const LEEWAY_SECONDS: u64 = 5;

/// The `typ` claim of an access token.
const ACCESS_TYP: &str = "access";

/// A verified access token: who the caller is and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// The user.
    pub sub: Uuid,
    /// The token's own id.
    pub jti: Uuid,
    /// The session (refresh-token family) it was issued under, when accounts names one.
    pub sid: Option<Uuid>,
    /// When it stops working (Unix seconds).
    pub exp: i64,
    /// The user's roles when the token was issued; empty when the token carries none.
    pub roles: Vec<String>,
    /// The permissions those roles grant; empty when the token carries none.
    pub permissions: Vec<String>,
    /// How the session began (RFC 8176: `pwd`, `otp`, `mfa`, ...); empty for tokens from before
    /// accounts recorded it.
    pub amr: Vec<String>,
    /// The session's assurance level, `aal1` or `aal2`; `aal1` when the token says nothing.
    pub aal: String,
}

impl AccessToken {
    pub fn has_permission(&self, permission: &str) -> bool {
        self.permissions.iter().any(|p| p == permission)
    }

    /// Whether the session began with two factors, for a service that wants them.
    pub fn two_factors(&self) -> bool {
        self.aal == "aal2"
    }
}

/// The claims we read. `iss` and `aud` are checked by `jsonwebtoken` against [`Rules`].
#[derive(Deserialize)]
struct Claims {
    sub: Uuid,
    jti: Uuid,
    exp: i64,
    iat: i64,
    typ: String,
    #[serde(default)]
    sid: Option<Uuid>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    permissions: Vec<String>,
    #[serde(default)]
    amr: Vec<String>,
    #[serde(default)]
    aal: Option<String>,
}

/// The checks every access token must pass once its signing key is known.
pub(crate) struct Rules {
    validation: Validation,
}

impl Rules {
    pub(crate) fn new(issuer: &str, audience: &str) -> Self {
        // `Validation::new` accepts exactly one algorithm: a token whose header names another (HS256
        // signed with our public key, `none`) fails before any key is used.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        Self { validation }
    }

    /// Verifies `token`'s signature with `key` and its claims; `now` is Unix seconds.
    pub(crate) fn check(
        &self,
        token: &str,
        key: &DecodingKey,
        now: i64,
    ) -> Result<AccessToken, VerifyError> {
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|e| VerifyError::Invalid(reason(e.kind())))?
            .claims;
        if claims.typ != ACCESS_TYP {
            return Err(VerifyError::Invalid("not an access token"));
        }
        if claims.iat > now + LEEWAY_SECONDS as i64 {
            return Err(VerifyError::Invalid("issued in the future"));
        }
        Ok(AccessToken {
            sub: claims.sub,
            jti: claims.jti,
            sid: claims.sid,
            exp: claims.exp,
            roles: claims.roles,
            permissions: claims.permissions,
            amr: claims.amr,
            aal: claims
                .aal
                .filter(|a| a == "aal2")
                .unwrap_or_else(|| "aal1".into()),
        })
    }
}

/// Why `jsonwebtoken` refused a token, in words that never quote the token or its claim values.
fn reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::ExpiredSignature => "expired",
        ErrorKind::ImmatureSignature => "not valid yet",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidAlgorithm => "wrong algorithm",
        ErrorKind::MissingRequiredClaim(_) => "a required claim is missing",
        ErrorKind::InvalidClaimFormat(_) | ErrorKind::Json(_) => "malformed claims",
        _ => "malformed token",
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{Value, json};

    use super::*;

    const ISSUER: &str = "http://localhost:8080";

    struct TestKey {
        encoding: EncodingKey,
        decoding: DecodingKey,
    }

    fn key() -> TestKey {
        let pair = Ed25519KeyPair::generate().unwrap();
        let pkcs8 = pair.to_pkcs8v1().unwrap();
        TestKey {
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            decoding: DecodingKey::from_ed_der(pair.public_key().as_ref()),
        }
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    /// The claims accounts puts in a support user's access token.
    fn claims() -> Value {
        let now = now();
        json!({
            "iss": ISSUER,
            "aud": ACCESS_AUDIENCE,
            "sub": Uuid::new_v4(),
            "exp": now + 900,
            "iat": now,
            "jti": Uuid::new_v4(),
            "typ": "access",
            "sid": Uuid::new_v4(),
            "ver": 1,
            "auth_time": now,
            "roles": ["support"],
            "permissions": ["mail.read", "mail.retry", "sessions.revoke", "users.read"],
            "amr": ["pwd", "otp", "mfa"],
            "aal": "aal2",
        })
    }

    fn sign(key: &TestKey, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("test".into());
        jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
    }

    fn check(key: &TestKey, token: &str) -> Result<AccessToken, VerifyError> {
        Rules::new(ISSUER, ACCESS_AUDIENCE).check(token, &key.decoding, now())
    }

    fn with(change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
        let mut claims = claims();
        change(claims.as_object_mut().unwrap());
        claims
    }

    fn assert_invalid(result: Result<AccessToken, VerifyError>, why: &str) {
        assert!(
            matches!(result, Err(VerifyError::Invalid(_))),
            "{why}: {result:?}"
        );
    }

    #[test]
    fn a_support_token_yields_its_subject_roles_and_permissions() {
        let key = key();
        let claims = claims();
        let token = check(&key, &sign(&key, &claims)).unwrap();
        assert_eq!(token.sub.to_string(), claims["sub"].as_str().unwrap());
        assert_eq!(token.roles, ["support"]);
        assert!(token.has_permission("mail.retry"));
        assert!(!token.has_permission("roles.manage"));
        assert!(!token.has_permission("mail"));
        assert_eq!(token.amr, ["pwd", "otp", "mfa"]);
        assert!(token.two_factors());
    }

    #[test]
    fn a_token_without_assurance_reads_as_one_factor() {
        let key = key();
        let claims = with(|c| {
            c.remove("amr");
            c.insert("aal".into(), json!("aal3"));
        });
        let token = check(&key, &sign(&key, &claims)).unwrap();
        assert!(token.amr.is_empty());
        assert!(!token.two_factors(), "an unknown level is not two factors");
    }

    #[test]
    fn absent_roles_and_permissions_are_empty() {
        let key = key();
        let claims = with(|c| {
            c.remove("roles");
            c.remove("permissions");
        });
        let token = check(&key, &sign(&key, &claims)).unwrap();
        assert!(token.roles.is_empty() && token.permissions.is_empty());
        assert!(!token.has_permission("mail.read"));
    }

    #[test]
    fn a_wrong_issuer_or_audience_is_refused() {
        let key = key();
        for (claim, value) in [
            ("iss", "https://evil.example"),
            ("iss", "http://localhost:8080/"),
            ("aud", "accounts:password-reset"),
            ("aud", "another-api"),
        ] {
            let claims = with(|c| {
                c.insert(claim.into(), value.into());
            });
            assert_invalid(check(&key, &sign(&key, &claims)), value);
        }
    }

    #[test]
    fn a_token_for_another_purpose_is_refused() {
        let key = key();
        for typ in ["password-reset", "email-confirmation", "refresh", ""] {
            let claims = with(|c| {
                c.insert("typ".into(), typ.into());
            });
            assert_invalid(check(&key, &sign(&key, &claims)), typ);
        }
    }

    #[test]
    fn every_required_claim_is_required() {
        let key = key();
        for claim in ["iss", "aud", "sub", "exp", "iat", "jti", "typ"] {
            let claims = with(|c| {
                c.remove(claim);
            });
            assert_invalid(check(&key, &sign(&key, &claims)), claim);
        }
    }

    #[test]
    fn an_expired_token_is_refused_beyond_the_leeway() {
        let key = key();
        let expired = with(|c| {
            c.insert("exp".into(), (now() - 10).into());
        });
        assert_invalid(check(&key, &sign(&key, &expired)), "expired");
        let within_leeway = with(|c| {
            c.insert("exp".into(), (now() - 2).into());
        });
        assert!(check(&key, &sign(&key, &within_leeway)).is_ok());
    }

    #[test]
    fn a_token_issued_in_the_future_is_refused() {
        let key = key();
        let claims = with(|c| {
            c.insert("iat".into(), (now() + 60).into());
        });
        assert_invalid(check(&key, &sign(&key, &claims)), "iat");
    }

    #[test]
    fn a_subject_that_is_not_a_user_id_is_refused() {
        let key = key();
        let claims = with(|c| {
            c.insert("sub".into(), "admin".into());
        });
        assert_invalid(check(&key, &sign(&key, &claims)), "sub");
    }

    #[test]
    fn another_keys_signature_is_refused() {
        let (ours, theirs) = (key(), key());
        assert_invalid(check(&ours, &sign(&theirs, &claims())), "foreign key");
    }

    #[test]
    fn alg_none_and_hmac_with_the_public_key_are_refused() {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        let b64 = |bytes: Vec<u8>| URL_SAFE_NO_PAD.encode(bytes);
        let key = key();
        let body = b64(serde_json::to_vec(&claims()).unwrap());
        let none = format!("{}.{body}.", b64(br#"{"alg":"none","typ":"JWT"}"#.to_vec()));
        assert_invalid(check(&key, &none), "alg none");

        // The classic confusion: HS256 keyed with bytes an attacker can read (the public key).
        let pair = Ed25519KeyPair::generate().unwrap();
        let public = pair.public_key().as_ref().to_vec();
        let hmac = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(&public),
        )
        .unwrap();
        let decoding = DecodingKey::from_ed_der(&public);
        let rules = Rules::new(ISSUER, ACCESS_AUDIENCE);
        assert_invalid(rules.check(&hmac, &decoding, now()), "HS256");
    }
}
