//! The `users` table: the model, its insert and change sets, and the queries handlers need.
//! Query functions take the connection; the caller owns the transaction.

pub mod email_changes;
pub mod links;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    domain::{EmailAddress, profile::username_skeleton},
    schema::users,
};

#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = users)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub username: Option<String>,
    /// `None` while the account has no usable password: after a revert or a rejected sign-in,
    /// until the mailed reset is completed.
    pub password_hash: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub phone_number: String,
    pub address: String,
    pub bio: Option<String>,
    pub image: Option<String>,
    pub terms_accepted_at: Option<DateTime<Utc>>,
    pub verified: bool,
    pub active: bool,
    pub is_staff: bool,
    pub is_superuser: bool,
    pub token_version: i32,
    pub last_login: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub locale: String,
    /// Moved by every email change and revert; mailed confirmation and reset links carry it.
    pub email_epoch: i32,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    pub id: Uuid,
    pub email: &'a str,
    pub username: Option<&'a str>,
    pub password_hash: Option<&'a str>,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub phone_number: &'a str,
    pub address: &'a str,
    pub terms_accepted_at: Option<DateTime<Utc>>,
    pub locale: &'a str,
}

/// A profile update; `None` leaves a column alone, `Some(None)` clears a nullable one.
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = users)]
pub struct UserChanges {
    pub email: Option<String>,
    pub username: Option<Option<String>>,
    pub password_hash: Option<Option<String>>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone_number: Option<String>,
    pub address: Option<String>,
    pub bio: Option<Option<String>>,
    pub image: Option<Option<String>>,
    pub verified: Option<bool>,
    pub locale: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// The user as clients see it: never the hash, never internal flags.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserBody {
    pub id: Uuid,
    #[schema(format = Email)]
    pub email: String,
    pub username: Option<String>,
    pub bio: Option<String>,
    pub image: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub phone_number: String,
    pub address: String,
    pub verified: bool,
    /// Whether a password signs in to the account (a social-only account sets one through the
    /// reset flow).
    pub has_password: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// Conduit's `{"user": {...}}` answer, serialized straight from the body.
#[derive(Debug, Serialize)]
pub struct UserResponse {
    pub user: UserBody,
}

impl From<User> for UserBody {
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            email: user.email,
            username: user.username,
            bio: user.bio,
            image: user.image,
            first_name: user.first_name,
            last_name: user.last_name,
            phone_number: user.phone_number,
            address: user.address,
            verified: user.verified,
            has_password: user.password_hash.is_some(),
            created_at: user.created_at,
            updated_at: user.updated_at,
            token: None,
            refresh_token: None,
        }
    }
}

/// Whether `user` is still as a pending step (an `mfa` challenge, a passkey ceremony, a social
/// link or code) recorded it: active, with the same token version and email epoch. A password
/// change or reset, a revert, a reject, an operator's reset or a deactivation since voids the step.
pub fn unchanged_since(user: &User, token_version: i32, email_epoch: i32) -> bool {
    user.active && user.token_version == token_version && user.email_epoch == email_epoch
}

/// An `ILIKE` pattern matching values that contain `search` literally: LIKE's wildcards escaped.
pub fn contains_pattern(search: &str) -> String {
    let escaped = search
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{}%", escaped.to_lowercase())
}

pub const EMAIL_TAKEN: &str = "user with this email already exists.";
pub const USERNAME_TAKEN: &str = "user with this username already exists.";

pub const EMAIL_KEY: &str = "users_email_key";
pub const USERNAME_KEY: &str = "users_username_key";

/// Inserts the user; the username's skeleton (what makes it unique) is derived here.
pub async fn insert(conn: &mut AsyncPgConnection, new: &NewUser<'_>) -> QueryResult<User> {
    let skeleton = new.username.map(username_skeleton);
    diesel::insert_into(users::table)
        .values((new, users::username_skeleton.eq(skeleton)))
        .returning(User::as_returning())
        .get_result(conn)
        .await
}

pub async fn find(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<User>> {
    users::table
        .find(id)
        .select(User::as_select())
        .first(conn)
        .await
        .optional()
}

/// Reads the user and locks the row until the transaction ends. Every operation that revokes
/// tokens, and every refresh, takes this lock first, so they serialize per user in one lock order.
/// `FOR NO KEY UPDATE` leaves foreign-key checks (a new session's insert) unblocked.
pub async fn lock(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<User>> {
    users::table
        .find(id)
        .select(User::as_select())
        .for_no_key_update()
        .first(conn)
        .await
        .optional()
}

/// The user whose username matches `typed` as registration normalizes usernames (NFKC, case,
/// confusable skeleton), which is also what makes usernames unique.
pub async fn find_by_username(
    conn: &mut AsyncPgConnection,
    typed: &str,
) -> QueryResult<Option<User>> {
    users::table
        .filter(users::username_skeleton.eq(username_skeleton(typed.trim())))
        .select(User::as_select())
        .first(conn)
        .await
        .optional()
}

pub async fn find_by_email(conn: &mut AsyncPgConnection, email: &str) -> QueryResult<Option<User>> {
    users::table
        .filter(users::email.eq(email))
        .select(User::as_select())
        .first(conn)
        .await
        .optional()
}

pub async fn update(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    changes: &UserChanges,
) -> QueryResult<User> {
    // A new username brings its skeleton along, whoever built the change set; a new address (an
    // email change or a revert) moves the email epoch, which voids every link mailed before it.
    let skeleton = changes
        .username
        .as_ref()
        .map(|username| users::username_skeleton.eq(username.as_deref().map(username_skeleton)));
    let epoch = changes
        .email
        .as_ref()
        .map(|_| users::email_epoch.eq(users::email_epoch + 1));
    diesel::update(users::table.find(id))
        .set((changes, skeleton, epoch))
        .returning(User::as_returning())
        .get_result(conn)
        .await
}

/// Stamps the login and returns the user as it is now, its row locked until the transaction ends.
pub async fn record_login(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<User>> {
    diesel::update(users::table.find(id))
        .set(users::last_login.eq(Utc::now()))
        .returning(User::as_returning())
        .get_result(conn)
        .await
        .optional()
}

/// Marks `email` verified when it is still the user's address in the same email epoch.
pub async fn mark_verified(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    email: &str,
    epoch: i32,
) -> QueryResult<Option<User>> {
    let same = users::email.eq(email).and(users::email_epoch.eq(epoch));
    diesel::update(users::table.find(id).filter(same))
        .set((users::verified.eq(true), users::updated_at.eq(Utc::now())))
        .returning(User::as_returning())
        .get_result(conn)
        .await
        .optional()
}

/// Leaves the user without a usable password until a mailed reset sets one, and moves the email
/// epoch so that no link mailed before (a reset link of an earlier recovery) comes back to life;
/// returns the user as it is now. Lock the user first.
pub async fn remove_password(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<User> {
    diesel::update(users::table.find(id))
        .set((
            users::password_hash.eq(None::<String>),
            users::email_epoch.eq(users::email_epoch + 1),
            users::updated_at.eq(Utc::now()),
        ))
        .returning(User::as_returning())
        .get_result(conn)
        .await
}

/// Moves the user's token version, so every access token issued before now stops working.
/// Lock the user first.
pub async fn revoke_access_tokens(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<()> {
    diesel::update(users::table.find(id))
        .set(users::token_version.eq(users::token_version + 1))
        .execute(conn)
        .await
        .map(drop)
}

/// (De)activates the user. Lock the user first; a deactivation must also end every session.
pub async fn set_active(conn: &mut AsyncPgConnection, id: Uuid, active: bool) -> QueryResult<()> {
    diesel::update(users::table.find(id))
        .set((users::active.eq(active), users::updated_at.eq(Utc::now())))
        .execute(conn)
        .await
        .map(drop)
}

/// Brings rows written before the current identifier rules up to them: email domains in IDNA
/// ASCII form, and usernames with their skeleton. Run at startup, after the migrations; a row that
/// would collide with another is left as it is and reported, for an operator to resolve.
pub async fn normalize_identifiers(conn: &mut AsyncPgConnection) -> QueryResult<()> {
    let stale: Vec<(Uuid, String, Option<String>)> = users::table
        .filter(
            users::username
                .is_not_null()
                .and(users::username_skeleton.is_null())
                .or(diesel::dsl::sql::<diesel::sql_types::Bool>(
                    "email ~ '[^[:ascii:]]'",
                )),
        )
        .select((users::id, users::email, users::username))
        .load(conn)
        .await?;
    for (id, email, username) in stale {
        let email = EmailAddress::parse(&email).map_or(email, EmailAddress::into_inner);
        let skeleton = username.as_deref().map(username_skeleton);
        let updated = diesel::update(users::table.find(id))
            .set((
                users::email.eq(&email),
                users::username_skeleton.eq(&skeleton),
            ))
            .execute(conn)
            .await;
        match updated {
            Ok(_) => {}
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => {
                tracing::warn!(user_id = %id, "an older account's email or username collides with another under the current rules; left unchanged");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
