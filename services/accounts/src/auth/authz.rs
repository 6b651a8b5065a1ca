//! Authorization: roles carry named permissions, superusers hold them all. The admin API checks
//! the database on every request ([`Authorized`]); access tokens carry `roles` and `permissions`
//! for services that verify them offline through JWKS.

use std::{collections::BTreeSet, future::Future, marker::PhantomData, pin::Pin};

use actix_web::{FromRequest, HttpRequest, dev::Payload};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::{
    auth::Authenticated,
    http::error::ApiError,
    schema::{role_permissions, user_roles},
    users::User,
};

/// Every permission there is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    UsersRead,
    UsersWrite,
    UsersDeactivate,
    SessionsRevoke,
    RolesManage,
    AuditRead,
    MailRead,
    MailRetry,
}

impl Permission {
    pub const ALL: [Permission; 8] = [
        Permission::UsersRead,
        Permission::UsersWrite,
        Permission::UsersDeactivate,
        Permission::SessionsRevoke,
        Permission::RolesManage,
        Permission::AuditRead,
        Permission::MailRead,
        Permission::MailRetry,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::UsersRead => "users.read",
            Permission::UsersWrite => "users.write",
            Permission::UsersDeactivate => "users.deactivate",
            Permission::SessionsRevoke => "sessions.revoke",
            Permission::RolesManage => "roles.manage",
            Permission::AuditRead => "audit.read",
            Permission::MailRead => "mail.read",
            Permission::MailRetry => "mail.retry",
        }
    }
}

/// What a user may do: their roles and the permissions those grant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub roles: Vec<String>,
    pub permissions: BTreeSet<String>,
    /// A superuser holds every permission, and only a superuser acts on one.
    pub superuser: bool,
}

impl Grants {
    /// What a superuser holds.
    pub fn superuser() -> Self {
        Self {
            roles: Vec::new(),
            permissions: Permission::ALL
                .iter()
                .map(|p| p.as_str().to_string())
                .collect(),
            superuser: true,
        }
    }

    pub fn allows(&self, permission: Permission) -> bool {
        self.permissions.contains(permission.as_str())
    }

    /// Whether the holder may act on a user holding `target` (DESIGN, Security rules,
    /// "Operators"): only a superuser acts on a superuser, and otherwise only on users whose
    /// permissions are a subset of the holder's. So an `admin` (every permission) acts on another
    /// admin, and a `support` agent on customers and other agents, never on an admin.
    pub fn may_act_on(&self, target: &Grants) -> bool {
        (self.superuser || !target.superuser) && self.holds_all(&target.permissions)
    }

    /// Whether the holder holds every one of `permissions`; nobody grants a permission they lack.
    pub fn holds_all(&self, permissions: &BTreeSet<String>) -> bool {
        permissions.is_subset(&self.permissions)
    }
}

/// `user`'s grants as the database has them now.
pub async fn grants(conn: &mut AsyncPgConnection, user: &User) -> QueryResult<Grants> {
    let rows: Vec<(String, Option<String>)> = user_roles::table
        .left_join(role_permissions::table.on(role_permissions::role.eq(user_roles::role)))
        .filter(user_roles::user_id.eq(user.id))
        .select((user_roles::role, role_permissions::permission.nullable()))
        .order(user_roles::role)
        .load(conn)
        .await?;
    let mut grants = Grants::default();
    for (role, permission) in rows {
        if grants.roles.last() != Some(&role) {
            grants.roles.push(role);
        }
        grants.permissions.extend(permission);
    }
    if user.is_superuser {
        grants.permissions = Grants::superuser().permissions;
        grants.superuser = true;
    }
    Ok(grants)
}

/// The permissions that `roles` carry together.
pub async fn permissions_of(
    conn: &mut AsyncPgConnection,
    roles: &[String],
) -> QueryResult<BTreeSet<String>> {
    let permissions: Vec<String> = role_permissions::table
        .filter(role_permissions::role.eq_any(roles))
        .select(role_permissions::permission)
        .distinct()
        .load(conn)
        .await?;
    Ok(permissions.into_iter().collect())
}

/// The roles of many users at once, for listings.
pub async fn roles_of(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> QueryResult<Vec<(Uuid, String)>> {
    user_roles::table
        .filter(user_roles::user_id.eq_any(ids))
        .select((user_roles::user_id, user_roles::role))
        .order((user_roles::user_id, user_roles::role))
        .load(conn)
        .await
}

/// A permission a route requires, as a type, so the extractor names it: `Authorized<UsersRead>`.
pub trait Required {
    const PERMISSION: Permission;
}

macro_rules! required {
    ($($name:ident),*) => {$(
        #[doc = concat!("Requires `", stringify!($name), "`.")]
        pub struct $name;
        impl Required for $name {
            const PERMISSION: Permission = Permission::$name;
        }
    )*};
}

required!(
    UsersRead,
    UsersWrite,
    UsersDeactivate,
    SessionsRevoke,
    RolesManage,
    AuditRead
);

/// A signed-in caller who holds `P`, checked against the database (not the token's claims), so a
/// revoked role loses the admin API at once. 401 without a valid token, 403 without the permission.
pub struct Authorized<P: Required> {
    pub caller: Authenticated,
    /// Everything the caller holds, as read for this request: what an action on another user is
    /// measured against.
    pub grants: Grants,
    required: PhantomData<P>,
}

impl<P: Required + 'static> FromRequest for Authorized<P> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let state = req
            .app_data::<actix_web::web::Data<crate::state::AppState>>()
            .cloned();
        let authenticated = Authenticated::from_request(req, payload);
        Box::pin(async move {
            let caller = authenticated.await?;
            let state = state.ok_or_else(|| ApiError::Unexpected(anyhow::anyhow!("no state")))?;
            let mut conn = state.pool.get().await?;
            let grants = grants(&mut conn, &caller.user).await?;
            if !grants.allows(P::PERMISSION) {
                return Err(ApiError::NoPermission);
            }
            Ok(Self {
                caller,
                grants,
                required: PhantomData,
            })
        })
    }
}
