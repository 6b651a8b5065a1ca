//! Ed25519 signing keys: the current one signs, it and any previous ones verify, and all of them are
//! published as a JWKS so other services verify tokens without a shared secret.

use std::path::Path;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32 key bytes follow it.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{path} does not exist; create one with `openssl genpkey -algorithm ed25519 -out {path}`, or unset ACCOUNTS_JWT_KEY_FILE to use a development key"
    )]
    Missing { path: String },
    #[error(
        "ACCOUNTS_JWT_KEY_FILE is not set, and ACCOUNTS_PUBLIC_URL ({public_url}) is not localhost or 127.0.0.1, so no development key is made. Create a signing key with `openssl genpkey -algorithm ed25519 -out jwt-key.pem` (keep it secret, mode 0600) and set ACCOUNTS_JWT_KEY_FILE to its path"
    )]
    NotConfigured { public_url: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a PEM Ed25519 key (PRIVATE KEY, or PUBLIC KEY for previous keys): {reason}"
    )]
    Invalid { path: String, reason: String },
}

struct VerificationKey {
    kid: String,
    public: [u8; 32],
    decoding: DecodingKey,
}

pub struct SigningKeys {
    encoding: EncodingKey,
    /// The current key first, then previous keys still accepted during a rotation.
    verification: Vec<VerificationKey>,
}

impl SigningKeys {
    /// Loads the signing key at `path`. When `create_if_missing` (the default development path) and
    /// the file is absent, generates a key there and warns.
    pub fn load(
        path: &Path,
        create_if_missing: bool,
        previous: &[impl AsRef<Path>],
    ) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        if !path.exists() {
            if !create_if_missing {
                return Err(KeyError::Missing { path: shown });
            }
            write_development_key(path).map_err(|source| KeyError::Io {
                path: shown.clone(),
                source,
            })?;
            tracing::warn!(path = %shown, "created a development JWT signing key; configure ACCOUNTS_JWT_KEY_FILE in production");
        }
        let pem = read(path)?;
        Self::from_pem(&pem, &shown, previous)
    }

    fn from_pem(
        pem_text: &[u8],
        display: &str,
        previous: &[impl AsRef<Path>],
    ) -> Result<Self, KeyError> {
        let invalid = |reason: String| KeyError::Invalid {
            path: display.to_string(),
            reason,
        };
        let parsed = pem::parse(pem_text).map_err(|e| invalid(e.to_string()))?;
        if parsed.tag() != "PRIVATE KEY" {
            return Err(invalid(format!("found {}", parsed.tag())));
        }
        let pair =
            Ed25519KeyPair::from_pkcs8(parsed.contents()).map_err(|e| invalid(e.to_string()))?;
        let encoding = EncodingKey::from_ed_der(parsed.contents());
        let mut verification = vec![verification_key(public_bytes(&pair))];
        for path in previous {
            let path = path.as_ref();
            let public = previous_public_key(&read(path)?, &path.display().to_string())?;
            verification.push(verification_key(public));
        }
        Ok(Self {
            encoding,
            verification,
        })
    }

    pub fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }

    pub fn current_kid(&self) -> &str {
        &self.verification[0].kid
    }

    pub fn decoding_key(&self, kid: &str) -> Option<&DecodingKey> {
        self.verification
            .iter()
            .find(|k| k.kid == kid)
            .map(|k| &k.decoding)
    }

    /// The JSON Web Key Set of every verification key.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .verification
            .iter()
            .map(|k| {
                json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "alg": "EdDSA",
                    "use": "sig",
                    "kid": k.kid,
                    "x": URL_SAFE_NO_PAD.encode(k.public),
                })
            })
            .collect();
        json!({ "keys": keys })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => KeyError::Missing {
            path: path.display().to_string(),
        },
        _ => KeyError::Io {
            path: path.display().to_string(),
            source,
        },
    })
}

fn public_bytes(pair: &Ed25519KeyPair) -> [u8; 32] {
    pair.public_key()
        .as_ref()
        .try_into()
        .expect("an Ed25519 public key is 32 bytes")
}

fn verification_key(public: [u8; 32]) -> VerificationKey {
    // RFC 7638-style: a stable id derived from the key itself, so rotation needs no bookkeeping.
    let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(public)[..12]);
    let decoding = DecodingKey::from_ed_der(&public);
    VerificationKey {
        kid,
        public,
        decoding,
    }
}

fn previous_public_key(pem_text: &[u8], display: &str) -> Result<[u8; 32], KeyError> {
    let invalid = |reason: &str| KeyError::Invalid {
        path: display.to_string(),
        reason: reason.to_string(),
    };
    let parsed = pem::parse(pem_text).map_err(|e| invalid(&e.to_string()))?;
    match parsed.tag() {
        "PRIVATE KEY" => Ed25519KeyPair::from_pkcs8(parsed.contents())
            .map(|pair| public_bytes(&pair))
            .map_err(|e| invalid(&e.to_string())),
        "PUBLIC KEY" => parsed
            .contents()
            .strip_prefix(&ED25519_SPKI_PREFIX)
            .and_then(|key| key.try_into().ok())
            .ok_or_else(|| invalid("not an Ed25519 public key")),
        other => Err(invalid(&format!("found {other}"))),
    }
}

/// Generates a PKCS#8 v1 Ed25519 key (the same format `openssl genpkey` writes), mode 0600.
fn write_development_key(path: &Path) -> std::io::Result<()> {
    let pair =
        Ed25519KeyPair::generate().map_err(|_| std::io::Error::other("key generation failed"))?;
    let der = pair
        .to_pkcs8v1()
        .map_err(|_| std::io::Error::other("key encoding failed"))?;
    let text = pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref()));
    super::key_file::create_once(path, text.as_bytes()).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_loads_and_rotates() {
        let dir = std::env::temp_dir().join(format!("jwt-keys-{}", uuid::Uuid::new_v4()));
        let old = dir.join("old.pem");
        let new = dir.join("new.pem");
        SigningKeys::load(&old, true, &[] as &[&Path]).unwrap();
        let none: &[&Path] = &[];
        assert!(matches!(
            SigningKeys::load(&dir.join("absent.pem"), false, none),
            Err(KeyError::Missing { .. })
        ));
        let old_keys = SigningKeys::load(&old, false, none).unwrap();
        let rotated = SigningKeys::load(&new, true, &[&old]).unwrap();
        assert_ne!(rotated.current_kid(), old_keys.current_kid());
        assert!(rotated.decoding_key(old_keys.current_kid()).is_some());
        assert_eq!(rotated.jwks()["keys"].as_array().unwrap().len(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
