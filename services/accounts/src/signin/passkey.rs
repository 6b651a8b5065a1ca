//! Passkeys as a way in: adding and removing them (security settings, stepped up by the route),
//! signing in with one alone (discoverable credentials, so the options name no account), and
//! checking one as the second factor of a password or social sign-in. Assertions never count
//! toward the second-factor guessing limits; a sign counter that goes backwards is refused and
//! audited (a cloned authenticator).

use chrono::Utc;
use diesel::QueryResult;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use events::{Event, PasskeyAdded, PasskeyRemoved};
use serde_json::{Value, json};
use uuid::Uuid;
use webauthn_rs::prelude::{
    AuthenticationResult, DiscoverableAuthentication, PasskeyAuthentication, PasskeyRegistration,
    Webauthn, WebauthnError,
};

use super::{
    Client, complete,
    mfa::{
        self,
        passkeys::{self, Kind, Owner, PasskeyBody, Stored},
    },
};
use crate::{
    audit::{self, Origin},
    auth::{Authenticated, authz},
    db,
    http::error::ApiError,
    sessions::{self, Assurance},
    signin::{access_token, social::identities},
    state::AppState,
    throttle::{self, HourlyLimit, Route},
    users::{self, User, UserBody, links},
};

pub const PASSKEYS_OFF: &str = "Passkeys are off on this server (ACCOUNTS_WEBAUTHN_RP_ID).";
pub const BAD_CEREMONY: &str = "This passkey ceremony is unknown, used or expired. Start again.";
pub const BAD_CREDENTIAL: &str = "The passkey's answer could not be verified.";
pub const NOT_A_CREDENTIAL: &str =
    "Send the credential as PublicKeyCredential.toJSON() produces it.";
pub const ALREADY_REGISTERED: &str = "This passkey is registered already.";
pub const UNVERIFIED_ADDRESS: &str = "Confirm your email address before adding a passkey.";
pub const LAST_WAY_IN: &str = "This is the last way to sign in to this account. Add another passkey, a password or a social account first.";
/// Passwordless ceremonies one client may start in an hour (each writes a row).
const LOGIN_CEREMONIES_PER_CLIENT_HOUR: u32 = 300;

fn relying_party(state: &AppState) -> Result<&Webauthn, ApiError> {
    state
        .webauthn
        .as_deref()
        .ok_or_else(|| ApiError::field("passkeys", PASSKEYS_OFF))
}

fn webauthn_failed(error: WebauthnError) -> ApiError {
    tracing::warn!(error = %error, "a WebAuthn ceremony failed");
    ApiError::field("credential", BAD_CREDENTIAL)
}

/// `POST /api/user/passkeys/options` (stepped up): a registration ceremony for the caller.
pub async fn registration_options(
    state: &AppState,
    auth: &Authenticated,
) -> Result<(Uuid, Value), ApiError> {
    let webauthn = relying_party(state)?;
    if !auth.user.verified {
        return Err(ApiError::field("email", UNVERIFIED_ADDRESS));
    }
    let mut conn = state.pool.get().await?;
    let existing = passkeys::of_user(&mut conn, auth.user.id).await?;
    let (options, ceremony_state) =
        passkeys::registration_options(webauthn, &auth.user, &existing).map_err(webauthn_failed)?;
    let owner = Owner::of(&auth.user, Some(auth.session_id));
    let ceremony = passkeys::begin(&mut conn, Kind::Register, owner, &ceremony_state).await?;
    Ok((ceremony, options))
}

/// What adding a passkey answers: the passkey, and when it was the account's first second
/// factor, the recovery codes and the caller's new (aal2) access token.
pub struct Added {
    pub passkey: PasskeyBody,
    pub recovery_codes: Option<Vec<String>>,
    pub token: Option<String>,
}

/// `POST /api/user/passkeys`: finishes the caller's registration ceremony. The user row is locked
/// while the passkey is added; the first one turns the second factor on, with the effects of a
/// TOTP confirmation. Mailed with a "this wasn't me" link.
pub async fn add(
    state: &AppState,
    auth: &Authenticated,
    ceremony: Uuid,
    credential: &Value,
    name: Option<&str>,
    client: &Client,
    origin: &Origin,
) -> Result<Added, ApiError> {
    let webauthn = relying_party(state)?;
    let credential = passkeys::parse_registration(credential)
        .ok_or_else(|| ApiError::field("credential", NOT_A_CREDENTIAL))?;
    let mut conn = state.pool.get().await?;
    let Some((owner, ceremony_state)) =
        passkeys::take::<PasskeyRegistration>(&mut conn, ceremony, Kind::Register).await?
    else {
        return Err(ApiError::field("ceremony", BAD_CEREMONY));
    };
    if owner.session_id != Some(auth.session_id) || !owner.still_holds_for(&auth.user) {
        return Err(ApiError::field("ceremony", BAD_CEREMONY));
    }
    let passkey = webauthn
        .finish_passkey_registration(&credential, &ceremony_state)
        .map_err(webauthn_failed)?;
    let name = name
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or("Passkey")
        .to_string();
    let origin = origin.clone().by(auth.user.id);
    db::retrying(async || {
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            let Some(user) = users::lock(conn, auth.user.id).await? else {
                return Ok(Err(ApiError::bad_token()));
            };
            if !auth.holds(conn, &user).await? || !owner.still_holds_for(&user) {
                return Ok(Err(ApiError::bad_token()));
            }
            if !user.verified {
                return Ok(Err(ApiError::field("email", UNVERIFIED_ADDRESS)));
            }
            let first = !mfa::enabled(conn, user.id).await?;
            let Some(stored) = passkeys::insert(conn, user.id, &name, &passkey).await? else {
                return Ok(Err(ApiError::field("credential", ALREADY_REGISTERED)));
            };
            let details = json!({ "passkey": stored.id });
            audit::record(conn, &origin, "passkey.added", Some(user.id), details).await?;
            let reject = links::sign_in_reject(state, &user, auth.session_id);
            let event = Event::PasskeyAdded(PasskeyAdded {
                user_id: user.id,
                email: user.email.clone(),
                username: user.username.clone(),
                name: stored.name.clone(),
                added_at: Utc::now(),
                ip: origin.client_ip.clone(),
                reject_url: reject.url,
                reject_expires_at: reject.expires_at,
                locale: user.locale.clone(),
            });
            crate::outbox::enqueue(conn, event, &client.request_id).await?;
            let (recovery_codes, token) = if first {
                let session = sessions::live(conn, user.id)
                    .await?
                    .into_iter()
                    .find(|s| s.id == auth.session_id)
                    .ok_or(diesel::result::Error::RollbackTransaction)?;
                let (codes, raised) = mfa::turned_on(
                    conn,
                    state,
                    &user,
                    &session,
                    "passkey",
                    &origin,
                    &client.request_id,
                )
                .await?;
                // Read again: turning the factor on moved what the token carries.
                let user = users::find(conn, user.id)
                    .await?
                    .ok_or(diesel::result::Error::NotFound)?;
                let grants = authz::grants(conn, &user).await?;
                let token = raised.map(|session| access_token(state, &user, &session, &grants));
                (Some(codes), token)
            } else {
                (None, None)
            };
            Ok(Ok(Added {
                passkey: stored.into(),
                recovery_codes,
                token,
            }))
        })
        .await
    })
    .await?
}

/// `DELETE /api/user/passkeys/{id}` (stepped up): never the last way in. Mailed; when no second
/// factor remains, the recovery codes go and `mfa-disabled` is mailed.
pub async fn remove(
    state: &AppState,
    auth: &Authenticated,
    id: Uuid,
    client: &Client,
    origin: &Origin,
) -> Result<(), ApiError> {
    let origin = origin.clone().by(auth.user.id);
    let mut conn = state.pool.get().await?;
    db::retrying(async || {
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            let Some(user) = users::lock(conn, auth.user.id).await? else {
                return Ok(Err(ApiError::bad_token()));
            };
            if !auth.holds(conn, &user).await? {
                return Ok(Err(ApiError::bad_token()));
            }
            let mine = passkeys::of_user(conn, user.id).await?;
            if !mine.iter().any(|p| p.id == id) {
                return Ok(Err(ApiError::NotFound));
            }
            let other_ways = user.password_hash.is_some()
                || mine.len() > 1
                || !identities::of_user(conn, user.id).await?.is_empty();
            if !other_ways {
                return Ok(Err(ApiError::field("passkey", LAST_WAY_IN)));
            }
            let Some(removed) = passkeys::remove(conn, user.id, id).await? else {
                return Ok(Err(ApiError::NotFound));
            };
            let details = json!({ "passkey": removed.id });
            audit::record(conn, &origin, "passkey.removed", Some(user.id), details).await?;
            let event = Event::PasskeyRemoved(PasskeyRemoved {
                user_id: user.id,
                email: user.email.clone(),
                username: user.username.clone(),
                name: removed.name,
                removed_at: Utc::now(),
                ip: origin.client_ip.clone(),
                locale: user.locale.clone(),
            });
            crate::outbox::enqueue(conn, event, &client.request_id).await?;
            mfa::after_removal(conn, &user, &client.request_id).await?;
            Ok(Ok(()))
        })
        .await
    })
    .await?
}

/// `POST /api/users/login/passkey/options`: a passwordless ceremony. Anonymous, so limited per
/// client before anything is written.
pub async fn login_options(state: &AppState, client: &Client) -> Result<(Uuid, Value), ApiError> {
    let webauthn = relying_party(state)?;
    state.client_rate.admit(Route::Login, &client.addr)?;
    let mut conn = state.pool.get().await?;
    let limit = HourlyLimit {
        bucket: "passkey:client",
        key: client.addr.throttle_key(),
        per_hour: LOGIN_CEREMONIES_PER_CLIENT_HOUR,
        cost: 1,
        message: throttle::TOO_MANY_FROM_CLIENT,
    };
    throttle::hourly(&mut conn, vec![limit], Utc::now()).await?;
    let (options, ceremony_state) = passkeys::login_options(webauthn).map_err(webauthn_failed)?;
    let ceremony =
        passkeys::begin(&mut conn, Kind::Login, Owner::default(), &ceremony_state).await?;
    Ok((ceremony, options))
}

/// `POST /api/users/login/passkey`: the assertion names its account (the user handle) and its
/// credential; both must match a stored passkey. User verification makes it two factors (`aal2`).
pub async fn sign_in(
    state: &AppState,
    ceremony: Uuid,
    credential: &Value,
    client: &Client,
) -> Result<UserBody, ApiError> {
    let webauthn = relying_party(state)?;
    let assertion = passkeys::parse_assertion(credential)
        .ok_or_else(|| ApiError::field("credential", NOT_A_CREDENTIAL))?;
    let mut conn = state.pool.get().await?;
    let Some((_, ceremony_state)) =
        passkeys::take::<DiscoverableAuthentication>(&mut conn, ceremony, Kind::Login).await?
    else {
        return Err(ApiError::field("ceremony", BAD_CEREMONY));
    };
    let unknown = || ApiError::Unauthorized {
        field: "credential",
        message: "This passkey is not registered here.",
    };
    let (user_id, credential_id) = webauthn
        .identify_discoverable_authentication(&assertion)
        .map_err(|_| unknown())?;
    let credential_id = credential_id.to_vec();
    let signed_in = db::retrying(async || {
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            // The passkey is read, checked and updated under the user's lock: a removal, a reject
            // or an operator's reset that commits first leaves nothing to sign in with, and two
            // assertions race on one counter no more.
            let Some(user) = users::lock(conn, user_id).await? else {
                return Ok(Err(unknown()));
            };
            let Some(stored) = passkeys::by_credential(conn, &credential_id).await? else {
                return Ok(Err(unknown()));
            };
            if stored.user_id != user.id || !user.active {
                return Ok(Err(unknown()));
            }
            let Some(passkey) = stored.passkey() else {
                return Ok(Err(unknown()));
            };
            let verified = webauthn.finish_discoverable_authentication_v2(
                &assertion,
                ceremony_state.clone(),
                &passkey,
            );
            let result = match verified {
                Ok(result) => result,
                Err(error) => {
                    let origin = client.origin().by(user.id);
                    return Ok(Err(refused(conn, &stored, error, &origin).await?));
                }
            };
            passkeys::used(conn, &stored, &result).await?;
            let via = json!({ "passkey": stored.id });
            let signed_in = complete(
                conn,
                state,
                &user,
                &Assurance::passkey(),
                client,
                via,
                Utc::now(),
            )
            .await?;
            Ok(Ok(signed_in))
        })
        .await
    })
    .await?;
    let signed_in = signed_in?;
    metrics::counter!("accounts_logins_total", "outcome" => "ok").increment(1);
    Ok(signed_in.into_body(state))
}

/// A refused assertion of `stored`: a sign counter that went backwards is audited (a cloned
/// authenticator); the answer is 401 either way.
async fn refused(
    conn: &mut AsyncPgConnection,
    stored: &Stored,
    error: WebauthnError,
    origin: &Origin,
) -> QueryResult<ApiError> {
    if matches!(error, WebauthnError::CredentialPossibleCompromise) {
        let details = json!({ "passkey": stored.id });
        audit::record(
            conn,
            origin,
            "passkey.counter_regressed",
            Some(stored.user_id),
            details,
        )
        .await?;
    } else {
        tracing::warn!(error = %error, "a passkey assertion failed");
    }
    Ok(ApiError::Unauthorized {
        field: "credential",
        message: BAD_CREDENTIAL,
    })
}

/// Options for the `mfa` challenge of `user` (locked), when the account has passkeys and they
/// are on: the ceremony to name in the challenge and the `publicKey` options.
pub async fn second_factor_options(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    user: &User,
) -> QueryResult<Option<(Uuid, Value)>> {
    let Some(webauthn) = state.webauthn.as_deref() else {
        return Ok(None);
    };
    let stored = passkeys::of_user(conn, user.id).await?;
    let Ok(Some((options, ceremony_state))) = passkeys::second_factor_options(webauthn, &stored)
    else {
        return Ok(None);
    };
    let ceremony = passkeys::begin(
        conn,
        Kind::SecondFactor,
        Owner::of(user, None),
        &ceremony_state,
    )
    .await?;
    Ok(Some((ceremony, options)))
}

/// Checks a passkey assertion as `user`'s second factor (the user locked), in the ceremony the
/// challenge named: `Ok(true)` when it holds. Never counted by the guessing limits.
pub async fn verify_second_factor(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    user: &User,
    ceremony: Option<Uuid>,
    credential: &Value,
    origin: &Origin,
) -> QueryResult<bool> {
    let (Some(webauthn), Some(ceremony)) = (state.webauthn.as_deref(), ceremony) else {
        return Ok(false);
    };
    let Some(assertion) = passkeys::parse_assertion(credential) else {
        return Ok(false);
    };
    let Some((owner, ceremony_state)) =
        passkeys::take::<PasskeyAuthentication>(conn, ceremony, Kind::SecondFactor).await?
    else {
        return Ok(false);
    };
    if !owner.still_holds_for(user) {
        return Ok(false);
    }
    let Some(stored) = passkeys::by_credential(conn, assertion.raw_id.as_ref()).await? else {
        return Ok(false);
    };
    if stored.user_id != user.id {
        return Ok(false);
    }
    let result: Result<AuthenticationResult, _> =
        webauthn.finish_passkey_authentication(&assertion, &ceremony_state);
    match result {
        Ok(result) => {
            passkeys::used(conn, &stored, &result).await?;
            Ok(true)
        }
        Err(error) => {
            refused(conn, &stored, error, origin).await?;
            Ok(false)
        }
    }
}
