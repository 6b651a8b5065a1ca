//! What operators do to accounts, shared by the admin API and the CLI: roles, (de)activation,
//! ending sessions, a new confirmation link. Each runs in one transaction that locks the target
//! user's row first, checks under that lock that the operator may act on the target (so a role
//! granted in parallel cannot slip past the check), revokes what it must at once, and writes its
//! audit entry.

pub mod operator;

use std::collections::BTreeSet;

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use events::{Event, MfaDisabled, RoleChanged};
use serde_json::json;
use uuid::Uuid;

use crate::{
    audit::{self, Origin},
    auth::authz::{self, Grants, Permission},
    db,
    http::telemetry::RequestId,
    outbox,
    schema::{roles, user_roles},
    sessions,
    signin::mfa,
    state::AppState,
    users::links::{self, Signer},
    users::{self, User},
};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no such user")]
    NoUser,
    #[error("unknown roles: {}", .0.join(", "))]
    UnknownRoles(Vec<String>),
    /// The target holds a permission the operator lacks (or is a superuser), or a role being
    /// granted carries one.
    #[error("the operator does not hold every permission of the target or of the roles granted")]
    NotPermitted,
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

/// Who acts on an account: what they hold, measured against the target under its row lock, and
/// where they act from, for the audit trail.
pub struct Operator {
    pub grants: Grants,
    pub origin: Origin,
}

impl Operator {
    /// `accounts users ...` on the host. Whoever runs it holds the database's credentials and could
    /// change any row directly, so the CLI is root-equivalent: it acts as a superuser would, on
    /// anyone, and the audit trail names the CLI as the actor.
    pub fn host() -> Self {
        Self {
            grants: Grants::superuser(),
            origin: Origin::cli(),
        }
    }
}

/// What a role change did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RoleChange {
    /// The roles the user holds now, in order.
    pub roles: Vec<String>,
    pub granted: Vec<String>,
    pub revoked: Vec<String>,
}

/// Every role name, for validation and listings.
pub async fn role_names(conn: &mut AsyncPgConnection) -> QueryResult<Vec<String>> {
    roles::table
        .select(roles::name)
        .order(roles::name)
        .load(conn)
        .await
}

impl db::MaybeTransient for AdminError {
    fn is_transient(&self) -> bool {
        matches!(self, AdminError::Database(e) if db::lost_race(e))
    }
}

/// What an action on a user found under the locks: the target, what it holds, and what the
/// operator holds now.
struct Locked {
    user: User,
    held: Grants,
    operator: Grants,
}

/// The target user, its row locked until the transaction ends, and what it holds, read under that
/// lock (every role change takes it first): refused unless `operator` may act on it. An operator
/// who is a user is locked too (both rows in id order) and its grants are read again under that
/// lock, `required` (the action's permission) among them: a role revoked from it in parallel
/// (which takes its row) stops the action, instead of the grants its request was authenticated
/// with acting after the revocation.
async fn lock_target(
    conn: &mut AsyncPgConnection,
    operator: &Operator,
    id: Uuid,
    required: Permission,
) -> Result<Locked, AdminError> {
    let actor = operator.origin.actor.filter(|actor| *actor != id);
    let mut acting = None;
    let mut user = None;
    let mut order = [Some(id), actor];
    order.sort_unstable();
    for row in order.into_iter().flatten() {
        let locked = users::lock(conn, row).await?;
        match row == id {
            true => user = locked,
            false => acting = locked,
        }
    }
    let user = user.ok_or(AdminError::NoUser)?;
    let held = authz::grants(conn, &user).await?;
    let operator = match (actor, acting) {
        (None, _) if operator.origin.actor.is_some() => held.clone(),
        (None, _) => operator.grants.clone(),
        (Some(_), Some(acting)) if acting.active => authz::grants(conn, &acting).await?,
        (Some(_), _) => return Err(AdminError::NotPermitted),
    };
    if !operator.allows(required) || !operator.may_act_on(&held) {
        return Err(AdminError::NotPermitted);
    }
    Ok(Locked {
        user,
        held,
        operator,
    })
}

/// Sets `user_id`'s roles to exactly `wanted`. A revoked role stops every token of the user at
/// once (the access tokens carried it); each change mails the user a `role-changed` notice.
pub async fn set_roles(
    conn: &mut AsyncPgConnection,
    operator: &Operator,
    user_id: Uuid,
    wanted: &[String],
) -> Result<RoleChange, AdminError> {
    let wanted: BTreeSet<String> = wanted.iter().map(|r| r.trim().to_string()).collect();
    edit_roles(conn, operator, user_id, RoleEdit::Exactly(wanted)).await
}

/// Adds or removes one role, keeping the others.
pub async fn grant_or_revoke(
    conn: &mut AsyncPgConnection,
    operator: &Operator,
    user_id: Uuid,
    role: &str,
    grant: bool,
) -> Result<RoleChange, AdminError> {
    let edit = match grant {
        true => RoleEdit::Grant(role.trim().to_string()),
        false => RoleEdit::Revoke(role.trim().to_string()),
    };
    edit_roles(conn, operator, user_id, edit).await
}

/// A change of a user's roles, applied to the roles the user holds under the row lock, so two
/// operators editing one user at once never undo each other's grant.
enum RoleEdit {
    Exactly(BTreeSet<String>),
    Grant(String),
    Revoke(String),
}

async fn edit_roles(
    conn: &mut AsyncPgConnection,
    operator: &Operator,
    user_id: Uuid,
    edit: RoleEdit,
) -> Result<RoleChange, AdminError> {
    let origin = &operator.origin;
    let named: Vec<&String> = match &edit {
        RoleEdit::Exactly(roles) => roles.iter().collect(),
        RoleEdit::Grant(role) => vec![role],
        RoleEdit::Revoke(_) => Vec::new(),
    };
    let known: BTreeSet<String> = role_names(conn).await?.into_iter().collect();
    let unknown: Vec<String> = named
        .into_iter()
        .filter(|r| !known.contains(*r))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(AdminError::UnknownRoles(unknown));
    }
    db::retrying(async || {
        conn.transaction::<_, AdminError, _>(async |conn| {
            let Locked {
                user,
                held,
                operator: holds,
            } = lock_target(conn, operator, user_id, Permission::RolesManage).await?;
            let current: BTreeSet<String> = held.roles.into_iter().collect();
            let wanted = match &edit {
                RoleEdit::Exactly(roles) => roles.clone(),
                RoleEdit::Grant(role) => current.iter().chain([role]).cloned().collect(),
                RoleEdit::Revoke(role) => current.iter().filter(|r| *r != role).cloned().collect(),
            };
            let change = RoleChange {
                roles: wanted.iter().cloned().collect(),
                granted: wanted.difference(&current).cloned().collect(),
                revoked: current.difference(&wanted).cloned().collect(),
            };
            // Nobody grants a permission they do not hold.
            let granting = authz::permissions_of(conn, &change.granted).await?;
            if !holds.holds_all(&granting) {
                return Err(AdminError::NotPermitted);
            }
            for role in &change.granted {
                diesel::insert_into(user_roles::table)
                    .values((user_roles::user_id.eq(user.id), user_roles::role.eq(role)))
                    .execute(conn)
                    .await?;
            }
            if !change.revoked.is_empty() {
                diesel::delete(
                    user_roles::table
                        .filter(user_roles::user_id.eq(user.id))
                        .filter(user_roles::role.eq_any(&change.revoked)),
                )
                .execute(conn)
                .await?;
                sessions::end_all(conn, user.id).await?;
            }
            let request_id = RequestId(origin.request_id.clone());
            let changes = change
                .granted
                .iter()
                .map(|r| (r, true))
                .chain(change.revoked.iter().map(|r| (r, false)));
            for (role, granted) in changes {
                let action = if granted {
                    "role.granted"
                } else {
                    "role.revoked"
                };
                audit::record(conn, origin, action, Some(user.id), json!({ "role": role })).await?;
                let event = Event::RoleChanged(RoleChanged {
                    user_id: user.id,
                    email: user.email.clone(),
                    username: user.username.clone(),
                    role: role.clone(),
                    granted,
                    changed_at: Utc::now(),
                    locale: user.locale.clone(),
                });
                outbox::enqueue(conn, event, &request_id).await?;
            }
            Ok(change)
        })
        .await
    })
    .await
}

/// (De)activates the user; deactivation ends every session and access token at once.
pub async fn set_active(
    conn: &mut AsyncPgConnection,
    operator: &Operator,
    user_id: Uuid,
    active: bool,
) -> Result<(), AdminError> {
    let origin = &operator.origin;
    db::retrying(async || {
        conn.transaction::<_, AdminError, _>(async |conn| {
            let Locked { user, .. } =
                lock_target(conn, operator, user_id, Permission::UsersDeactivate).await?;
            users::set_active(conn, user.id, active).await?;
            if !active {
                sessions::end_all(conn, user.id).await?;
            }
            let action = if active {
                "user.activated"
            } else {
                "user.deactivated"
            };
            audit::record(conn, origin, action, Some(user.id), json!({})).await?;
            Ok(())
        })
        .await
    })
    .await
}

/// Ends every session of the user; returns how many were live.
pub async fn end_sessions(
    conn: &mut AsyncPgConnection,
    operator: &Operator,
    user_id: Uuid,
) -> Result<usize, AdminError> {
    let origin = &operator.origin;
    db::retrying(async || {
        conn.transaction::<_, AdminError, _>(async |conn| {
            let Locked { user, .. } =
                lock_target(conn, operator, user_id, Permission::SessionsRevoke).await?;
            Ok(sessions::end_and_audit(conn, user.id, &sessions::Ending::All, origin).await?)
        })
        .await
    })
    .await
}

/// Mails the user a new confirmation link for their current address.
pub async fn send_confirmation(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    operator: &Operator,
    user_id: Uuid,
) -> Result<(), AdminError> {
    let origin = &operator.origin;
    db::retrying(async || {
        conn.transaction::<_, AdminError, _>(async |conn| {
            let Locked { user, .. } =
                lock_target(conn, operator, user_id, Permission::UsersWrite).await?;
            let request_id = RequestId(origin.request_id.clone());
            links::mail_confirmation(conn, state, &user, &request_id).await?;
            audit::record(conn, origin, "confirmation.sent", Some(user.id), json!({})).await?;
            Ok(())
        })
        .await
    })
    .await
}

/// An account recovery by an operator, for a user who lost every second factor and every
/// recovery code: the second factors go, every session ends, the password stops working (so a
/// phone call to support cannot hand the account over: only the mailbox can), and the user gets
/// one `mfa-disabled` mail carrying a reset link bound to the new email epoch.
pub async fn reset_mfa(
    conn: &mut AsyncPgConnection,
    signer: &impl Signer,
    operator: &Operator,
    user_id: Uuid,
) -> Result<(), AdminError> {
    let origin = &operator.origin;
    db::retrying(async || {
        conn.transaction::<_, AdminError, _>(async |conn| {
            let Locked { user, .. } =
                lock_target(conn, operator, user_id, Permission::UsersWrite).await?;
            // Its own factors an operator removes itself, with step-up: a stolen admin token
            // must not strip its owner's second factor.
            if operator.origin.actor == Some(user.id) {
                return Err(AdminError::NotPermitted);
            }
            let had_second_factor = mfa::remove_all(conn, user.id).await?;
            let user = users::remove_password(conn, user.id).await?;
            sessions::end_all(conn, user.id).await?;
            let reset = links::password_reset(signer, &user);
            let event = Event::MfaDisabled(MfaDisabled {
                user_id: user.id,
                email: user.email.clone(),
                username: user.username.clone(),
                disabled_at: Utc::now(),
                by_operator: true,
                reset_url: Some(reset.url),
                reset_expires_at: Some(reset.expires_at),
                locale: user.locale.clone(),
            });
            let request_id = RequestId(origin.request_id.clone());
            outbox::enqueue(conn, event, &request_id).await?;
            let details = json!({ "had_second_factor": had_second_factor });
            audit::record(conn, origin, "mfa.reset", Some(user.id), details).await?;
            Ok(())
        })
        .await
    })
    .await
}
