//! Passkeys (WebAuthn, `webauthn-rs`): the relying party, the `passkeys` table and the ceremonies
//! in progress. Ceremony state lives in Postgres (5 minutes, single use) and never reaches the
//! client; options go out in the JSON form `PublicKeyCredential.parse*OptionsFromJSON` accepts, and
//! credentials come in as `PublicKeyCredential.toJSON()` produces them.

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use uuid::Uuid;
use webauthn_rs::prelude::{
    AuthenticationResult, DiscoverableAuthentication, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse, Webauthn, WebauthnBuilder, WebauthnError,
};

use crate::{
    config::Settings,
    schema::{passkeys, webauthn_ceremonies},
    users::User,
};

pub const CEREMONY_LIFETIME: Duration = Duration::minutes(5);
/// The longest name a passkey may be given.
pub const MAX_NAME: usize = 64;

/// The relying party from settings; `None` (logged) when passkeys are off: no host name to be
/// the relying party id (an IP-address public URL without `ACCOUNTS_WEBAUTHN_RP_ID`).
pub fn relying_party(settings: &Settings) -> anyhow::Result<Option<Webauthn>> {
    let Some(rp_id) = &settings.webauthn_rp_id else {
        tracing::warn!(
            public_url = %settings.public_url,
            "passkeys are off: the public URL's host is an IP address, which browsers refuse as a WebAuthn relying party id; set ACCOUNTS_WEBAUTHN_RP_ID (and ACCOUNTS_WEBAUTHN_ORIGINS) to turn them on"
        );
        return Ok(None);
    };
    let (first, others) = settings
        .webauthn_origins
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("ACCOUNTS_WEBAUTHN_ORIGINS names no origin"))?;
    let mut builder = WebauthnBuilder::new(rp_id, first).map_err(|e| {
        anyhow::anyhow!(
            "ACCOUNTS_WEBAUTHN_RP_ID {rp_id:?} does not fit the origin {first} ({e}); the id must be the origin's host or a parent domain of it"
        )
    })?;
    for origin in others {
        builder = builder.append_allowed_origin(origin);
    }
    let webauthn = builder
        .rp_name(&settings.product_name)
        .build()
        .map_err(|e| anyhow::anyhow!("the WebAuthn relying party cannot be built: {e}"))?;
    Ok(Some(webauthn))
}

/// A stored passkey.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = passkeys)]
pub struct Stored {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub passkey: Value,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl Stored {
    pub fn passkey(&self) -> Option<Passkey> {
        serde_json::from_value(self.passkey.clone()).ok()
    }
}

/// A passkey as its owner sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PasskeyBody {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<Stored> for PasskeyBody {
    fn from(stored: Stored) -> Self {
        Self {
            id: stored.id,
            name: stored.name,
            created_at: stored.created_at,
            last_used_at: stored.last_used_at,
        }
    }
}

pub async fn of_user(conn: &mut AsyncPgConnection, user_id: Uuid) -> QueryResult<Vec<Stored>> {
    passkeys::table
        .filter(passkeys::user_id.eq(user_id))
        .order(passkeys::created_at)
        .select(Stored::as_select())
        .load(conn)
        .await
}

pub async fn count(conn: &mut AsyncPgConnection, user_id: Uuid) -> QueryResult<i64> {
    passkeys::table
        .filter(passkeys::user_id.eq(user_id))
        .count()
        .get_result(conn)
        .await
}

/// The passkey with credential id `credential_id`, whoever's it is.
pub async fn by_credential(
    conn: &mut AsyncPgConnection,
    credential_id: &[u8],
) -> QueryResult<Option<Stored>> {
    passkeys::table
        .filter(passkeys::credential_id.eq(credential_id))
        .select(Stored::as_select())
        .first(conn)
        .await
        .optional()
}

/// Stores `passkey` for `user_id`; `None` when its credential id is registered already (to
/// anyone: the unique index decides races).
pub async fn insert(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    name: &str,
    passkey: &Passkey,
) -> QueryResult<Option<Stored>> {
    let record = serde_json::to_value(passkey).map_err(serialization)?;
    diesel::insert_into(passkeys::table)
        .values((
            passkeys::id.eq(Uuid::now_v7()),
            passkeys::user_id.eq(user_id),
            passkeys::credential_id.eq(passkey.cred_id().as_slice()),
            passkeys::name.eq(name),
            passkeys::passkey.eq(record),
        ))
        .on_conflict_do_nothing()
        .returning(Stored::as_returning())
        .get_result(conn)
        .await
        .optional()
}

/// After an assertion with `stored`: the sign counter and backup flags as the authenticator
/// reported them, and the time.
pub async fn used(
    conn: &mut AsyncPgConnection,
    stored: &Stored,
    result: &AuthenticationResult,
) -> QueryResult<()> {
    let mut record = stored.passkey().ok_or(diesel::result::Error::NotFound)?;
    record.update_credential(result);
    let record = serde_json::to_value(&record).map_err(serialization)?;
    diesel::update(passkeys::table.find(stored.id))
        .set((
            passkeys::passkey.eq(record),
            passkeys::last_used_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Removes `user_id`'s passkey `id`; the removed one, if it was there.
pub async fn remove(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    id: Uuid,
) -> QueryResult<Option<Stored>> {
    diesel::delete(
        passkeys::table
            .filter(passkeys::id.eq(id))
            .filter(passkeys::user_id.eq(user_id)),
    )
    .returning(Stored::as_returning())
    .get_result(conn)
    .await
    .optional()
}

/// Removes what was added at or after `since`, or every passkey with `None`; how many.
pub async fn remove_since(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    since: Option<DateTime<Utc>>,
) -> QueryResult<usize> {
    let mine = passkeys::table.filter(passkeys::user_id.eq(user_id));
    match since {
        Some(since) => {
            diesel::delete(mine.filter(passkeys::created_at.ge(since)))
                .execute(conn)
                .await
        }
        None => diesel::delete(mine).execute(conn).await,
    }
}

fn serialization(e: serde_json::Error) -> diesel::result::Error {
    diesel::result::Error::SerializationError(Box::new(e))
}

/// What kind of ceremony a row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Register,
    Login,
    SecondFactor,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Register => "register",
            Kind::Login => "login",
            Kind::SecondFactor => "second_factor",
        }
    }
}

/// Whose ceremony it is, as the account was when it began.
#[derive(Debug, Clone, Copy, Default)]
pub struct Owner {
    pub user_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    pub token_version: Option<i32>,
    pub email_epoch: Option<i32>,
}

impl Owner {
    pub fn of(user: &User, session_id: Option<Uuid>) -> Self {
        Self {
            user_id: Some(user.id),
            session_id,
            token_version: Some(user.token_version),
            email_epoch: Some(user.email_epoch),
        }
    }

    /// Whether `user` is this ceremony's, still as it was (a reset, a revert, a reject or a
    /// deactivation since voids it).
    pub fn still_holds_for(&self, user: &User) -> bool {
        match (self.user_id, self.token_version, self.email_epoch) {
            (Some(id), Some(version), Some(epoch)) => {
                id == user.id && crate::users::unchanged_since(user, version, epoch)
            }
            _ => false,
        }
    }
}

/// Keeps `state` for a new ceremony; returns its id. Expired ceremonies go.
pub async fn begin<S: Serialize>(
    conn: &mut AsyncPgConnection,
    kind: Kind,
    owner: Owner,
    state: &S,
) -> QueryResult<Uuid> {
    let id = Uuid::new_v4();
    let now = Utc::now();
    diesel::delete(webauthn_ceremonies::table.filter(webauthn_ceremonies::expires_at.lt(now)))
        .execute(conn)
        .await?;
    diesel::insert_into(webauthn_ceremonies::table)
        .values((
            webauthn_ceremonies::id.eq(id),
            webauthn_ceremonies::kind.eq(kind.as_str()),
            webauthn_ceremonies::user_id.eq(owner.user_id),
            webauthn_ceremonies::session_id.eq(owner.session_id),
            webauthn_ceremonies::token_version.eq(owner.token_version),
            webauthn_ceremonies::email_epoch.eq(owner.email_epoch),
            webauthn_ceremonies::state.eq(serde_json::to_value(state).map_err(serialization)?),
            webauthn_ceremonies::expires_at.eq(now + CEREMONY_LIFETIME),
        ))
        .execute(conn)
        .await?;
    Ok(id)
}

/// Spends the live ceremony `id` of `kind`: its owner and state. Spent by its first use, right
/// or wrong.
pub async fn take<S: DeserializeOwned>(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    kind: Kind,
) -> QueryResult<Option<(Owner, S)>> {
    type Row = (Option<Uuid>, Option<Uuid>, Option<i32>, Option<i32>, Value);
    let row: Option<Row> = diesel::delete(
        webauthn_ceremonies::table
            .find(id)
            .filter(webauthn_ceremonies::kind.eq(kind.as_str()))
            .filter(webauthn_ceremonies::expires_at.gt(Utc::now())),
    )
    .returning((
        webauthn_ceremonies::user_id,
        webauthn_ceremonies::session_id,
        webauthn_ceremonies::token_version,
        webauthn_ceremonies::email_epoch,
        webauthn_ceremonies::state,
    ))
    .get_result(conn)
    .await
    .optional()?;
    Ok(
        row.and_then(|(user_id, session_id, token_version, email_epoch, state)| {
            let state = serde_json::from_value(state).ok()?;
            let owner = Owner {
                user_id,
                session_id,
                token_version,
                email_epoch,
            };
            Some((owner, state))
        }),
    )
}

/// Registration options for `user`, asking for a discoverable credential (a passkey signs in
/// without a username) with user verification, excluding the user's passkeys.
pub fn registration_options(
    webauthn: &Webauthn,
    user: &User,
    existing: &[Stored],
) -> Result<(Value, PasskeyRegistration), WebauthnError> {
    let exclude = existing
        .iter()
        .filter_map(Stored::passkey)
        .map(|p| p.cred_id().clone())
        .collect::<Vec<_>>();
    let name = user.username.as_deref().unwrap_or(&user.email);
    let (options, state) =
        webauthn.start_passkey_registration(user.id, name, name, Some(exclude))?;
    let mut options = public_key_json(&options);
    if let Some(selection) = options.get_mut("authenticatorSelection") {
        selection["residentKey"] = Value::from("required");
        selection["requireResidentKey"] = Value::from(true);
    }
    Ok((options, state))
}

/// The `publicKey` member of `options`, the form `parseCreationOptionsFromJSON` and
/// `parseRequestOptionsFromJSON` take.
fn public_key_json<T: Serialize>(options: &T) -> Value {
    let mut value = serde_json::to_value(options).unwrap_or_default();
    value
        .get_mut("publicKey")
        .map(Value::take)
        .unwrap_or_default()
}

pub fn request_json(options: &RequestChallengeResponse) -> Value {
    public_key_json(options)
}

/// Options for a passwordless sign-in: discoverable credentials only, so they name no account.
pub fn login_options(
    webauthn: &Webauthn,
) -> Result<(Value, DiscoverableAuthentication), WebauthnError> {
    let (options, state) = webauthn.start_discoverable_authentication()?;
    Ok((request_json(&options), state))
}

/// Options for a passkey as the second factor of `passkeys`' owner.
pub fn second_factor_options(
    webauthn: &Webauthn,
    stored: &[Stored],
) -> Result<Option<(Value, PasskeyAuthentication)>, WebauthnError> {
    let passkeys: Vec<Passkey> = stored.iter().filter_map(Stored::passkey).collect();
    if passkeys.is_empty() {
        return Ok(None);
    }
    let (options, state) = webauthn.start_passkey_authentication(&passkeys)?;
    Ok(Some((request_json(&options), state)))
}

/// A credential from the client: `toJSON()`'s shape, parsed; `None` when it is not one.
pub fn parse_registration(credential: &Value) -> Option<RegisterPublicKeyCredential> {
    public_key_credential(credential)
}

pub fn parse_assertion(credential: &Value) -> Option<PublicKeyCredential> {
    public_key_credential(credential)
}

fn public_key_credential<T: DeserializeOwned>(credential: &Value) -> Option<T> {
    if credential.get("type").and_then(Value::as_str) != Some("public-key") {
        return None;
    }
    serde_json::from_value(credential.clone()).ok()
}

/// Whether `name` is fit to show in a mail: no control, format (zero-width, direction) or line
/// separator characters, which could hide it or make it read as something else.
pub fn name_is_plain(name: &str) -> bool {
    !name.chars().any(|c| {
        c.is_control()
            || matches!(
                c,
                '\u{00AD}'
                    | '\u{061C}'
                    | '\u{180E}'
                    | '\u{200B}'..='\u{200F}'
                    | '\u{2028}'..='\u{202E}'
                    | '\u{2060}'..='\u{206F}'
                    | '\u{FEFF}'
                    | '\u{FFF9}'..='\u{FFFB}'
            )
    })
}
