//! Second factors: TOTP, passkeys and recovery codes. What turns them on and off, and the one
//! check every second-factor code goes through, at login and at step-up. A passkey is no code:
//! its assertions are checked by `signin::passkey`, outside the guessing limits.

pub mod challenge;
pub mod guessing;
pub mod passkeys;
pub mod recovery_codes;
pub mod totp;

use std::time::Duration;

use chrono::Utc;
use diesel::QueryResult;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use events::{
    Event, MfaDisabled, MfaEnabled, MfaFailures, RecoveryCodeUsed, RecoveryCodesReplaced,
};
use serde_json::json;
use uuid::Uuid;

use crate::{
    audit::{self, Origin},
    http::telemetry::RequestId,
    outbox,
    sessions::{self, Assurance, Device, Session},
    signin::devices,
    state::AppState,
    users::{User, links},
};

/// A code the client typed as its second factor.
#[derive(Debug, Clone, Copy)]
pub enum Proof<'a> {
    Totp(&'a str),
    RecoveryCode(&'a str),
}

impl<'a> Proof<'a> {
    /// A code from a field that takes either (step-up's `code`): six digits are a TOTP code.
    pub fn either(code: &'a str) -> Self {
        let digits = code.chars().filter(|c| !c.is_whitespace()).count();
        if digits == 6
            && code
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_whitespace())
        {
            Self::Totp(code)
        } else {
            Self::RecoveryCode(code)
        }
    }
}

/// What a second-factor code amounted to.
#[derive(Debug)]
pub enum Verdict {
    /// Right, and now spent.
    Accepted,
    /// Wrong, replayed or spent; counted.
    Rejected,
    /// Not checked: too many failures; try again after this long.
    Throttled(Duration),
}

/// Where a code came from, for the guessing limits and the audit.
pub struct Attempt<'a> {
    /// The client's network (/24, or /64 for IPv6): the per-client limit counts a whole network,
    /// because the device that is exempt from the per-user delay is one too (user agent family
    /// and network), and a user agent is whatever the client says.
    client: String,
    /// The device key (user agent family and network).
    device: String,
    origin: &'a Origin,
    request_id: &'a RequestId,
}

impl<'a> Attempt<'a> {
    pub fn new(device: &Device, origin: &'a Origin, request_id: &'a RequestId) -> Self {
        Self {
            client: devices::network(&device.ip),
            device: devices::key(&device.user_agent, &device.ip),
            origin,
            request_id,
        }
    }
}

/// Checks `proof` for `user`, within the guessing limits, spending it when right. A recovery code
/// used mails the user; a failure is audited and, from the third in a day, mailed (once a day).
/// Lock the user's row first: parallel codes are then counted and spent one by one.
pub async fn verify(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    user: &User,
    proof: Proof<'_>,
    attempt: &Attempt<'_>,
) -> QueryResult<Verdict> {
    let now = Utc::now();
    if let Some(wait) = refusal(conn, user, attempt).await? {
        return Ok(Verdict::Throttled(wait));
    }
    let origin = attempt.origin.clone().by(user.id);
    let accepted = match proof {
        Proof::Totp(code) => totp::verify(conn, &state.sealing, user.id, code).await?,
        Proof::RecoveryCode(code) => {
            match recovery_codes::spend(conn, &state.sealing, user.id, code).await? {
                Some(left) => {
                    let event = Event::RecoveryCodeUsed(RecoveryCodeUsed {
                        user_id: user.id,
                        email: user.email.clone(),
                        username: user.username.clone(),
                        used_at: now,
                        codes_left: u32::try_from(left).unwrap_or_default(),
                        ip: attempt.origin.client_ip.clone(),
                        locale: user.locale.clone(),
                    });
                    outbox::enqueue(conn, event, attempt.request_id).await?;
                    let details = json!({ "left": left });
                    audit::record(
                        conn,
                        &origin,
                        "mfa.recovery_code_used",
                        Some(user.id),
                        details,
                    )
                    .await?;
                    true
                }
                None => false,
            }
        }
    };
    if accepted {
        return Ok(Verdict::Accepted);
    }
    let method = match proof {
        Proof::Totp(_) => "totp",
        Proof::RecoveryCode(_) => "recovery_code",
    };
    failed(conn, user, attempt, method, Notify::Owner).await?;
    Ok(Verdict::Rejected)
}

/// How long `attempt`'s client must wait before a code of `user`'s is checked, if at all: the
/// guessing limits. Lock the user first.
pub async fn refusal(
    conn: &mut AsyncPgConnection,
    user: &User,
    attempt: &Attempt<'_>,
) -> QueryResult<Option<Duration>> {
    // A device is exempt from the per-user delay only if it signed in since the second factor
    // turned on, so with both factors: an intruder who signed in with the password alone before
    // cannot keep guessing from there.
    let since = totp::enabled_at(conn, user.id).await?;
    let known = devices::known(conn, user.id, &attempt.device, since).await?;
    guessing::refusal(conn, user.id, &attempt.client, known, Utc::now()).await
}

/// Whether a wrong code is news for the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notify {
    /// After a correct password (a login, a step-up): someone knows it; from the third failure
    /// in a day, the owner is mailed (once a day).
    Owner,
    /// During the setup of an authenticator, in the owner's own session: typos, counted but no
    /// alarm.
    Nobody,
}

/// Records a wrong code (`method`: `totp`, `recovery_code`): counted and audited, and mailed as
/// `notify` says. Lock the user first.
pub async fn failed(
    conn: &mut AsyncPgConnection,
    user: &User,
    attempt: &Attempt<'_>,
    method: &str,
    notify: Notify,
) -> QueryResult<()> {
    let now = Utc::now();
    let origin = attempt.origin.clone().by(user.id);
    audit::record(
        conn,
        &origin,
        "mfa.failed",
        Some(user.id),
        json!({ "method": method }),
    )
    .await?;
    let mail = guessing::record_failure(conn, user.id, &attempt.client, now).await?;
    if let Some(failures) = mail.filter(|_| notify == Notify::Owner) {
        let event = Event::MfaFailures(MfaFailures {
            user_id: user.id,
            email: user.email.clone(),
            username: user.username.clone(),
            failures: u32::try_from(failures).unwrap_or(u32::MAX),
            ip: attempt.origin.client_ip.clone(),
            failed_at: now,
            locale: user.locale.clone(),
        });
        outbox::enqueue(conn, event, attempt.request_id).await?;
    }
    Ok(())
}

/// The account's second factors, read in one query.
#[derive(Debug, Clone, Copy, diesel::QueryableByName)]
pub struct Factors {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub totp: bool,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub passkeys: i64,
}

impl Factors {
    /// Whether there is any: a password alone then does not sign the account in.
    pub fn any(&self) -> bool {
        self.totp || self.passkeys > 0
    }
}

pub async fn factors(conn: &mut AsyncPgConnection, user_id: Uuid) -> QueryResult<Factors> {
    diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM totp_authenticators WHERE user_id = $1 AND secret IS NOT NULL) AS totp, \
                (SELECT count(*) FROM passkeys WHERE user_id = $1) AS passkeys",
    )
    .bind::<diesel::sql_types::Uuid, _>(user_id)
    .get_result(conn)
    .await
}

/// Whether the account has a second factor, so a password alone does not sign it in.
pub async fn enabled(conn: &mut AsyncPgConnection, user_id: Uuid) -> QueryResult<bool> {
    Ok(factors(conn, user_id).await?.any())
}

/// The account's second factors, as `GET /api/user/mfa` shows them.
pub struct Status {
    pub totp: bool,
    pub passkeys: i64,
    pub recovery_codes_left: i64,
}

pub async fn status(conn: &mut AsyncPgConnection, user_id: Uuid) -> QueryResult<Status> {
    let factors = factors(conn, user_id).await?;
    Ok(Status {
        totp: factors.totp,
        passkeys: factors.passkeys,
        recovery_codes_left: recovery_codes::left(conn, user_id).await?,
    })
}

/// After the account's first second factor (`method`) turned on in `session_id`: every other
/// session ends (they began with one factor), this one becomes `aal2`, the user is mailed a
/// notice whose link undoes it, and a set of recovery codes is issued. Returns the codes and the
/// raised session. Lock the user first.
pub async fn turned_on(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    user: &User,
    session: &Session,
    method: &str,
    origin: &Origin,
    request_id: &RequestId,
) -> QueryResult<(Vec<String>, Option<Session>)> {
    let codes = recovery_codes::replace(conn, &state.sealing, user.id).await?;
    sessions::end_others(conn, user.id, session.id).await?;
    // The device that turned the factor on is the first that is known with it.
    devices::remember(
        conn,
        user.id,
        &devices::key(&session.user_agent, &session.ip),
    )
    .await?;
    let assurance = match method {
        "passkey" => Assurance::of(session).with_passkey(),
        _ => Assurance::of(session).with_second_factor("otp"),
    };
    let raised = sessions::raise(conn, session.id, &assurance).await?;
    let reject = links::sign_in_reject(state, user, session.id);
    let event = Event::MfaEnabled(MfaEnabled {
        user_id: user.id,
        email: user.email.clone(),
        username: user.username.clone(),
        method: method.into(),
        enabled_at: Utc::now(),
        reject_url: reject.url,
        reject_expires_at: reject.expires_at,
        locale: user.locale.clone(),
    });
    outbox::enqueue(conn, event, request_id).await?;
    let details = json!({ "method": method });
    audit::record(conn, origin, "mfa.enabled", Some(user.id), details).await?;
    Ok((codes, raised))
}

/// A new set of recovery codes for `user` (the old set stops working), audited, and mailed as a
/// security notice: whoever holds a session could do it, and the owner's own set dies with it.
/// Lock the user first.
pub async fn replace_recovery_codes(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    user: &User,
    origin: &Origin,
    request_id: &RequestId,
) -> QueryResult<Vec<String>> {
    let codes = recovery_codes::replace(conn, &state.sealing, user.id).await?;
    audit::record(
        conn,
        origin,
        "mfa.recovery_codes_replaced",
        Some(user.id),
        json!({}),
    )
    .await?;
    let event = Event::RecoveryCodesReplaced(RecoveryCodesReplaced {
        user_id: user.id,
        email: user.email.clone(),
        username: user.username.clone(),
        replaced_at: Utc::now(),
        ip: origin.client_ip.clone(),
        locale: user.locale.clone(),
    });
    outbox::enqueue(conn, event, request_id).await?;
    Ok(codes)
}

/// After a second factor went: when none remains, the recovery codes go too and the user is told.
/// Lock the user first.
pub async fn after_removal(
    conn: &mut AsyncPgConnection,
    user: &User,
    request_id: &RequestId,
) -> QueryResult<()> {
    if enabled(conn, user.id).await? {
        return Ok(());
    }
    recovery_codes::remove_all(conn, user.id).await?;
    let event = Event::MfaDisabled(MfaDisabled {
        user_id: user.id,
        email: user.email.clone(),
        username: user.username.clone(),
        disabled_at: Utc::now(),
        by_operator: false,
        reset_url: None,
        reset_expires_at: None,
        locale: user.locale.clone(),
    });
    outbox::enqueue(conn, event, request_id).await
}

/// Removes every second factor (an operator's reset) without telling anyone: the caller mails.
/// `true` when there was one.
pub async fn remove_all(conn: &mut AsyncPgConnection, user_id: Uuid) -> QueryResult<bool> {
    let removed = totp::remove(conn, user_id).await?;
    let passkeys = passkeys::remove_since(conn, user_id, None).await?;
    recovery_codes::remove_all(conn, user_id).await?;
    Ok(removed || passkeys > 0)
}
