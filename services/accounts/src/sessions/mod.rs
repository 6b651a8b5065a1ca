//! Sessions. A session is a refresh-token family: a login starts one, each refresh rotates the
//! token within it, and access tokens carry its id as `sid`, so ending the session stops them at
//! once.
//!
//! Presenting a token that was already rotated means it leaked, or a client lost a response. Within
//! `ACCOUNTS_REFRESH_REUSE_GRACE_SECONDS` of its first use it is answered with the family's current
//! refresh token and a new access token (the lost response, two tabs); after that the whole family
//! is revoked (ASVS 3.5, OAuth 2.0 Security BCP 4.14). A family has exactly one live refresh token,
//! so a replay never forks a session: the current token is kept sealed (see
//! [`crate::tokens::SealingKey`]) for as long as a replay of its predecessor may ask for it. The
//! window is the trade-off: a thief who replays a stolen token within seconds of its owner's
//! refresh holds the same token as the owner, and whichever of them refreshes next ends the
//! other's chain (and a replay after the window ends the family).
//!
//! Every function that changes a session runs inside a transaction that has locked the user's row
//! first ([`users::lock`]), so rotation and revocation serialize per user and a refresh racing a
//! logout never leaves a token that works afterwards.

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use serde_json::json;

use crate::{
    audit::{self, Origin},
    schema::{refresh_tokens, sessions},
    tokens::{SealingKey, refresh},
    users::{self, User},
};

/// Each token lives this long, sliding with every rotation...
pub const TOKEN_LIFETIME: Duration = Duration::days(14);
/// ...but no family outlives this, counted from the login.
pub const FAMILY_LIFETIME: Duration = Duration::days(30);

/// Where a request comes from, as a session records it.
#[derive(Debug, Clone, Default)]
pub struct Device {
    pub user_agent: String,
    pub ip: String,
}

/// How a session began: the methods used (RFC 8176 `amr`). The assurance level follows from them:
/// `aal2` exactly when `mfa` is among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assurance {
    pub amr: Vec<String>,
}

impl Assurance {
    /// A password alone.
    pub fn password() -> Self {
        Self {
            amr: vec!["pwd".into()],
        }
    }

    /// `self` plus a second factor (`method`: `otp` for TOTP and recovery codes), so `mfa`.
    pub fn with_second_factor(self, method: &str) -> Self {
        self.adding(&[method, "mfa"])
    }

    /// `self` plus a passkey whose authenticator verified the user (`swk` and `user`), so `mfa`.
    pub fn with_passkey(self) -> Self {
        self.adding(&["swk", "user", "mfa"])
    }

    /// `self` with each of `values` once, in order.
    fn adding(mut self, values: &[&str]) -> Self {
        for value in values {
            if !self.amr.iter().any(|m| m == value) {
                self.amr.push((*value).into());
            }
        }
        self
    }

    /// A passkey alone, with user verification: two factors in one (`aal2`).
    pub fn passkey() -> Self {
        Self { amr: Vec::new() }.with_passkey()
    }

    /// What `session` began with.
    pub fn of(session: &Session) -> Self {
        Self {
            amr: session.amr.clone(),
        }
    }

    /// `aal2` after two factors, else `aal1`.
    pub fn aal(&self) -> &'static str {
        aal(&self.amr)
    }
}

/// The assurance level of a session that began with `amr`.
pub fn aal(amr: &[String]) -> &'static str {
    if amr.iter().any(|m| m == "mfa") {
        "aal2"
    } else {
        "aal1"
    }
}

impl Device {
    /// The device a request comes from.
    pub fn of(req: &actix_web::HttpRequest) -> Self {
        Self {
            user_agent: req
                .headers()
                .get(actix_web::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            ip: crate::http::client::ClientAddr::of(req).to_string(),
        }
    }

    /// User agents are client-controlled: keep what a person needs to recognise a device.
    fn user_agent(&self) -> String {
        self.user_agent.chars().take(256).collect()
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = sessions)]
pub struct Session {
    pub id: Uuid,
    pub user_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub auth_time: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub user_agent: String,
    pub ip: String,
    /// How it began: RFC 8176 `amr` values (`pwd`, `otp`, `mfa`, ...).
    pub amr: Vec<String>,
}

/// A new session and its first refresh token.
pub struct Started {
    pub session: Session,
    pub refresh_token: String,
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = refresh_tokens)]
struct StoredToken {
    id: Uuid,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

pub enum Rotation {
    /// A new refresh token; or, for a replay within the grace window, the family's current one.
    Rotated {
        user: Box<User>,
        session: Box<Session>,
        refresh_token: String,
    },
    /// Unknown, expired or revoked.
    Invalid,
    /// Used again after the grace window: the family is now revoked.
    Reused,
}

/// Starts a session for `user_id` whose credentials were presented at `auth_time`.
pub async fn start(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    device: &Device,
    auth_time: DateTime<Utc>,
    assurance: &Assurance,
) -> QueryResult<Started> {
    let now = Utc::now();
    let session: Session = diesel::insert_into(sessions::table)
        .values((
            sessions::id.eq(Uuid::now_v7()),
            sessions::user_id.eq(user_id),
            sessions::created_at.eq(now),
            sessions::last_used_at.eq(now),
            sessions::auth_time.eq(auth_time),
            sessions::expires_at.eq(now + FAMILY_LIFETIME),
            sessions::user_agent.eq(device.user_agent()),
            sessions::ip.eq(&device.ip),
            sessions::amr.eq(&assurance.amr),
        ))
        .returning(Session::as_returning())
        .get_result(conn)
        .await?;
    let refresh_token = issue(conn, &session, None).await?;
    Ok(Started {
        session,
        refresh_token,
    })
}

/// Issues the family's next refresh token; with `sealing`, it is also kept sealed, so a replay of
/// its predecessor within the grace window can be answered with it.
async fn issue(
    conn: &mut AsyncPgConnection,
    session: &Session,
    sealing: Option<&SealingKey>,
) -> QueryResult<String> {
    let token = refresh::generate();
    let sealed = sealing.and_then(|key| key.seal(token.as_bytes(), session.id.as_bytes()));
    diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::id.eq(Uuid::now_v7()),
            refresh_tokens::family_id.eq(session.id),
            refresh_tokens::user_id.eq(session.user_id),
            refresh_tokens::token_hash.eq(refresh::digest(&token)),
            refresh_tokens::expires_at.eq((Utc::now() + TOKEN_LIFETIME).min(session.expires_at)),
            refresh_tokens::family_expires_at.eq(session.expires_at),
            refresh_tokens::sealed.eq(sealed),
        ))
        .execute(conn)
        .await?;
    Ok(token)
}

/// The family's one live refresh token, unsealed; `None` when there is none to hand out.
async fn current_token(
    conn: &mut AsyncPgConnection,
    session: &Session,
    sealing: &SealingKey,
) -> QueryResult<Option<String>> {
    let sealed: Option<Option<Vec<u8>>> = refresh_tokens::table
        .filter(refresh_tokens::family_id.eq(session.id))
        .filter(refresh_tokens::used_at.is_null())
        .filter(refresh_tokens::revoked_at.is_null())
        .filter(refresh_tokens::expires_at.gt(Utc::now()))
        .order(refresh_tokens::created_at.desc())
        .select(refresh_tokens::sealed)
        .first(conn)
        .await
        .optional()?;
    Ok(sealed
        .flatten()
        .and_then(|sealed| sealing.open(&sealed, session.id.as_bytes()))
        .and_then(|token| String::from_utf8(token).ok()))
}

/// Forgets the sealed copies of refresh tokens older than the grace window: no replay can ask for
/// them any more. Returns how many.
pub async fn forget_sealed(conn: &mut AsyncPgConnection, grace: Duration) -> QueryResult<usize> {
    diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::sealed.is_not_null())
            .filter(refresh_tokens::created_at.lt(Utc::now() - grace)),
    )
    .set(refresh_tokens::sealed.eq(None::<Vec<u8>>))
    .execute(conn)
    .await
}

/// Exchanges `presented` for a new token of the same family, or, for a replay of a used token
/// within `grace`, hands out the family's current one. Run it inside a transaction: it locks the
/// owner's row before it looks at the token.
pub async fn rotate(
    conn: &mut AsyncPgConnection,
    presented: &str,
    device: &Device,
    grace: Duration,
    sealing: &SealingKey,
) -> QueryResult<Rotation> {
    let digest = refresh::digest(presented);
    let owner: Option<Uuid> = refresh_tokens::table
        .filter(refresh_tokens::token_hash.eq(&digest))
        .select(refresh_tokens::user_id)
        .first(conn)
        .await
        .optional()?;
    let Some(user) = (match owner {
        Some(owner) => users::lock(conn, owner).await?,
        None => None,
    }) else {
        return Ok(Rotation::Invalid);
    };
    // Read under the user's lock: a logout that committed first is seen, one that comes later waits.
    let Some((stored, session)) = refresh_tokens::table
        .inner_join(sessions::table)
        .filter(refresh_tokens::token_hash.eq(&digest))
        .select((StoredToken::as_select(), Session::as_select()))
        .first::<(StoredToken, Session)>(conn)
        .await
        .optional()?
    else {
        return Ok(Rotation::Invalid);
    };
    let now = Utc::now();
    if stored.revoked_at.is_some()
        || session.ended_at.is_some()
        || stored.expires_at <= now
        || session.expires_at <= now
    {
        return Ok(Rotation::Invalid);
    }
    let replayed = match stored.used_at {
        Some(used_at) if now - used_at > grace => {
            end(conn, user.id, session.id).await?;
            return Ok(Rotation::Reused);
        }
        Some(_) => true,
        None => false,
    };
    let session: Session = diesel::update(sessions::table.find(session.id))
        .set((
            sessions::last_used_at.eq(now),
            sessions::user_agent.eq(device.user_agent()),
            sessions::ip.eq(&device.ip),
        ))
        .returning(Session::as_returning())
        .get_result(conn)
        .await?;
    let refresh_token = if replayed {
        let Some(current) = current_token(conn, &session, sealing).await? else {
            return Ok(Rotation::Invalid);
        };
        current
    } else {
        diesel::update(refresh_tokens::table.find(stored.id))
            .set(refresh_tokens::used_at.eq(now))
            .execute(conn)
            .await?;
        // Only the newest token may be asked for.
        diesel::update(
            refresh_tokens::table
                .filter(refresh_tokens::family_id.eq(session.id))
                .filter(refresh_tokens::sealed.is_not_null()),
        )
        .set(refresh_tokens::sealed.eq(None::<Vec<u8>>))
        .execute(conn)
        .await?;
        issue(conn, &session, Some(sealing)).await?
    };
    Ok(Rotation::Rotated {
        user: Box::new(user),
        session: Box::new(session),
        refresh_token,
    })
}

/// Ends one session of `user_id`: its refresh tokens and, through `sid`, its access tokens.
/// `false` when there is no such live session. Lock the user first.
pub async fn end(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    session_id: Uuid,
) -> QueryResult<bool> {
    let now = Utc::now();
    let ended = diesel::update(
        sessions::table
            .find(session_id)
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::ended_at.is_null()),
    )
    .set(sessions::ended_at.eq(now))
    .execute(conn)
    .await?;
    diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::family_id.eq(session_id))
            .filter(refresh_tokens::user_id.eq(user_id))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(now))
    .execute(conn)
    .await?;
    Ok(ended > 0)
}

/// Ends every session of `user_id` and, by moving the token version, every access token issued so
/// far. Lock the user first.
pub async fn end_all(conn: &mut AsyncPgConnection, user_id: Uuid) -> QueryResult<usize> {
    end_all_but(conn, user_id, None).await
}

/// Ends every session of `user_id` but `keep`, and every access token issued so far (the kept
/// session's client needs a new one). Lock the user first.
pub async fn end_others(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    keep: Uuid,
) -> QueryResult<usize> {
    end_all_but(conn, user_id, Some(keep)).await
}

async fn end_all_but(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    keep: Option<Uuid>,
) -> QueryResult<usize> {
    users::revoke_access_tokens(conn, user_id).await?;
    let now = Utc::now();
    let keep = keep.unwrap_or(Uuid::nil());
    let ended = diesel::update(
        sessions::table
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::id.ne(keep))
            .filter(sessions::ended_at.is_null()),
    )
    .set(sessions::ended_at.eq(now))
    .execute(conn)
    .await?;
    diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::user_id.eq(user_id))
            .filter(refresh_tokens::family_id.ne(keep))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(now))
    .execute(conn)
    .await?;
    Ok(ended)
}

/// Records that `session_id` now stands on `assurance` (a second factor confirmed in it); its
/// next access token carries it. `None` when the session is no longer live.
pub async fn raise(
    conn: &mut AsyncPgConnection,
    session_id: Uuid,
    assurance: &Assurance,
) -> QueryResult<Option<Session>> {
    diesel::update(
        sessions::table
            .find(session_id)
            .filter(sessions::ended_at.is_null()),
    )
    .set(sessions::amr.eq(&assurance.amr))
    .returning(Session::as_returning())
    .get_result(conn)
    .await
    .optional()
}

/// Which sessions [`end_now`] ends.
pub enum Ending {
    /// Every session, and every access token (the token version moves).
    All,
    /// These sessions, if they are the user's.
    Only(Vec<Uuid>),
}

/// Ends sessions of `user_id` in a transaction of its own that locks the user's row first, so it
/// orders against any refresh in flight; retried when it loses a race. Returns how many ended.
pub async fn end_now(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    ending: Ending,
    origin: &Origin,
) -> QueryResult<usize> {
    use diesel_async::AsyncConnection;
    crate::db::retrying(async || {
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            users::lock(conn, user_id).await?;
            end_and_audit(conn, user_id, &ending, origin).await
        })
        .await
    })
    .await
}

/// Ends sessions of `user_id` and audits it, in the caller's transaction; the user's row locked.
pub async fn end_and_audit(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    ending: &Ending,
    origin: &Origin,
) -> QueryResult<usize> {
    let ended = match ending {
        Ending::All => end_all(conn, user_id).await?,
        Ending::Only(ids) => {
            let mut ended = 0;
            for id in ids {
                ended += usize::from(end(conn, user_id, *id).await?);
            }
            ended
        }
    };
    let details = match ending {
        Ending::All => json!({ "all": true, "sessions": ended }),
        Ending::Only(ids) => json!({ "ids": ids, "sessions": ended }),
    };
    if ended > 0 || matches!(ending, Ending::All) {
        audit::record(conn, origin, "sessions.ended", Some(user_id), details).await?;
    }
    Ok(ended)
}

/// The session `presented` (a refresh token) belongs to, if it is `user_id`'s.
pub async fn of_refresh_token(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    presented: &str,
) -> QueryResult<Option<Uuid>> {
    refresh_tokens::table
        .filter(refresh_tokens::token_hash.eq(refresh::digest(presented)))
        .filter(refresh_tokens::user_id.eq(user_id))
        .select(refresh_tokens::family_id)
        .first(conn)
        .await
        .optional()
}

/// When `user_id`'s session `id` began, ended or not.
pub async fn started_at(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    id: Uuid,
) -> QueryResult<Option<DateTime<Utc>>> {
    sessions::table
        .find(id)
        .filter(sessions::user_id.eq(user_id))
        .select(sessions::created_at)
        .first(conn)
        .await
        .optional()
}

/// The user's live sessions, newest first.
/// Whether `user_id`'s session `id` is neither ended nor expired.
pub async fn is_live(conn: &mut AsyncPgConnection, id: Uuid, user_id: Uuid) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        sessions::table
            .find(id)
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::ended_at.is_null())
            .filter(sessions::expires_at.gt(diesel::dsl::now)),
    ))
    .get_result(conn)
    .await
}

pub async fn live(conn: &mut AsyncPgConnection, user_id: Uuid) -> QueryResult<Vec<Session>> {
    sessions::table
        .filter(sessions::user_id.eq(user_id))
        .filter(sessions::ended_at.is_null())
        .filter(sessions::expires_at.gt(Utc::now()))
        .order(sessions::created_at.desc())
        .select(Session::as_select())
        .load(conn)
        .await
}
