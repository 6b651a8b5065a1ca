//! What a social flow keeps server-side between its steps: the link ticket (60 s), the state
//! towards the provider (10 minutes) and our code for the app (60 s). Each is single use and is
//! found by the SHA-256 of what the client holds; expired rows are purged as new ones are written.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::identities::Subject;
use crate::{
    schema::{social_codes, social_link_tickets, social_states},
    users::User,
};

pub const TICKET_LIFETIME: Duration = Duration::seconds(60);
pub const STATE_LIFETIME: Duration = Duration::minutes(10);
pub const CODE_LIFETIME: Duration = Duration::seconds(60);

/// 256 random bits, base64url (`bytes` of them; a code for the app needs at least 16).
pub fn random(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

pub fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Where the app wants the answer, and what it will prove when it redeems our code.
#[derive(Debug, Clone)]
pub struct AppRequest {
    pub redirect_to: String,
    pub app_state: Option<String>,
    /// The app's S256 `code_challenge`.
    pub code_challenge: String,
    /// The app asked for a fresh sign-in at the provider (`prompt=login`), to step up.
    pub reauth: bool,
}

/// Whose account a link flow links, as it was when the link began.
#[derive(Debug, Clone, Copy)]
pub struct Linking {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub token_version: i32,
    pub email_epoch: i32,
}

impl Linking {
    pub fn of(user: &User, session_id: Uuid) -> Self {
        Self {
            user_id: user.id,
            session_id,
            token_version: user.token_version,
            email_epoch: user.email_epoch,
        }
    }

    /// Whether the account is still as it was: a reset, a revert, a reject or a deactivation
    /// since voids the link.
    pub fn still_holds_for(&self, user: &User) -> bool {
        crate::users::unchanged_since(user, self.token_version, self.email_epoch)
    }
}

/// A new link ticket for `provider`.
pub async fn issue_ticket(
    conn: &mut AsyncPgConnection,
    provider: &str,
    linking: Linking,
    app: &AppRequest,
) -> QueryResult<String> {
    let ticket = random(32);
    let now = Utc::now();
    diesel::delete(social_link_tickets::table.filter(social_link_tickets::expires_at.lt(now)))
        .execute(conn)
        .await?;
    diesel::insert_into(social_link_tickets::table)
        .values((
            social_link_tickets::digest.eq(digest(&ticket)),
            social_link_tickets::user_id.eq(linking.user_id),
            social_link_tickets::session_id.eq(linking.session_id),
            social_link_tickets::provider.eq(provider),
            social_link_tickets::token_version.eq(linking.token_version),
            social_link_tickets::email_epoch.eq(linking.email_epoch),
            social_link_tickets::redirect_to.eq(&app.redirect_to),
            social_link_tickets::app_state.eq(&app.app_state),
            social_link_tickets::code_challenge.eq(&app.code_challenge),
            social_link_tickets::expires_at.eq(now + TICKET_LIFETIME),
        ))
        .execute(conn)
        .await?;
    Ok(ticket)
}

/// Spends the live ticket for `provider`: what it links and for which app.
pub async fn take_ticket(
    conn: &mut AsyncPgConnection,
    ticket: &str,
    provider: &str,
) -> QueryResult<Option<(Linking, AppRequest)>> {
    let row: Option<TicketRow> = diesel::delete(
        social_link_tickets::table
            .find(digest(ticket))
            .filter(social_link_tickets::provider.eq(provider))
            .filter(social_link_tickets::expires_at.gt(Utc::now())),
    )
    .returning(TicketRow::as_returning())
    .get_result(conn)
    .await
    .optional()?;
    Ok(row.map(|row| {
        (
            Linking {
                user_id: row.user_id,
                session_id: row.session_id,
                token_version: row.token_version,
                email_epoch: row.email_epoch,
            },
            AppRequest {
                redirect_to: row.redirect_to,
                app_state: row.app_state,
                code_challenge: row.code_challenge,
                reauth: false,
            },
        )
    }))
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = social_link_tickets)]
struct TicketRow {
    user_id: Uuid,
    session_id: Uuid,
    token_version: i32,
    email_epoch: i32,
    redirect_to: String,
    app_state: Option<String>,
    code_challenge: String,
}

/// A flow towards a provider, as kept between the authorize and the callback.
#[derive(Debug, Clone)]
pub struct Flow {
    pub nonce: String,
    pub pkce_verifier: String,
    pub app: AppRequest,
    pub linking: Option<Linking>,
    pub created_at: DateTime<Utc>,
}

/// Keeps a new flow for `provider`, bound to the browser whose cookie is `browser`; returns our
/// `state` for it.
pub async fn begin_flow(
    conn: &mut AsyncPgConnection,
    provider: &str,
    browser: &str,
    flow: &Flow,
) -> QueryResult<String> {
    let state = random(32);
    let now = Utc::now();
    diesel::delete(social_states::table.filter(social_states::expires_at.lt(now)))
        .execute(conn)
        .await?;
    let linking = flow.linking.as_ref();
    diesel::insert_into(social_states::table)
        .values((
            social_states::digest.eq(digest(&state)),
            social_states::provider.eq(provider),
            social_states::browser.eq(digest(browser)),
            social_states::nonce.eq(&flow.nonce),
            social_states::pkce_verifier.eq(&flow.pkce_verifier),
            social_states::redirect_to.eq(&flow.app.redirect_to),
            social_states::app_state.eq(&flow.app.app_state),
            social_states::code_challenge.eq(&flow.app.code_challenge),
            social_states::reauth.eq(flow.app.reauth),
            social_states::link_user_id.eq(linking.map(|l| l.user_id)),
            social_states::link_session_id.eq(linking.map(|l| l.session_id)),
            social_states::token_version.eq(linking.map(|l| l.token_version)),
            social_states::email_epoch.eq(linking.map(|l| l.email_epoch)),
            social_states::created_at.eq(now),
            social_states::expires_at.eq(now + STATE_LIFETIME),
        ))
        .execute(conn)
        .await?;
    Ok(state)
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = social_states)]
struct FlowRow {
    nonce: String,
    pkce_verifier: String,
    redirect_to: String,
    app_state: Option<String>,
    code_challenge: String,
    reauth: bool,
    link_user_id: Option<Uuid>,
    link_session_id: Option<Uuid>,
    token_version: Option<i32>,
    email_epoch: Option<i32>,
    created_at: DateTime<Utc>,
}

/// Spends the live flow `state` of `provider` started by the browser with cookie `browser`.
/// Anything else (unknown, spent, expired, another provider's, another browser's) is `None` and
/// spends nothing, so a planted callback cannot burn the owner's flow either.
pub async fn take_flow(
    conn: &mut AsyncPgConnection,
    state: &str,
    provider: &str,
    browser: &str,
) -> QueryResult<Option<Flow>> {
    let row: Option<FlowRow> = diesel::delete(
        social_states::table
            .find(digest(state))
            .filter(social_states::provider.eq(provider))
            .filter(social_states::browser.eq(digest(browser)))
            .filter(social_states::expires_at.gt(Utc::now())),
    )
    .returning(FlowRow::as_returning())
    .get_result(conn)
    .await
    .optional()?;
    Ok(row.map(|row| {
        let linking = match (
            row.link_user_id,
            row.link_session_id,
            row.token_version,
            row.email_epoch,
        ) {
            (Some(user_id), Some(session_id), Some(token_version), Some(email_epoch)) => {
                Some(Linking {
                    user_id,
                    session_id,
                    token_version,
                    email_epoch,
                })
            }
            _ => None,
        };
        Flow {
            nonce: row.nonce,
            pkce_verifier: row.pkce_verifier,
            app: AppRequest {
                redirect_to: row.redirect_to,
                app_state: row.app_state,
                code_challenge: row.code_challenge,
                reauth: row.reauth,
            },
            linking,
            created_at: row.created_at,
        }
    }))
}

/// A provider account to link to the code's user when the code is redeemed, and the session that
/// asked for the link (still live then, or nothing is linked).
#[derive(Debug, Clone)]
pub struct PendingLink {
    pub session_id: Uuid,
    pub account: Subject,
}

/// A redeemable code for `user`, who signed in at `provider` at `auth_time`, for the app that sent
/// `code_challenge`; with `link`, redeeming it links that provider account first.
pub async fn issue_code(
    conn: &mut AsyncPgConnection,
    user: &User,
    provider: &str,
    code_challenge: &str,
    auth_time: DateTime<Utc>,
    link: Option<&PendingLink>,
) -> QueryResult<String> {
    let code = random(32);
    let now = Utc::now();
    diesel::delete(social_codes::table.filter(social_codes::expires_at.lt(now)))
        .execute(conn)
        .await?;
    diesel::insert_into(social_codes::table)
        .values((
            social_codes::digest.eq(digest(&code)),
            social_codes::user_id.eq(user.id),
            social_codes::provider.eq(provider),
            social_codes::code_challenge.eq(code_challenge),
            social_codes::token_version.eq(user.token_version),
            social_codes::email_epoch.eq(user.email_epoch),
            social_codes::auth_time.eq(auth_time),
            social_codes::link_session_id.eq(link.map(|l| l.session_id)),
            social_codes::link_issuer.eq(link.map(|l| &l.account.issuer)),
            social_codes::link_subject.eq(link.map(|l| &l.account.subject)),
            social_codes::link_email.eq(link.and_then(|l| l.account.email.as_ref())),
            social_codes::expires_at.eq(now + CODE_LIFETIME),
        ))
        .execute(conn)
        .await?;
    Ok(code)
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = social_codes)]
struct CodeRow {
    user_id: Uuid,
    provider: String,
    code_challenge: String,
    token_version: i32,
    email_epoch: i32,
    auth_time: DateTime<Utc>,
    link_session_id: Option<Uuid>,
    link_issuer: Option<String>,
    link_subject: Option<String>,
    link_email: Option<String>,
}

/// A code being redeemed.
#[derive(Debug)]
pub struct Redeemed {
    pub user_id: Uuid,
    pub provider: String,
    pub code_challenge: String,
    pub token_version: i32,
    pub email_epoch: i32,
    pub auth_time: DateTime<Utc>,
    pub link: Option<PendingLink>,
}

impl Redeemed {
    /// Whether the account is still as it was when the code was issued.
    pub fn still_holds_for(&self, user: &User) -> bool {
        crate::users::unchanged_since(user, self.token_version, self.email_epoch)
    }
}

/// Spends `code`, whatever comes next: a code is spent by its first redemption, right or wrong.
pub async fn spend_code(conn: &mut AsyncPgConnection, code: &str) -> QueryResult<Option<Redeemed>> {
    let row: Option<CodeRow> = diesel::delete(
        social_codes::table
            .find(digest(code))
            .filter(social_codes::expires_at.gt(Utc::now())),
    )
    .returning(CodeRow::as_returning())
    .get_result(conn)
    .await
    .optional()?;
    Ok(row.map(|row| {
        let link = match (row.link_session_id, row.link_issuer, row.link_subject) {
            (Some(session_id), Some(issuer), Some(subject)) => Some(PendingLink {
                session_id,
                account: Subject {
                    issuer,
                    subject,
                    email: row.link_email,
                },
            }),
            _ => None,
        };
        Redeemed {
            user_id: row.user_id,
            provider: row.provider,
            code_challenge: row.code_challenge,
            token_version: row.token_version,
            email_epoch: row.email_epoch,
            auth_time: row.auth_time,
            link,
        }
    }))
}

/// Whether `verifier` is the one whose S256 challenge is `challenge` (RFC 7636), in constant time.
pub fn verifier_matches(verifier: &str, challenge: &str) -> bool {
    let valid = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let same = aws_lc_rs::constant_time::verify_slices_are_equal(
        computed.as_bytes(),
        challenge.as_bytes(),
    )
    .is_ok();
    valid && same
}

/// Whether `challenge` looks like an S256 challenge: 43 base64url characters (32 bytes).
pub fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_7636_example_verifies_and_nothing_else_does() {
        // RFC 7636, Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(is_s256_challenge(challenge));
        assert!(verifier_matches(verifier, challenge));
        assert!(!verifier_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj",
            challenge
        ));
        assert!(!verifier_matches(challenge, challenge));
        assert!(!verifier_matches("", challenge));
        assert!(!is_s256_challenge("plain-text-challenge"));
    }
}
