//! Refresh-token families. A login starts a family; each refresh rotates the token within it.
//! Presenting a token that was already rotated means it leaked (or a client replayed it), so the
//! whole family is revoked (ASVS 10.4.5). There is no grace window: a client that lost the
//! response to a refresh logs in again.

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::{schema::refresh_tokens, tokens::refresh};

/// Each token lives this long, sliding with every rotation...
pub const TOKEN_LIFETIME: Duration = Duration::days(14);
/// ...but no family outlives this, counted from the login.
pub const FAMILY_LIFETIME: Duration = Duration::days(30);

#[derive(Debug, Insertable)]
#[diesel(table_name = refresh_tokens)]
struct NewRefreshToken {
    id: Uuid,
    family_id: Uuid,
    user_id: Uuid,
    token_hash: Vec<u8>,
    expires_at: DateTime<Utc>,
    family_expires_at: DateTime<Utc>,
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = refresh_tokens)]
struct StoredToken {
    id: Uuid,
    family_id: Uuid,
    user_id: Uuid,
    expires_at: DateTime<Utc>,
    family_expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

pub enum Rotation {
    Rotated {
        user_id: Uuid,
        refresh_token: String,
    },
    /// Unknown, expired or revoked.
    Invalid,
    /// Already used: the family is now revoked.
    Reused,
}

/// Starts a new family for `user_id` and returns its first refresh token.
pub async fn start(conn: &mut AsyncPgConnection, user_id: Uuid) -> QueryResult<String> {
    let now = Utc::now();
    issue(conn, user_id, Uuid::now_v7(), now + FAMILY_LIFETIME).await
}

async fn issue(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    family_id: Uuid,
    family_expires_at: DateTime<Utc>,
) -> QueryResult<String> {
    let token = refresh::generate();
    let row = NewRefreshToken {
        id: Uuid::now_v7(),
        family_id,
        user_id,
        token_hash: refresh::digest(&token),
        expires_at: (Utc::now() + TOKEN_LIFETIME).min(family_expires_at),
        family_expires_at,
    };
    diesel::insert_into(refresh_tokens::table)
        .values(&row)
        .execute(conn)
        .await?;
    Ok(token)
}

/// Exchanges `presented` for a new token of the same family. Run it inside a transaction.
pub async fn rotate(conn: &mut AsyncPgConnection, presented: &str) -> QueryResult<Rotation> {
    let now = Utc::now();
    let stored: Option<StoredToken> = refresh_tokens::table
        .filter(refresh_tokens::token_hash.eq(refresh::digest(presented)))
        .select(StoredToken::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?;
    let Some(stored) = stored else {
        return Ok(Rotation::Invalid);
    };
    if stored.revoked_at.is_some() || stored.expires_at <= now || stored.family_expires_at <= now {
        return Ok(Rotation::Invalid);
    }
    if stored.used_at.is_some() {
        revoke_family(conn, stored.family_id).await?;
        return Ok(Rotation::Reused);
    }
    diesel::update(refresh_tokens::table.find(stored.id))
        .set(refresh_tokens::used_at.eq(now))
        .execute(conn)
        .await?;
    let refresh_token = issue(
        conn,
        stored.user_id,
        stored.family_id,
        stored.family_expires_at,
    )
    .await?;
    Ok(Rotation::Rotated {
        user_id: stored.user_id,
        refresh_token,
    })
}

async fn revoke_family(conn: &mut AsyncPgConnection, family_id: Uuid) -> QueryResult<usize> {
    diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::family_id.eq(family_id))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(Utc::now()))
    .execute(conn)
    .await
}

/// Ends the session `presented` belongs to, if it belongs to `user_id`.
pub async fn end(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    presented: &str,
) -> QueryResult<bool> {
    let family: Option<Uuid> = refresh_tokens::table
        .filter(refresh_tokens::token_hash.eq(refresh::digest(presented)))
        .filter(refresh_tokens::user_id.eq(user_id))
        .select(refresh_tokens::family_id)
        .first(conn)
        .await
        .optional()?;
    match family {
        Some(family) => revoke_family(conn, family).await.map(|_| true),
        None => Ok(false),
    }
}

/// Ends every session of `user_id`.
pub async fn end_all(conn: &mut AsyncPgConnection, user_id: Uuid) -> QueryResult<usize> {
    diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::user_id.eq(user_id))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(Utc::now()))
    .execute(conn)
    .await
}

/// Ends every session of the account using `email` (deactivation from the CLI).
pub async fn end_all_by_email(conn: &mut AsyncPgConnection, email: &str) -> QueryResult<usize> {
    let user_id: Option<Uuid> = crate::schema::users::table
        .filter(crate::schema::users::email.eq(email))
        .select(crate::schema::users::id)
        .first(conn)
        .await
        .optional()?;
    match user_id {
        Some(id) => end_all(conn, id).await,
        None => Ok(0),
    }
}
