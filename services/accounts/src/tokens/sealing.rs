//! Sealing: AES-256-GCM under `ACCOUNTS_ENCRYPTION_KEY_FILE` (32 random bytes), for the few secrets
//! the service must read back later, such as a family's current refresh token during its grace
//! window. Each sealed value is bound to a context (the family it belongs to), so it cannot be
//! moved to another row.

use std::path::Path;

use aws_lc_rs::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    hmac,
};
use rand::RngCore;

pub const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SealingKeyError {
    #[error(
        "ACCOUNTS_ENCRYPTION_KEY_FILE is not set, and ACCOUNTS_PUBLIC_URL ({public_url}) is not localhost or 127.0.0.1, so no development key is made. Create one with `head -c 32 /dev/urandom > encryption.key` (keep it secret, mode 0600; every replica needs the same) and set ACCOUNTS_ENCRYPTION_KEY_FILE to its path"
    )]
    NotConfigured { public_url: String },
    #[error(
        "{path} does not exist; create it with `head -c 32 /dev/urandom > {path}`, or unset ACCOUNTS_ENCRYPTION_KEY_FILE to use a development key"
    )]
    Missing { path: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} holds {len} bytes; an encryption key is exactly 32 random bytes")]
    Invalid { path: String, len: usize },
}

pub struct SealingKey {
    key: LessSafeKey,
    /// HMAC-SHA-256 under a key derived from the same file, for values that are only ever
    /// compared (recovery codes): a database dump alone cannot be brute-forced.
    mac: hmac::Key,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey([redacted])")
    }
}

impl SealingKey {
    /// Loads the key at `path`. When `create_if_missing` (the development default) and the file is
    /// absent, generates one there and warns.
    pub fn load(path: &Path, create_if_missing: bool) -> Result<Self, SealingKeyError> {
        let shown = path.display().to_string();
        if !path.exists() {
            if !create_if_missing {
                return Err(SealingKeyError::Missing { path: shown });
            }
            write_development_key(path).map_err(|source| SealingKeyError::Io {
                path: shown.clone(),
                source,
            })?;
            tracing::warn!(path = %shown, "created a development encryption key; configure ACCOUNTS_ENCRYPTION_KEY_FILE in production");
        }
        let bytes = std::fs::read(path).map_err(|source| SealingKeyError::Io {
            path: shown.clone(),
            source,
        })?;
        Self::from_bytes(&bytes).ok_or(SealingKeyError::Invalid {
            path: shown,
            len: bytes.len(),
        })
    }

    /// A key from exactly [`KEY_LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != KEY_LEN {
            return None;
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes).ok()?;
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, bytes),
            b"accounts: recovery-code digests",
        );
        Some(Self {
            key: LessSafeKey::new(key),
            mac: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        })
    }

    /// `plaintext`, encrypted and authenticated for `context`: a random nonce, then the
    /// ciphertext and its tag. `None` only for inputs of gigabytes, which AES-GCM refuses.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut sealed = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut sealed,
            )
            .ok()?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Some(out)
    }

    /// What [`seal`](Self::seal) sealed for the same `context`; `None` when it was sealed under
    /// another key or context, or altered.
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Option<Vec<u8>> {
        let (nonce, ciphertext) = sealed.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buffer = ciphertext.to_vec();
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::from(context), &mut buffer)
            .ok()?;
        Some(plaintext.to_vec())
    }
}

impl SealingKey {
    /// The HMAC-SHA-256 of `parts`, each length-prefixed so no two lists share a digest.
    pub fn digest(&self, parts: &[&[u8]]) -> Vec<u8> {
        let mut context = hmac::Context::with_key(&self.mac);
        for part in parts {
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part);
        }
        context.sign().as_ref().to_vec()
    }
}

const CHECK_PLAINTEXT: &[u8] = b"accounts: the key the stored secrets are sealed with";
const CHECK_CONTEXT: &[u8] = b"encryption-key-check";

/// Proves `key` is the one the database's secrets (TOTP secrets, recovery-code digests, sealed
/// refresh tokens) were made with, by opening a sample sealed the first time the service ran; a
/// wrong key file fails startup here instead of every second factor failing silently later.
pub async fn check_against_database(
    conn: &mut diesel_async::AsyncPgConnection,
    key: &SealingKey,
    path: &Path,
) -> anyhow::Result<()> {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;

    use crate::schema::encryption_key_check;

    let sample = key
        .seal(CHECK_PLAINTEXT, CHECK_CONTEXT)
        .expect("AES-GCM seals a short sample");
    diesel::insert_into(encryption_key_check::table)
        .values(encryption_key_check::sealed.eq(sample))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    let stored: Vec<u8> = encryption_key_check::table
        .select(encryption_key_check::sealed)
        .first(conn)
        .await?;
    match key.open(&stored, CHECK_CONTEXT) {
        Some(opened) if opened == CHECK_PLAINTEXT => Ok(()),
        _ => anyhow::bail!(
            "ACCOUNTS_ENCRYPTION_KEY_FILE ({}) is not the key this database's secrets were sealed with: \
             every authenticator app and recovery code would stop working. Point it at the original key \
             file (every replica needs the same one); if that key is lost, operators must reset each \
             user's second factor (`accounts users reset-mfa EMAIL`) after clearing the \
             encryption_key_check table",
            path.display()
        ),
    }
}

/// 32 random bytes, mode 0600; another replica or test that created it first wins.
fn write_development_key(path: &Path) -> std::io::Result<()> {
    let mut key = [0u8; KEY_LEN];
    rand::rng().fill_bytes(&mut key);
    super::key_file::create_once(path, &key).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let key = SealingKey::from_bytes(&[7u8; 32]).unwrap();
        let other = SealingKey::from_bytes(&[8u8; 32]).unwrap();
        let sealed = key.seal(b"refresh-token", b"family-1").unwrap();
        assert_eq!(key.open(&sealed, b"family-1").unwrap(), b"refresh-token");
        assert!(key.open(&sealed, b"family-2").is_none());
        assert!(other.open(&sealed, b"family-1").is_none());
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(key.open(&altered, b"family-1").is_none());
        assert!(key.open(&sealed[..5], b"family-1").is_none());
        // A fresh nonce each time.
        assert_ne!(sealed, key.seal(b"refresh-token", b"family-1").unwrap());
        assert!(SealingKey::from_bytes(&[0u8; 16]).is_none());
    }

    #[test]
    fn creates_a_development_key_once_and_refuses_a_missing_configured_one() {
        let dir = std::env::temp_dir().join(format!("sealing-{}", uuid::Uuid::new_v4()));
        let path = dir.join("key");
        let first = SealingKey::load(&path, true).unwrap();
        let again = SealingKey::load(&path, false).unwrap();
        let sealed = first.seal(b"x", b"c").unwrap();
        assert_eq!(again.open(&sealed, b"c").unwrap(), b"x");
        assert!(matches!(
            SealingKey::load(&dir.join("absent"), false),
            Err(SealingKeyError::Missing { .. })
        ));
        std::fs::write(dir.join("short"), [1u8; 5]).unwrap();
        assert!(matches!(
            SealingKey::load(&dir.join("short"), false),
            Err(SealingKeyError::Invalid { len: 5, .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
