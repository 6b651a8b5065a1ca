//! Sign-in: identify the user, check the first factor, the second when the account has one, then
//! begin the session. Routes only parse and answer; every way in ends in [`complete`], so the
//! throttle, the audit, new-device notices and token claims are written once.

pub mod devices;
pub mod mfa;
pub mod passkey;
pub mod password;
pub mod recovery;
mod session;
pub mod social;
pub mod step_up;

use chrono::{DateTime, Utc};
use diesel::QueryResult;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use secrecy::SecretString;
use serde_json::json;

pub use session::{Notice, access_token, begin, body_with_tokens};

use crate::{
    audit::{self, Origin},
    auth::authz::{self, Grants},
    db,
    http::client::ClientAddr,
    http::error::{ApiError, BAD_CHALLENGE, BAD_CODE, TOO_MANY_CODES},
    http::telemetry::{self, RequestId},
    sessions::{Assurance, Device, Started},
    state::AppState,
    users::{self, User, UserBody},
};
use mfa::{Proof, Verdict, challenge};
use password::Identifier;

pub const UNVERIFIED: &str = "Confirm your email address before logging in.";

/// Where a sign-in (or a step-up) comes from: the client's address, its device and the request.
/// An extractor, so routes take it whole.
pub struct Client {
    pub addr: ClientAddr,
    pub device: Device,
    pub request_id: RequestId,
}

impl Client {
    fn origin(&self) -> Origin {
        Origin::new(None, &self.addr.to_string(), &self.request_id)
    }
}

impl actix_web::FromRequest for Client {
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(Ok(Self {
            addr: ClientAddr::of(req),
            device: Device::of(req),
            request_id: RequestId::of(req),
        }))
    }
}

/// What a correct first factor (a password, a social sign-in) leads to.
pub enum Outcome {
    /// Signed in: the user with its tokens.
    SignedIn(Box<UserBody>),
    /// The account has a second factor: finish with `POST /api/users/login/mfa`.
    SecondFactor(SecondFactorNeeded),
}

/// What [`begin_or_challenge`] did, before the tokens are signed (outside the transaction).
pub enum Began {
    SignedIn(Box<SignedIn>),
    SecondFactor(SecondFactorNeeded),
}

impl Began {
    /// The answer, counted.
    pub fn answer(self, state: &AppState) -> Outcome {
        match self {
            Began::SecondFactor(needed) => Outcome::SecondFactor(needed),
            Began::SignedIn(signed_in) => {
                metrics::counter!("accounts_logins_total", "outcome" => "ok").increment(1);
                Outcome::SignedIn(Box::new(signed_in.into_body(state)))
            }
        }
    }
}

/// After a first factor (`first`) of `user` (locked, checked active): the `mfa` challenge when
/// the account has a second factor, else the session. `via` joins the audit details (a social
/// sign-in's provider).
pub async fn begin_or_challenge(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    user: &User,
    first: &Assurance,
    client: &Client,
    via: serde_json::Value,
    presented_at: DateTime<Utc>,
) -> QueryResult<Began> {
    let factors = mfa::factors(conn, user.id).await?;
    if factors.any() {
        let passkey = match factors.passkeys {
            0 => None,
            _ => passkey::second_factor_options(conn, state, user).await?,
        };
        let mut methods = Vec::new();
        if factors.totp {
            methods.push("totp");
        }
        methods.push("recovery_code");
        if passkey.is_some() {
            methods.push("passkey");
        }
        let (ceremony, passkey_options) = passkey.unzip();
        let challenge = challenge::issue(conn, user, &first.amr, ceremony).await?;
        let mut details = json!({ "methods": methods, "amr": first.amr });
        merge(&mut details, via);
        let origin = client.origin().by(user.id);
        audit::record(conn, &origin, "login.second_factor", Some(user.id), details).await?;
        return Ok(Began::SecondFactor(SecondFactorNeeded {
            challenge,
            methods,
            expires_in: challenge::LIFETIME.num_seconds(),
            passkey_options,
        }));
    }
    let signed_in = complete(conn, state, user, first, client, via, presented_at).await?;
    Ok(Began::SignedIn(Box::new(signed_in)))
}

fn merge(details: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(details), serde_json::Value::Object(extra)) = (details.as_object_mut(), extra) {
        details.extend(extra);
    }
}

/// The `mfa` answer of a password login.
pub struct SecondFactorNeeded {
    pub challenge: String,
    pub methods: Vec<&'static str>,
    /// Seconds the challenge lives.
    pub expires_in: i64,
    /// The passkey ceremony's `publicKey` options, when the account has passkeys.
    pub passkey_options: Option<serde_json::Value>,
}

/// A password login: identify, check the password (throttled, the same cost whether or not the
/// account exists), then begin the session, or hand out a challenge for the second factor.
pub async fn with_password(
    state: &AppState,
    identifier: Identifier<'_>,
    password: SecretString,
    client: &Client,
) -> Result<Outcome, ApiError> {
    // Turned away before any database work, so a flood's 429s stay fast.
    state.hasher.check_capacity()?;
    let identified = password::identify(state, identifier, &client.addr, Utc::now()).await?;
    let origin = client.origin();
    let bad_login = ApiError::Unauthorized {
        field: "credentials",
        message: identified.bad_login,
    };
    let user = identified.user.as_ref();
    let matched = password::check(
        state,
        &identified.account,
        &client.addr,
        &origin,
        user,
        password,
    )
    .await?;
    let user = match (matched, identified.user) {
        (true, Some(user)) => user,
        (_, user) => {
            let mut conn = state.pool.get().await?;
            let mut details = json!({ "email": telemetry::mask_address(&identified.account) });
            if user.as_ref().is_some_and(|u| !u.active) {
                details["deactivated"] = json!(true);
            }
            let target = user.map(|u| u.id);
            audit::record(&mut conn, &origin, "login.failed", target, details).await?;
            metrics::counter!("accounts_logins_total", "outcome" => "failed").increment(1);
            return Err(bad_login);
        }
    };
    if state.settings.require_verified_email && !user.verified {
        return Err(ApiError::Forbidden(UNVERIFIED));
    }
    let mut conn = state.pool.get().await?;
    let checked_hash = user.password_hash.clone();
    let outcome = db::retrying(async || {
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            // The row lock orders this login against a concurrent reset or deactivation: a
            // password that changed since it was checked begins nothing.
            let Some(user) = users::lock(conn, user.id).await? else {
                return Ok(None);
            };
            if user.password_hash != checked_hash || !user.active {
                return Ok(None);
            }
            let first = Assurance::password();
            Ok(Some(
                begin_or_challenge(conn, state, &user, &first, client, json!({}), Utc::now())
                    .await?,
            ))
        })
        .await
    })
    .await?;
    match outcome {
        None => Err(bad_login),
        Some(began) => Ok(began.answer(state)),
    }
}

/// What finishes a login: a code (TOTP or recovery, counted by the guessing limits) or a passkey
/// assertion (`PublicKeyCredential.toJSON()`'s shape; never counted).
#[derive(Debug, Clone, Copy)]
pub enum SecondFactor<'a> {
    Code(Proof<'a>),
    Passkey(&'a serde_json::Value),
}

/// Finishes a login that a password began: `challenge` and one second factor.
pub async fn with_second_factor(
    state: &AppState,
    challenge: &str,
    factor: SecondFactor<'_>,
    client: &Client,
) -> Result<UserBody, ApiError> {
    let origin = client.origin();
    let attempt = mfa::Attempt::new(&client.device, &origin, &client.request_id);
    let mut conn = state.pool.get().await?;
    let finished = db::retrying(async || {
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            let Some(pending) = challenge::find(conn, challenge).await? else {
                return Ok(Finish::BadChallenge);
            };
            let Some(user) = users::lock(conn, pending.user_id).await? else {
                return Ok(Finish::BadChallenge);
            };
            if !pending.still_holds_for(&user) {
                return Ok(Finish::BadChallenge);
            }
            let verdict = match factor {
                SecondFactor::Code(proof) => {
                    mfa::verify(conn, state, &user, proof, &attempt).await?
                }
                SecondFactor::Passkey(credential) => {
                    let ceremony = pending.passkey_ceremony;
                    let origin = origin.clone().by(user.id);
                    let held = passkey::verify_second_factor(
                        conn, state, &user, ceremony, credential, &origin,
                    )
                    .await?;
                    if held {
                        Verdict::Accepted
                    } else {
                        Verdict::Rejected
                    }
                }
            };
            match verdict {
                Verdict::Throttled(wait) => Ok(Finish::Throttled(wait)),
                Verdict::Rejected => Ok(Finish::Rejected),
                Verdict::Accepted => {
                    if !challenge::spend(conn, challenge).await? {
                        return Err(diesel::result::Error::RollbackTransaction);
                    }
                    let first = Assurance {
                        amr: pending.amr.clone(),
                    };
                    let assurance = match factor {
                        SecondFactor::Code(_) => first.with_second_factor("otp"),
                        SecondFactor::Passkey(_) => first.with_passkey(),
                    };
                    let signed_in = complete(
                        conn,
                        state,
                        &user,
                        &assurance,
                        client,
                        json!({}),
                        Utc::now(),
                    )
                    .await?;
                    Ok(Finish::SignedIn(Box::new(signed_in)))
                }
            }
        })
        .await
    })
    .await;
    let field = match factor {
        SecondFactor::Code(Proof::Totp(_)) => "code",
        SecondFactor::Code(Proof::RecoveryCode(_)) => "recovery_code",
        SecondFactor::Passkey(_) => "credential",
    };
    match finished {
        Ok(Finish::SignedIn(signed_in)) => {
            metrics::counter!("accounts_logins_total", "outcome" => "ok").increment(1);
            Ok(signed_in.into_body(state))
        }
        Ok(Finish::Rejected) => Err(ApiError::Unauthorized {
            field,
            message: BAD_CODE,
        }),
        Ok(Finish::Throttled(retry_after)) => Err(ApiError::Throttled {
            message: TOO_MANY_CODES,
            retry_after,
        }),
        Ok(Finish::BadChallenge) | Err(diesel::result::Error::RollbackTransaction) => {
            Err(ApiError::Unauthorized {
                field: "challenge",
                message: BAD_CHALLENGE,
            })
        }
        Err(e) => Err(e.into()),
    }
}

enum Finish {
    SignedIn(Box<SignedIn>),
    Rejected,
    Throttled(std::time::Duration),
    BadChallenge,
}

/// A session just begun, before its tokens are signed (outside the transaction).
pub struct SignedIn {
    user: User,
    started: Started,
    grants: Grants,
}

impl SignedIn {
    fn into_body(self, state: &AppState) -> UserBody {
        body_with_tokens(
            state,
            self.user,
            &self.started.session,
            self.started.refresh_token,
            &self.grants,
        )
    }
}

/// The last step of every sign-in: records the login, begins the session (a new device is
/// mailed), reads the grants for the token and audits. Runs in the caller's transaction, the
/// user's row locked.
pub async fn complete(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    user: &User,
    assurance: &Assurance,
    client: &Client,
    via: serde_json::Value,
    presented_at: DateTime<Utc>,
) -> QueryResult<SignedIn> {
    let user = users::record_login(conn, user.id)
        .await?
        .ok_or(diesel::result::Error::NotFound)?;
    let started = begin(
        conn,
        state,
        &user,
        client,
        presented_at,
        assurance,
        Notice::NewDevice,
    )
    .await?;
    let grants = authz::grants(conn, &user).await?;
    let mut details = json!({ "session": started.session.id, "amr": assurance.amr });
    merge(&mut details, via);
    let origin = client.origin().by(user.id);
    audit::record(conn, &origin, "login.succeeded", Some(user.id), details).await?;
    Ok(SignedIn {
        user,
        started,
        grants,
    })
}
