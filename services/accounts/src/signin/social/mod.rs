//! Social login: a provider vouches for who signed in there, and the sign-in ends in the same
//! session start as a password's (or in the same `mfa` challenge).
//!
//! 1. [`start`]: the app's request (or a signed-in user's link ticket) becomes a flow kept
//!    server-side, bound to the browser by a cookie, and the browser goes to the provider.
//! 2. [`callback`]: the provider's answer is checked against the flow (this provider, this
//!    browser, its PKCE verifier and nonce), the provider account resolved to a user by the four
//!    rules below, and the browser goes back to the app with our one-time code.
//! 3. [`redeem`]: the app trades the code and its verifier for what a password login answers.
//!    A link is made only here: a link ticket opened in someone else's browser yields a code only
//!    that browser holds, and only the app that asked for the link holds the verifier.
//!
//! A session's `auth_time` is when its user signed in at the provider (the ID token's
//! `auth_time`, asked for with `max_age`); `prompt=login` asks the provider for a fresh sign-in,
//! which is how an account without a password steps up.
//!
//! Whom a provider account signs in: a known `(issuer, subject)`, its user; otherwise, without an
//! address the provider vouches for, nobody (`email_unverified`); otherwise, when an account has
//! that address, nobody (`account_exists`: a provider's "verified" is historical, so linking needs
//! the owner, signed in, to link); otherwise a new account.

pub mod identities;
pub mod providers;
pub mod store;

use actix_web::http::header::HeaderValue;
use chrono::Utc;
use diesel::QueryResult;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use events::{Event, IdentityLinked, IdentityUnlinked, UserRegistered};
use serde_json::json;
use url::Url;
use uuid::Uuid;

use super::{Client, Outcome, begin_or_challenge, devices};
use crate::{
    audit::{self, Origin},
    auth::Authenticated,
    db,
    domain::{EmailAddress, FieldErrors, profile},
    http::error::ApiError,
    outbox,
    sessions::{self, Assurance},
    state::AppState,
    throttle::{self, HourlyLimit, Route},
    users::{self, NewUser, User, email_changes, links},
};
use providers::{Provider, ProviderAccount, ProviderError};
use store::{AppRequest, Flow, Linking};

pub const UNKNOWN_FLOW: &str =
    "This sign-in is unknown, used, expired or was started in another browser. Start again.";
pub const BAD_SOCIAL_CODE: &str = "The code is invalid or expired.";
pub const BAD_VERIFIER: &str = "The code_verifier does not match the code_challenge.";
pub const REDIRECT_NOT_ALLOWED: &str = "This redirect_to is not in ACCOUNTS_SOCIAL_REDIRECTS.";
pub const CHALLENGE_NEEDED: &str =
    "Send the S256 code_challenge of a code_verifier (43 base64url characters).";
pub const BAD_PROMPT: &str =
    "Only prompt=login is accepted: a fresh sign-in at the provider, to step up.";
pub const NO_REAUTH: &str = "This provider cannot be asked for a fresh sign-in.";
pub const BAD_TICKET: &str = "This link request is invalid or expired. Start it again.";
pub const LAST_WAY_IN: &str = "This is the last way to sign in to this account. Set a password or link another account first.";
pub const PROVIDER_UNAVAILABLE: &str = "The sign-in provider cannot be reached. Try again shortly.";
/// Social flows one client may start in an hour (each writes a row).
const FLOWS_PER_CLIENT_HOUR: u32 = 120;
/// The longest `state` an app may have echoed back.
const MAX_APP_STATE: usize = 512;

/// The browser-binding cookie's name: `__Host-` where the public URL is HTTPS.
pub fn cookie_name(state: &AppState) -> &'static str {
    if state.settings.public_url.scheme() == "https" {
        "__Host-accounts-social"
    } else {
        "accounts-social"
    }
}

/// The `Set-Cookie` value binding a flow to this browser (HttpOnly, SameSite=Lax).
pub fn binding_cookie(state: &AppState, value: &str) -> HeaderValue {
    let secure = if state.settings.public_url.scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    let max_age = store::STATE_LIFETIME.num_seconds();
    HeaderValue::from_str(&format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
        cookie_name(state)
    ))
    .expect("a base64url value is a valid header")
}

/// How a flow begins: an app's sign-in, or a signed-in user's link ticket.
pub enum Start {
    App(AppRequest),
    Link(String),
}

/// Where to send the browser, and the cookie value to set when the browser had none.
pub struct Started {
    pub location: Url,
    pub new_browser: Option<String>,
}

fn provider<'a>(state: &'a AppState, name: &str) -> Result<&'a Provider, ApiError> {
    state
        .social
        .get(name)
        .map(AsRef::as_ref)
        .ok_or(ApiError::NotFound)
}

/// Checks what an app asks for: a listed `redirect_to`, an S256 `code_challenge`, a bounded state.
pub fn app_request(
    state: &AppState,
    redirect_to: Option<String>,
    code_challenge: Option<String>,
    app_state: Option<String>,
    prompt: Option<String>,
) -> Result<AppRequest, ApiError> {
    let mut errors = FieldErrors::new();
    let redirect_to = redirect_to.unwrap_or_default();
    if !state.settings.social.redirects.contains(&redirect_to) {
        crate::domain::push_error(&mut errors, "redirect_to", REDIRECT_NOT_ALLOWED);
    }
    let code_challenge = code_challenge.unwrap_or_default();
    if !store::is_s256_challenge(&code_challenge) {
        crate::domain::push_error(&mut errors, "code_challenge", CHALLENGE_NEEDED);
    }
    if app_state.as_ref().is_some_and(|s| s.len() > MAX_APP_STATE) {
        crate::domain::push_error(
            &mut errors,
            "state",
            format!("Ensure this field has no more than {MAX_APP_STATE} characters."),
        );
    }
    let reauth = match prompt.as_deref() {
        None => false,
        Some("login") => true,
        Some(_) => {
            crate::domain::push_error(&mut errors, "prompt", BAD_PROMPT);
            false
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    Ok(AppRequest {
        redirect_to,
        app_state,
        code_challenge,
        reauth,
    })
}

/// `GET /api/auth/{provider}/authorize`: keeps the flow and says where the browser goes.
/// Anonymous, so limited per client before anything is written.
pub async fn start(
    state: &AppState,
    provider_name: &str,
    start: Start,
    browser: Option<&str>,
    client: &Client,
) -> Result<Started, ApiError> {
    let provider = provider(state, provider_name)?;
    if matches!(&start, Start::App(app) if app.reauth) && !provider.can_reauthenticate() {
        return Err(ApiError::field("prompt", NO_REAUTH));
    }
    state.client_rate.admit(Route::SocialSignIn, &client.addr)?;
    let mut conn = state.pool.get().await?;
    let limit = HourlyLimit {
        bucket: "social:client",
        key: client.addr.throttle_key(),
        per_hour: FLOWS_PER_CLIENT_HOUR,
        cost: 1,
        message: throttle::TOO_MANY_FROM_CLIENT,
    };
    throttle::hourly(&mut conn, vec![limit], Utc::now()).await?;
    let (app, linking) = match start {
        Start::App(app) => (app, None),
        Start::Link(ticket) => {
            let (linking, app) = store::take_ticket(&mut conn, &ticket, provider.name())
                .await?
                .ok_or_else(|| ApiError::field("link", BAD_TICKET))?;
            (app, Some(linking))
        }
    };
    let flow = Flow {
        nonce: store::random(32),
        pkce_verifier: store::random(32),
        app,
        linking,
        created_at: Utc::now(),
    };
    let new_browser = browser
        .filter(|b| b.len() == 43)
        .is_none()
        .then(|| store::random(32));
    let browser = new_browser.as_deref().or(browser).unwrap_or_default();
    let our_state = store::begin_flow(&mut conn, provider.name(), browser, &flow).await?;
    let location = provider
        .authorize_url(
            &our_state,
            &flow.nonce,
            &flow.pkce_verifier,
            flow.app.reauth,
        )
        .map_err(|_| ApiError::Unavailable(anyhow::anyhow!(PROVIDER_UNAVAILABLE)))?;
    Ok(Started {
        location,
        new_browser,
    })
}

/// What a provider sent back to our callback.
#[derive(Debug, Default)]
pub struct Returned {
    pub code: Option<String>,
    pub state: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
}

/// `GET /api/auth/{provider}/callback`: where the browser goes next (the app's `redirect_to`
/// with our code, or with an error). A callback whose flow is unknown, spent, expired, another
/// provider's or another browser's is 400: there is no trusted place to send it.
pub async fn callback(
    state: &AppState,
    provider_name: &str,
    returned: Returned,
    browser: Option<&str>,
    client: &Client,
    locale: String,
) -> Result<Url, ApiError> {
    let provider = provider(state, provider_name)?;
    let unknown = || ApiError::field("state", UNKNOWN_FLOW);
    let (Some(our_state), Some(browser)) = (returned.state.as_deref(), browser) else {
        return Err(unknown());
    };
    let mut conn = state.pool.get().await?;
    // A refusal writes nothing (no audit row per request: anyone can send these).
    let Some(flow) = store::take_flow(&mut conn, our_state, provider.name(), browser).await? else {
        return Err(unknown());
    };
    drop(conn);
    let app = flow.app.clone();
    let answer = match returned.error.as_deref() {
        Some("access_denied") => Err(Refusal::new(
            "access_denied",
            "The sign-in was cancelled at the provider.",
        )),
        Some(_) => Err(Refusal::new(
            "server_error",
            "The provider could not sign you in.",
        )),
        None => signed_in_at_provider(state, provider, &flow, returned, client, locale).await,
    };
    let mut location = Url::parse(&app.redirect_to).expect("listed redirects are absolute URLs");
    {
        let mut query = location.query_pairs_mut();
        match &answer {
            Ok(code) => {
                query.append_pair("code", code);
            }
            Err(refusal) => {
                query.append_pair("error", refusal.error);
                query.append_pair("error_description", refusal.description);
            }
        }
        if let Some(app_state) = &app.app_state {
            query.append_pair("state", app_state);
        }
    }
    Ok(location)
}

/// Why a callback sends the browser back without a code.
struct Refusal {
    error: &'static str,
    description: &'static str,
}

impl Refusal {
    fn new(error: &'static str, description: &'static str) -> Self {
        Self { error, description }
    }
}

impl From<diesel::result::Error> for Refusal {
    fn from(error: diesel::result::Error) -> Self {
        tracing::error!(%error, "a social sign-in failed on the database");
        Refusal::new("server_error", "Something went wrong. Try again.")
    }
}

impl From<ProviderError> for Refusal {
    fn from(error: ProviderError) -> Self {
        match error {
            ProviderError::Unavailable => Refusal::new("server_error", PROVIDER_UNAVAILABLE),
            ProviderError::Rejected(_) => Refusal::new(
                "invalid_request",
                "The provider's answer failed a check. Start again.",
            ),
        }
    }
}

/// The provider's code redeemed and resolved to a user: our code for the app.
async fn signed_in_at_provider(
    state: &AppState,
    provider: &Provider,
    flow: &Flow,
    returned: Returned,
    client: &Client,
    locale: String,
) -> Result<String, Refusal> {
    // RFC 9207: an answer naming another issuer is a mix-up, and so is one without `iss` from a
    // provider that says it always sends one.
    if returned.iss.is_none() && provider.sends_iss() {
        return Err(Refusal::new(
            "invalid_request",
            "The answer did not say which issuer sent it.",
        ));
    }
    if let (Some(iss), Some(issuer)) = (returned.iss.as_deref(), provider.issuer())
        && iss != issuer
    {
        return Err(Refusal::new(
            "invalid_request",
            "The answer came from another issuer.",
        ));
    }
    let code = returned.code.ok_or(Refusal::new(
        "invalid_request",
        "The provider sent no code.",
    ))?;
    let account = provider
        .account(&state.http, &code, &flow.pkce_verifier, &flow.nonce)
        .await?;
    // A step-up sign-in must have been one: the provider says when its user last signed in.
    let fresh_enough = flow.created_at - chrono::Duration::seconds(5);
    if flow.app.reauth && account.auth_time.is_none_or(|at| at < fresh_enough) {
        return Err(Refusal::new(
            "invalid_request",
            "The provider did not ask you to sign in again.",
        ));
    }
    // The session's auth_time is when the user signed in at the provider; a provider that does
    // not say gives a session that must step up before a security setting.
    let reauth = chrono::Duration::from_std(state.settings.reauth).unwrap_or_default();
    let auth_time = account
        .auth_time
        .unwrap_or(flow.created_at - reauth - chrono::Duration::seconds(1))
        .min(Utc::now());
    let mut conn = state.pool.get().await.map_err(|e| {
        tracing::error!(error = %e, "no database connection for a social sign-in");
        Refusal::new("server_error", "Something went wrong. Try again.")
    })?;
    let origin = client.origin();
    // Two first sign-ins of one provider account race on the unique indexes; the loser finds
    // the winner's account on its second pass.
    for _ in 0..2 {
        let resolved = db::retrying(async || {
            conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                let signed_in = SignedInAt {
                    provider,
                    account: &account,
                    auth_time,
                };
                resolve(conn, &signed_in, flow, &origin, client, &locale).await
            })
            .await
        })
        .await;
        match resolved {
            Ok(answer) => return answer,
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Refusal::new(
        "server_error",
        "Something went wrong. Try again.",
    ))
}

/// A provider account just signed in at its provider.
struct SignedInAt<'a> {
    provider: &'a Provider,
    account: &'a ProviderAccount,
    auth_time: chrono::DateTime<Utc>,
}

/// Whom `account` signs in (or, for a link flow, which account it is to be linked to when the
/// app redeems the code), and our code for them. In a transaction; the user's row is locked
/// before anything is created for it.
async fn resolve(
    conn: &mut AsyncPgConnection,
    at: &SignedInAt<'_>,
    flow: &Flow,
    origin: &Origin,
    client: &Client,
    locale: &str,
) -> QueryResult<Result<String, Refusal>> {
    let (provider, account) = (at.provider, at.account);
    let subject = account.subject();
    let known = identities::find(conn, &subject).await?;
    if let Some(linking) = flow.linking {
        let Some(user) = users::lock(conn, linking.user_id).await? else {
            return Ok(Err(Refusal::new("access_denied", "The account is gone.")));
        };
        if let Err(refusal) = may_link(conn, &user, &linking).await? {
            return Ok(Err(refusal));
        }
        let link = match known {
            Some(identity) if identity.user_id != user.id => {
                return Ok(Err(Refusal::new("identity_taken", IDENTITY_TAKEN)));
            }
            // Linked already: a sign-in.
            Some(_) => None,
            None => Some(store::PendingLink {
                session_id: linking.session_id,
                account: subject,
            }),
        };
        return finish(conn, at, flow, user, link.as_ref()).await;
    }
    let user = if let Some(identity) = known {
        let Some(user) = signs_in(conn, &identity, &subject).await? else {
            return Ok(Err(Refusal::new("access_denied", "The account is gone.")));
        };
        user
    } else {
        let vouched = account
            .email
            .as_deref()
            .filter(|_| account.email_verified && provider.settings.trust_email)
            .and_then(|email| EmailAddress::parse(email).ok());
        let Some(email) = vouched else {
            return Ok(Err(Refusal::new(
                "email_unverified",
                "The provider does not vouch for an email address of this account.",
            )));
        };
        email_changes::lock_address(conn, email.as_str()).await?;
        // A parallel first sign-in of this provider account may have made its account while
        // this one waited for the address: that account is this provider account's.
        if let Some(identity) = identities::find(conn, &subject).await? {
            let Some(user) = signs_in(conn, &identity, &subject).await? else {
                return Ok(Err(Refusal::new("access_denied", "The account is gone.")));
            };
            return finish(conn, at, flow, user, None).await;
        }
        if users::find_by_email(conn, email.as_str()).await?.is_some()
            || email_changes::reserved_for_another(conn, email.as_str(), None).await?
        {
            let details = json!({ "provider": provider.name() });
            audit::record(conn, origin, "social.account_exists", None, details).await?;
            return Ok(Err(Refusal::new(
                "account_exists",
                "An account with this email address exists. Sign in to it and link this provider from the account.",
            )));
        }
        create_account(conn, provider, &email, account, origin, client, locale).await?
    };
    finish(conn, at, flow, user, None).await
}

pub const IDENTITY_TAKEN: &str = "This provider account is linked to another account.";
pub const LINK_VOID: &str = "The account changed since the link began (a sign-out, a password reset or a recovery). Start again.";
pub const LINK_UNVERIFIED: &str = "Confirm your email address before linking an account.";

/// Whether `user` (locked) may still get the link it asked for: the account as it was, the asking
/// session live, the address confirmed.
async fn may_link(
    conn: &mut AsyncPgConnection,
    user: &User,
    linking: &Linking,
) -> QueryResult<Result<(), Refusal>> {
    if !linking.still_holds_for(user)
        || !sessions::is_live(conn, linking.session_id, user.id).await?
    {
        return Ok(Err(Refusal::new("invalid_request", LINK_VOID)));
    }
    if !user.verified {
        return Ok(Err(Refusal::new("invalid_request", LINK_UNVERIFIED)));
    }
    Ok(Ok(()))
}

/// The user of a known identity, locked, its use recorded.
async fn signs_in(
    conn: &mut AsyncPgConnection,
    identity: &identities::Identity,
    account: &identities::Subject,
) -> QueryResult<Option<User>> {
    let user = users::lock(conn, identity.user_id).await?;
    if user.is_some() {
        identities::used(conn, identity.id, account.email.as_deref()).await?;
    }
    Ok(user)
}

/// Our code for `user` (locked), unless the account is deactivated.
async fn finish(
    conn: &mut AsyncPgConnection,
    at: &SignedInAt<'_>,
    flow: &Flow,
    user: User,
    link: Option<&store::PendingLink>,
) -> QueryResult<Result<String, Refusal>> {
    if !user.active {
        return Ok(Err(Refusal::new(
            "access_denied",
            "This account is deactivated.",
        )));
    }
    let code = store::issue_code(
        conn,
        &user,
        at.provider.name(),
        &flow.app.code_challenge,
        at.auth_time,
        link,
    )
    .await?;
    Ok(Ok(code))
}

/// Links `link`'s provider account to `user` (locked), audited and mailed with a "this wasn't me"
/// link that rejects the session that asked for it; `false` when the provider account is
/// someone's already, or the user has one at `provider`.
async fn link(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    provider: &str,
    user: &User,
    link: &store::PendingLink,
    client: &Client,
) -> QueryResult<bool> {
    let Some(identity) = identities::link(conn, user.id, provider, &link.account).await? else {
        return Ok(false);
    };
    let origin = client.origin().by(user.id);
    let details = json!({ "provider": provider, "identity": identity.id });
    audit::record(conn, &origin, "identity.linked", Some(user.id), details).await?;
    let reject = links::sign_in_reject(state, user, link.session_id);
    let display = state
        .social
        .get(provider)
        .map_or_else(|| provider.to_string(), |p| p.settings.display_name());
    let event = Event::IdentityLinked(IdentityLinked {
        user_id: user.id,
        email: user.email.clone(),
        username: user.username.clone(),
        provider: display,
        provider_email: link.account.email.clone(),
        linked_at: Utc::now(),
        ip: origin.client_ip.clone(),
        reject_url: reject.url,
        reject_expires_at: reject.expires_at,
        locale: user.locale.clone(),
    });
    outbox::enqueue(conn, event, &client.request_id).await?;
    Ok(true)
}

/// A new account for a provider account nobody here has: its vouched-for address (verified),
/// a free username from the provider's, names and picture from the claims, no password.
#[allow(clippy::too_many_arguments)]
async fn create_account(
    conn: &mut AsyncPgConnection,
    provider: &Provider,
    email: &EmailAddress,
    account: &ProviderAccount,
    origin: &Origin,
    client: &Client,
    locale: &str,
) -> QueryResult<User> {
    let mut ignored = FieldErrors::new();
    let mut username = account
        .username
        .as_deref()
        .and_then(|u| profile::username(&mut ignored, u))
        .filter(|_| ignored.is_empty());
    if let Some(candidate) = &username
        && users::find_by_username(conn, candidate).await?.is_some()
    {
        username = None;
    }
    let text = |field: &str, value: &Option<String>| {
        let mut errors = FieldErrors::new();
        let value = profile::text(&mut errors, field, value.as_deref().unwrap_or_default());
        if errors.is_empty() {
            value
        } else {
            String::new()
        }
    };
    let first_name = text("first_name", &account.given_name);
    let last_name = text("last_name", &account.family_name);
    let image = account.picture.as_deref().and_then(|p| {
        let mut errors = FieldErrors::new();
        profile::image(&mut errors, p).filter(|_| errors.is_empty())
    });
    let new_user = NewUser {
        id: Uuid::now_v7(),
        email: email.as_str(),
        username: username.as_deref(),
        password_hash: None,
        first_name: &first_name,
        last_name: &last_name,
        phone_number: "",
        address: "",
        terms_accepted_at: None,
        locale,
    };
    let user = users::insert(conn, &new_user).await?;
    let user = users::mark_verified(conn, user.id, &user.email, user.email_epoch)
        .await?
        .ok_or(diesel::result::Error::NotFound)?;
    let user = match image {
        Some(image) => {
            let changes = users::UserChanges {
                image: Some(Some(image)),
                ..Default::default()
            };
            users::update(conn, user.id, &changes).await?
        }
        None => user,
    };
    let identity = identities::link(conn, user.id, provider.name(), &account.subject())
        .await?
        .ok_or_else(|| {
            diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                Box::new("the provider account was linked meanwhile".to_string()),
            )
        })?;
    let event = Event::UserRegistered(UserRegistered {
        user_id: user.id,
        email: user.email.clone(),
        username: user.username.clone(),
        confirmation_url: None,
        confirmation_expires_at: None,
        locale: user.locale.clone(),
    });
    outbox::enqueue(conn, event, &client.request_id).await?;
    // Registration counts as the first device, as a password registration's does: the browser
    // that signed up is not "a new device" when it redeems the code.
    let device = &client.device;
    devices::remember(conn, user.id, &devices::key(&device.user_agent, &device.ip)).await?;
    let origin = origin.clone().by(user.id);
    let details = json!({ "provider": provider.name(), "identity": identity.id });
    audit::record(conn, &origin, "user.registered", Some(user.id), details).await?;
    Ok(user)
}

/// `POST /api/auth/token`: our code and the app's verifier → what a password login answers.
/// The code is spent first, whatever follows. A link flow's code links its provider account
/// here, once the app that asked for the link proves itself with the verifier.
pub async fn redeem(
    state: &AppState,
    code: &str,
    verifier: &str,
    client: &Client,
) -> Result<Outcome, ApiError> {
    let mut conn = state.pool.get().await?;
    let Some(redeemed) = store::spend_code(&mut conn, code).await? else {
        return Err(ApiError::field("code", BAD_SOCIAL_CODE));
    };
    if !store::verifier_matches(verifier, &redeemed.code_challenge) {
        return Err(ApiError::field("code_verifier", BAD_VERIFIER));
    }
    let first = Assurance {
        amr: vec!["oauth".into()],
    };
    let began = db::retrying(async || {
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            let Some(user) = users::lock(conn, redeemed.user_id).await? else {
                return Ok(Err(ApiError::field("code", BAD_SOCIAL_CODE)));
            };
            if !redeemed.still_holds_for(&user) {
                return Ok(Err(ApiError::field("code", BAD_SOCIAL_CODE)));
            }
            if let Some(pending) = &redeemed.link {
                let linking = Linking::of(&user, pending.session_id);
                if let Err(refusal) = may_link(conn, &user, &linking).await? {
                    return Ok(Err(ApiError::field("link", refusal.description)));
                }
                if !link(conn, state, &redeemed.provider, &user, pending, client).await? {
                    return Ok(Err(ApiError::field("link", IDENTITY_TAKEN)));
                }
            }
            let via = json!({ "provider": redeemed.provider });
            let began =
                begin_or_challenge(conn, state, &user, &first, client, via, redeemed.auth_time)
                    .await?;
            Ok(Ok(began))
        })
        .await
    })
    .await?;
    Ok(began?.answer(state))
}

/// `POST /api/user/identities/{provider}`: a one-time ticket (60 s) for the caller, already
/// stepped up, and the absolute authorize URL that carries it.
pub async fn begin_link(
    state: &AppState,
    auth: &Authenticated,
    provider_name: &str,
    app: AppRequest,
) -> Result<Url, ApiError> {
    let provider = provider(state, provider_name)?;
    let mut conn = state.pool.get().await?;
    let ticket = db::retrying(async || {
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            let Some(user) = users::lock(conn, auth.user.id).await? else {
                return Ok(Err(ApiError::bad_token()));
            };
            if !auth.holds(conn, &user).await? {
                return Ok(Err(ApiError::bad_token()));
            }
            if !user.verified {
                return Ok(Err(ApiError::field("email", LINK_UNVERIFIED)));
            }
            let linking = Linking::of(&user, auth.session_id);
            Ok(Ok(store::issue_ticket(
                conn,
                provider.name(),
                linking,
                &app,
            )
            .await?))
        })
        .await
    })
    .await??;
    let mut url = state
        .settings
        .public_link(&format!("api/auth/{}/authorize", provider.name()));
    url.query_pairs_mut().append_pair("link", &ticket);
    Ok(url)
}

/// `DELETE /api/user/identities/{provider}` for the caller, already stepped up: never the last
/// way in. Audited and mailed.
pub async fn unlink(
    state: &AppState,
    auth: &Authenticated,
    provider_name: &str,
    origin: &Origin,
    client: &Client,
) -> Result<(), ApiError> {
    let display = state
        .social
        .get(provider_name)
        .map(|p| p.settings.display_name())
        .unwrap_or_else(|| provider_name.to_string());
    let mut conn = state.pool.get().await?;
    db::retrying(async || {
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            let Some(user) = users::lock(conn, auth.user.id).await? else {
                return Ok(Err(ApiError::bad_token()));
            };
            if !auth.holds(conn, &user).await? {
                return Ok(Err(ApiError::bad_token()));
            }
            let linked = identities::of_user(conn, user.id).await?;
            if !linked.iter().any(|i| i.provider == provider_name) {
                return Ok(Err(ApiError::NotFound));
            }
            let passkeys = crate::signin::mfa::passkeys::count(conn, user.id).await?;
            if user.password_hash.is_none() && linked.len() == 1 && passkeys == 0 {
                return Ok(Err(ApiError::field("provider", LAST_WAY_IN)));
            }
            identities::unlink(conn, user.id, provider_name).await?;
            let origin = origin.clone().by(user.id);
            let details = json!({ "provider": provider_name });
            audit::record(conn, &origin, "identity.unlinked", Some(user.id), details).await?;
            let event = Event::IdentityUnlinked(IdentityUnlinked {
                user_id: user.id,
                email: user.email.clone(),
                username: user.username.clone(),
                provider: display.clone(),
                unlinked_at: Utc::now(),
                ip: origin.client_ip.clone(),
                locale: user.locale.clone(),
            });
            outbox::enqueue(conn, event, &client.request_id).await?;
            Ok(Ok(()))
        })
        .await
    })
    .await?
}
