//! The `mfa` challenge: what a correct password earns on an account with a second factor. The
//! client holds 256 random bits; the database holds their SHA-256, the user's token version and
//! email epoch (a password change or reset, a revert, a reject, a deactivation or an operator's
//! reset moves one of them and voids the challenge), and how the first factor was met.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{Duration, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{schema::mfa_challenges, users::User};

pub const LIFETIME: Duration = Duration::minutes(5);

/// A live challenge, as stored.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = mfa_challenges)]
pub struct Pending {
    pub user_id: Uuid,
    pub token_version: i32,
    pub email_epoch: i32,
    pub amr: Vec<String>,
    /// The passkey ceremony the challenge names, when the account has passkeys.
    pub passkey_ceremony: Option<Uuid>,
}

impl Pending {
    /// Whether the account is still as it was when the password was checked.
    pub fn still_holds_for(&self, user: &User) -> bool {
        crate::users::unchanged_since(user, self.token_version, self.email_epoch)
    }
}

fn digest(challenge: &str) -> Vec<u8> {
    Sha256::digest(challenge.as_bytes()).to_vec()
}

/// A new challenge for `user`, whose first factor (`amr`) was just met. Expired challenges go.
pub async fn issue(
    conn: &mut AsyncPgConnection,
    user: &User,
    amr: &[String],
    passkey_ceremony: Option<Uuid>,
) -> QueryResult<String> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let challenge = URL_SAFE_NO_PAD.encode(bytes);
    let now = Utc::now();
    let expires_at = now + LIFETIME;
    diesel::delete(mfa_challenges::table.filter(mfa_challenges::expires_at.lt(now)))
        .execute(conn)
        .await?;
    diesel::insert_into(mfa_challenges::table)
        .values((
            mfa_challenges::digest.eq(digest(&challenge)),
            mfa_challenges::user_id.eq(user.id),
            mfa_challenges::token_version.eq(user.token_version),
            mfa_challenges::email_epoch.eq(user.email_epoch),
            mfa_challenges::amr.eq(amr),
            mfa_challenges::passkey_ceremony.eq(passkey_ceremony),
            mfa_challenges::created_at.eq(now),
            mfa_challenges::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .await?;
    Ok(challenge)
}

/// The live (unspent, unexpired) challenge `challenge` names.
pub async fn find(conn: &mut AsyncPgConnection, challenge: &str) -> QueryResult<Option<Pending>> {
    mfa_challenges::table
        .find(digest(challenge))
        .filter(mfa_challenges::spent_at.is_null())
        .filter(mfa_challenges::expires_at.gt(Utc::now()))
        .select(Pending::as_select())
        .first(conn)
        .await
        .optional()
}

/// Spends the challenge; `false` when it was already spent or expired.
pub async fn spend(conn: &mut AsyncPgConnection, challenge: &str) -> QueryResult<bool> {
    let spent = diesel::update(
        mfa_challenges::table
            .find(digest(challenge))
            .filter(mfa_challenges::spent_at.is_null())
            .filter(mfa_challenges::expires_at.gt(Utc::now())),
    )
    .set(mfa_challenges::spent_at.eq(Utc::now()))
    .execute(conn)
    .await?;
    Ok(spent == 1)
}
