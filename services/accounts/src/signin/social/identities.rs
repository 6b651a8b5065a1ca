//! The `identities` table: provider accounts linked to users. Query functions take the
//! connection; the caller owns the transaction (and, to add or remove one, the user's row lock).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use crate::schema::identities;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = identities)]
pub struct Identity {
    pub id: Uuid,
    pub user_id: Uuid,
    pub provider: String,
    pub email: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// An identity as its owner sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IdentityBody {
    pub provider: String,
    /// The provider account's address, when it has one.
    pub email: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<Identity> for IdentityBody {
    fn from(identity: Identity) -> Self {
        Self {
            provider: identity.provider,
            email: identity.email,
            created_at: identity.created_at,
            last_used_at: identity.last_used_at,
        }
    }
}

/// A provider account by its name here, with its address as the provider gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
}

/// The identity `account` names, whoever it belongs to.
pub async fn find(
    conn: &mut AsyncPgConnection,
    account: &Subject,
) -> QueryResult<Option<Identity>> {
    identities::table
        .filter(identities::issuer.eq(&account.issuer))
        .filter(identities::subject.eq(&account.subject))
        .select(Identity::as_select())
        .first(conn)
        .await
        .optional()
}

/// `user_id`'s identities, oldest first.
pub async fn of_user(conn: &mut AsyncPgConnection, user_id: Uuid) -> QueryResult<Vec<Identity>> {
    identities::table
        .filter(identities::user_id.eq(user_id))
        .order(identities::created_at)
        .select(Identity::as_select())
        .load(conn)
        .await
}

/// Links `account` at `provider` to `user_id`; `None` when the provider account is already
/// someone's or the user already has one at `provider` (the unique indexes decide races).
pub async fn link(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    provider: &str,
    account: &Subject,
) -> QueryResult<Option<Identity>> {
    diesel::insert_into(identities::table)
        .values((
            identities::id.eq(Uuid::now_v7()),
            identities::user_id.eq(user_id),
            identities::provider.eq(provider),
            identities::issuer.eq(&account.issuer),
            identities::subject.eq(&account.subject),
            identities::email.eq(&account.email),
            identities::last_used_at.eq(Utc::now()),
        ))
        .on_conflict_do_nothing()
        .returning(Identity::as_returning())
        .get_result(conn)
        .await
        .optional()
}

/// Records a sign-in with `identity`, and the provider account's address as it is now.
pub async fn used(
    conn: &mut AsyncPgConnection,
    identity: Uuid,
    email: Option<&str>,
) -> QueryResult<()> {
    diesel::update(identities::table.find(identity))
        .set((
            identities::last_used_at.eq(Utc::now()),
            identities::email.eq(email),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Unlinks `user_id`'s identity at `provider`; `false` when there was none.
pub async fn unlink(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    provider: &str,
) -> QueryResult<bool> {
    let removed = diesel::delete(
        identities::table
            .filter(identities::user_id.eq(user_id))
            .filter(identities::provider.eq(provider)),
    )
    .execute(conn)
    .await?;
    Ok(removed > 0)
}

/// Unlinks what was linked at or after `since`, or every identity with `None` (a take-back);
/// returns how many.
pub async fn unlink_since(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    since: Option<DateTime<Utc>>,
) -> QueryResult<usize> {
    let mine = identities::table.filter(identities::user_id.eq(user_id));
    match since {
        Some(since) => {
            diesel::delete(mine.filter(identities::created_at.ge(since)))
                .execute(conn)
                .await
        }
        None => diesel::delete(mine).execute(conn).await,
    }
}
