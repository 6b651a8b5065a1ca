//! The authentication extractor: a handler that takes [`Authenticated`] only runs for an active
//! user whose token was issued under their current token version, in a session that has not ended.
//! Both are checked in one read, so a revocation that committed before the read always wins.

pub mod authz;

use std::{future::Future, pin::Pin};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::{
    db,
    http::error::{ApiError, NO_CREDENTIALS},
    schema::{sessions, users},
    sessions::Assurance,
    state::AppState,
    tokens::{Claims, Purpose},
    users::User,
};

pub const DEACTIVATED: &str = "This account is deactivated.";

pub struct Authenticated {
    pub user: User,
    pub claims: Claims,
    /// The session the token belongs to.
    pub session_id: Uuid,
    /// The access token as presented.
    pub token: String,
}

impl Authenticated {
    /// Whether the caller's credentials still hold for `locked`, the user's row as read under its
    /// lock: the token version has not moved (a logout of all, a reset, a revert), the session was
    /// not ended meanwhile and the account is active. A change a request was authenticated for
    /// must check this under the lock, or a revocation that commits in between would not stop it.
    pub async fn holds(&self, conn: &mut AsyncPgConnection, locked: &User) -> QueryResult<bool> {
        if locked.token_version != self.user.token_version || !locked.active {
            return Ok(false);
        }
        crate::sessions::is_live(conn, self.session_id, locked.id).await
    }

    /// How the caller's session began, as its token says.
    pub fn assurance(&self) -> Assurance {
        if self.claims.amr.is_empty() {
            return Assurance::password();
        }
        Assurance {
            amr: self.claims.amr.clone(),
        }
    }

    /// When the password that began this session was entered.
    pub fn auth_time(&self) -> DateTime<Utc> {
        self.claims
            .auth_time
            .and_then(|t| DateTime::from_timestamp(t, 0))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

/// The user and, when it is theirs and still live, the session `sid` names: one round trip.
async fn user_in_session(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    session_id: Uuid,
) -> QueryResult<Option<(User, Option<Uuid>)>> {
    users::table
        .left_join(
            sessions::table.on(sessions::id
                .eq(session_id)
                .and(sessions::user_id.eq(users::id))
                .and(sessions::ended_at.is_null())
                .and(sessions::expires_at.gt(diesel::dsl::now))),
        )
        .filter(users::id.eq(user_id))
        .select((User::as_select(), sessions::id.nullable()))
        .first(conn)
        .await
        .optional()
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer_token(req);
        Box::pin(async move {
            let state = state.expect("AppState is registered");
            let token = token?;
            let claims = state
                .tokens
                .verify(&token, Purpose::Access)
                .map_err(|_| ApiError::bad_token())?;
            let session_id = claims.sid.ok_or_else(ApiError::bad_token)?;
            // A read: run again on another connection if the server dropped the first.
            let (user, live_session) = db::reading(&state.pool, async |conn| {
                user_in_session(conn, claims.sub, session_id).await
            })
            .await??
            .ok_or_else(ApiError::bad_token)?;
            if claims.ver != Some(user.token_version) || live_session.is_none() {
                return Err(ApiError::bad_token());
            }
            if !user.active {
                return Err(ApiError::Forbidden(DEACTIVATED));
            }
            Ok(Self {
                user,
                claims,
                session_id,
                token,
            })
        })
    }
}

/// Accepts `Token <jwt>` (Conduit) and `Bearer <jwt>`.
fn bearer_token(req: &HttpRequest) -> Result<String, ApiError> {
    let missing = ApiError::Unauthorized {
        field: "token",
        message: NO_CREDENTIALS,
    };
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(missing)?
        .to_str()
        .map_err(|_| ApiError::bad_token())?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or_else(ApiError::bad_token)?;
    if !(scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer")) {
        return Err(ApiError::bad_token());
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::Unauthorized {
            field: "token",
            message: NO_CREDENTIALS,
        });
    }
    Ok(token.to_string())
}
