//! Every email change of an account, kept while its revert link lives: which address a revert
//! restores, which later changes it undoes, and which addresses stay reserved to their account.
//!
//! The revert link names its change (the link's `jti` is the change's id). Reverting a change
//! settles it and every later change of the account, so their links die; earlier changes stay
//! open. Whoever reverts first, the owner's link (mailed to the address the intruder changed
//! first) still wins.

use chrono::{DateTime, Utc};
use diesel::{dsl::exists, prelude::*, sql_types::Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::schema::email_changes;

/// A change whose revert link still works: not settled (used, or undone by the revert of an
/// earlier change) and not expired.
#[diesel::dsl::auto_type]
fn open() -> _ {
    email_changes::settled_at
        .is_null()
        .and(email_changes::revert_expires_at.gt(diesel::dsl::now))
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = email_changes)]
pub struct EmailChange {
    pub id: Uuid,
    pub seq: i64,
    pub user_id: Uuid,
    pub old_email: String,
}

/// Records a change from `old_email` (`old_verified`: whether the account had proven it, which
/// makes the change reserve it) to `new_email` whose revert link lives until `revert_expires_at`;
/// returns its id, which the link carries.
pub async fn record(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    (old_email, old_verified): (&str, bool),
    new_email: &str,
    revert_expires_at: DateTime<Utc>,
) -> QueryResult<Uuid> {
    // Changes whose links expired reserve nothing and undo nothing any more.
    diesel::delete(
        email_changes::table.filter(email_changes::revert_expires_at.lt(diesel::dsl::now)),
    )
    .execute(conn)
    .await?;
    diesel::insert_into(email_changes::table)
        .values((
            email_changes::id.eq(Uuid::now_v7()),
            email_changes::user_id.eq(user_id),
            email_changes::old_email.eq(old_email),
            email_changes::new_email.eq(new_email),
            email_changes::revert_expires_at.eq(revert_expires_at),
            email_changes::reserves.eq(old_verified),
        ))
        .returning(email_changes::id)
        .get_result(conn)
        .await
}

/// Takes `email` for the rest of the transaction, so a registration or an email change of that
/// address waits for a change that reserves it to commit, and then sees the reservation.
pub async fn lock_address(conn: &mut AsyncPgConnection, email: &str) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended('email:' || $1, 0))")
        .bind::<Text, _>(email)
        .execute(conn)
        .await
        .map(drop)
}

/// Whether `email` is the verified old address of an open change of an account other than
/// `owner`: its revert link can still restore it, so no one else may take it meanwhile.
pub async fn reserved_for_another(
    conn: &mut AsyncPgConnection,
    email: &str,
    owner: Option<Uuid>,
) -> QueryResult<bool> {
    let open = email_changes::table
        .filter(email_changes::old_email.eq(email))
        .filter(email_changes::reserves)
        .filter(open());
    match owner {
        Some(owner) => {
            diesel::select(exists(open.filter(email_changes::user_id.ne(owner))))
                .get_result(conn)
                .await
        }
        None => diesel::select(exists(open)).get_result(conn).await,
    }
}

/// Settles the open change `id` of `user_id` and every later change of that account, returning
/// it; `None` when it is unknown, already settled (used, or undone by the revert of an earlier
/// change) or expired. Lock the user first.
pub async fn settle_from(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    id: Uuid,
) -> QueryResult<Option<EmailChange>> {
    let Some(change) = email_changes::table
        .find(id)
        .filter(email_changes::user_id.eq(user_id))
        .filter(open())
        .select(EmailChange::as_select())
        .first(conn)
        .await
        .optional()?
    else {
        return Ok(None);
    };
    diesel::update(
        email_changes::table
            .filter(email_changes::user_id.eq(user_id))
            .filter(email_changes::seq.ge(change.seq))
            .filter(email_changes::settled_at.is_null()),
    )
    .set(email_changes::settled_at.eq(diesel::dsl::now))
    .execute(conn)
    .await?;
    Ok(Some(change))
}

/// Whether mail sent to `email` still speaks for the account `user_id` (whose address is now
/// `current`): it is the current address, or one that an open change's revert link can still
/// restore. A "this wasn't me" link mailed to an address that a revert undid (the intruder's)
/// is void; the owner's, mailed before the intruder changed the address, is not.
pub async fn speaks_for(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    current: &str,
    email: &str,
) -> QueryResult<bool> {
    if email == current {
        return Ok(true);
    }
    diesel::select(exists(
        email_changes::table
            .filter(email_changes::user_id.eq(user_id))
            .filter(email_changes::old_email.eq(email))
            .filter(open()),
    ))
    .get_result(conn)
    .await
}
