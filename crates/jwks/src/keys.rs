//! One JWKS document, reduced to the keys we may verify with: Ed25519 signing keys, by `kid`.

use std::{collections::HashMap, sync::Arc};

use jsonwebtoken::{
    DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse},
};
use serde::Deserialize;

/// The verification keys of one JWKS document.
#[derive(Default)]
pub(crate) struct KeySet {
    keys: HashMap<String, Arc<DecodingKey>>,
}

/// The document's shape, with each key left raw so that one key we cannot read (a new key
/// type, an unknown `alg`) does not hide the others.
#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    /// Parses a JWKS document. Keys other than Ed25519 signing keys with a `kid` are skipped:
    /// accounts signs with EdDSA only, so nothing else may verify its tokens.
    pub(crate) fn from_json(body: &[u8]) -> Result<Self, serde_json::Error> {
        let document: Document = serde_json::from_slice(body)?;
        let keys = document
            .keys
            .into_iter()
            .filter_map(|raw| serde_json::from_value::<Jwk>(raw).ok())
            .filter_map(|jwk| usable(&jwk))
            .collect();
        Ok(Self { keys })
    }

    pub(crate) fn get(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        self.keys.get(kid).cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

fn usable(jwk: &Jwk) -> Option<(String, Arc<DecodingKey>)> {
    let kid = jwk.common.key_id.clone()?;
    let AlgorithmParameters::OctetKeyPair(params) = &jwk.algorithm else {
        return None;
    };
    let ed25519 = matches!(params.curve, EllipticCurve::Ed25519);
    let for_eddsa = matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::EdDSA));
    let for_signing = matches!(
        jwk.common.public_key_use,
        None | Some(PublicKeyUse::Signature)
    );
    if !(ed25519 && for_eddsa && for_signing) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((kid, Arc::new(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real Ed25519 public key, base64url (RFC 8037's example).
    const X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    #[test]
    fn reads_the_keys_accounts_publishes() {
        let body = format!(
            r#"{{"keys": [
                {{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": "current", "x": "{X}"}},
                {{"kty": "OKP", "crv": "Ed25519", "kid": "previous", "x": "{X}"}}
            ]}}"#
        );
        let set = KeySet::from_json(body.as_bytes()).unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.get("current").is_some() && set.get("previous").is_some());
        assert!(set.get("other").is_none());
    }

    #[test]
    fn skips_keys_that_must_not_verify_access_tokens() {
        let body = format!(
            r#"{{"keys": [
                {{"kty": "OKP", "crv": "Ed25519", "x": "{X}"}},
                {{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "enc", "kid": "enc", "x": "{X}"}},
                {{"kty": "OKP", "crv": "Ed25519", "alg": "RS256", "kid": "alg", "x": "{X}"}},
                {{"kty": "oct", "k": "c2VjcmV0", "alg": "HS256", "kid": "hmac"}},
                {{"kty": "RSA", "n": "AQAB", "e": "AQAB", "alg": "RS256", "kid": "rsa"}},
                {{"kty": "OKP", "crv": "X25519", "kid": "x25519", "x": "{X}"}},
                {{"kty": "future", "alg": "ML-DSA-65", "kid": "future"}},
                {{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": "good", "x": "{X}"}}
            ]}}"#
        );
        let set = KeySet::from_json(body.as_bytes()).unwrap();
        assert_eq!(set.len(), 1, "only the Ed25519 signing key with a kid");
        assert!(set.get("good").is_some());
    }

    #[test]
    fn a_document_without_keys_is_an_error() {
        assert!(KeySet::from_json(b"<html>").is_err());
        assert!(KeySet::from_json(br#"{"error": "down"}"#).is_err());
        assert_eq!(KeySet::from_json(br#"{"keys": []}"#).unwrap().len(), 0);
    }
}
