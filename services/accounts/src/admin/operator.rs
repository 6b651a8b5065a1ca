//! The operator's command line: the first superuser, and `users list|show|grant|revoke|deactivate|
//! activate`. Actions go through the same workflows as the admin API ([`crate::admin`]), so they
//! revoke what they must and leave an audit entry (actor: the CLI). The CLI is root-equivalent
//! ([`admin::Operator::host`]): whoever runs it holds the database's credentials, so the operator
//! hierarchy, which binds the admin API's callers, has nothing to hold it to.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, anyhow, bail};
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use uuid::Uuid;

use crate::{
    admin,
    audit::{self, Origin},
    auth::authz,
    domain::{self, EmailAddress, FieldErrors, profile},
    schema::users,
    sessions,
    users::email_changes,
    users::links::OfflineSigner,
    users::{self as accounts, NewUser, User},
};

/// Reads the new password twice: from the terminal without echo, or as two lines of standard
/// input when it is not a terminal (a script, a secret manager). Never from argv.
fn read_new_password() -> anyhow::Result<(SecretString, SecretString)> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Password (again): ")?;
        return Ok((first.into(), second.into()));
    }
    let mut lines = std::io::stdin().lock().lines();
    let mut next = || -> anyhow::Result<SecretString> {
        let line = lines
            .next()
            .ok_or_else(|| anyhow!("standard input ended: give the password on two lines"))??;
        Ok(line.trim_end_matches(['\r', '\n']).to_string().into())
    };
    Ok((next()?, next()?))
}

fn problems(errors: &FieldErrors) -> String {
    errors
        .iter()
        .map(|(field, messages)| format!("{field}: {}", messages.join(" ")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `accounts create-superuser --email E [--username U]`.
pub async fn create_superuser(
    conn: &mut AsyncPgConnection,
    email: &str,
    username: Option<&str>,
    bcrypt_cost: u32,
) -> anyhow::Result<()> {
    let email = EmailAddress::parse(email).map_err(|m| anyhow!("--email: {m}"))?;
    let mut errors = FieldErrors::new();
    let username = username.and_then(|u| profile::username(&mut errors, u));
    if !errors.is_empty() {
        bail!("{}", problems(&errors));
    }
    if accounts::find_by_email(conn, email.as_str())
        .await?
        .is_some()
    {
        bail!(
            "{} already has an account; grant it a role with `accounts users grant {} admin`",
            email.as_str(),
            email.as_str()
        );
    }
    if email_changes::reserved_for_another(conn, email.as_str(), None).await? {
        bail!(
            "{} is reserved: an account changed away from it and its owner's revert link can still restore it; use another address, or wait until that link expires",
            email.as_str()
        );
    }
    let (password, again) = read_new_password()?;
    let checked = domain::new_password(
        &mut errors,
        password.expose_secret(),
        Some(again.expose_secret()),
        Some(email.as_str()),
        username.as_deref(),
    );
    let Some(password) = checked else {
        bail!("the password was refused:\n{}", problems(&errors));
    };
    let hash = bcrypt::non_truncating_hash(password.secret().expose_secret(), bcrypt_cost)
        .context("hashing the password")?;
    let new = NewUser {
        id: Uuid::now_v7(),
        email: email.as_str(),
        username: username.as_deref(),
        password_hash: Some(&hash),
        first_name: "",
        last_name: "",
        phone_number: "",
        address: "",
        terms_accepted_at: None,
        locale: "en",
    };
    let created = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            let user = accounts::insert(conn, &new).await?;
            diesel::update(users::table.find(user.id))
                .set((users::is_superuser.eq(true), users::verified.eq(true)))
                .execute(conn)
                .await?;
            audit::record(
                conn,
                &Origin::cli(),
                "superuser.created",
                Some(user.id),
                json!({}),
            )
            .await?;
            Ok(user)
        })
        .await?;
    println!(
        "Superuser {} created (id {}). Sign in with POST /api/users/login.",
        created.email, created.id
    );
    Ok(())
}

async fn user_by_email(conn: &mut AsyncPgConnection, email: &str) -> anyhow::Result<User> {
    let address = EmailAddress::parse(email).map_err(|m| anyhow!("{email}: {m}"))?;
    accounts::find_by_email(conn, address.as_str())
        .await?
        .ok_or_else(|| anyhow!("no account uses {}", address.as_str()))
}

fn admin_error(e: admin::AdminError) -> anyhow::Error {
    match e {
        admin::AdminError::UnknownRoles(names) => anyhow!(
            "unknown role {}; roles are listed by `accounts users show`",
            names.join(", ")
        ),
        other => anyhow!(other),
    }
}

/// `accounts users list [--search S] [--limit N]`: one line per user.
pub async fn list(
    conn: &mut AsyncPgConnection,
    search: Option<&str>,
    limit: i64,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut query = users::table
        .select(User::as_select())
        .order(users::id)
        .limit(limit)
        .into_boxed();
    if let Some(search) = search {
        let pattern = accounts::contains_pattern(search);
        query = query.filter(
            users::email
                .ilike(pattern.clone())
                .or(users::username.ilike(pattern)),
        );
    }
    let found: Vec<User> = query.load(conn).await?;
    let ids: Vec<Uuid> = found.iter().map(|u| u.id).collect();
    let roles = authz::roles_of(conn, &ids).await?;
    writeln!(
        out,
        "{:<36}  {:<40}  {:<8}  {:<8}  roles",
        "id", "email", "active", "verified"
    )?;
    for user in found {
        let mut mine: Vec<&str> = roles
            .iter()
            .filter(|(id, _)| *id == user.id)
            .map(|(_, r)| r.as_str())
            .collect();
        if user.is_superuser {
            mine.insert(0, "(superuser)");
        }
        writeln!(
            out,
            "{:<36}  {:<40}  {:<8}  {:<8}  {}",
            user.id,
            user.email,
            user.active,
            user.verified,
            mine.join(",")
        )?;
    }
    Ok(())
}

/// `accounts users show EMAIL`.
pub async fn show(conn: &mut AsyncPgConnection, email: &str) -> anyhow::Result<()> {
    let user = user_by_email(conn, email).await?;
    let grants = authz::grants(conn, &user).await?;
    let live = sessions::live(conn, user.id).await?;
    println!("id:          {}", user.id);
    println!("email:       {}", user.email);
    println!("username:    {}", user.username.as_deref().unwrap_or("-"));
    println!("active:      {}", user.active);
    println!("verified:    {}", user.verified);
    println!("superuser:   {}", user.is_superuser);
    println!("roles:       {}", grants.roles.join(", "));
    let permissions: Vec<&str> = grants.permissions.iter().map(String::as_str).collect();
    println!("permissions: {}", permissions.join(", "));
    println!("created:     {}", user.created_at);
    println!("sessions:    {}", live.len());
    for session in live {
        println!(
            "  {}  since {}  last used {}  {}  {}",
            session.id, session.created_at, session.last_used_at, session.ip, session.user_agent
        );
    }
    println!("all roles:   {}", admin::role_names(conn).await?.join(", "));
    Ok(())
}

/// `accounts users grant|revoke EMAIL ROLE`.
pub async fn grant_or_revoke(
    conn: &mut AsyncPgConnection,
    email: &str,
    role: &str,
    grant: bool,
) -> anyhow::Result<()> {
    let user = user_by_email(conn, email).await?;
    let change = admin::grant_or_revoke(conn, &admin::Operator::host(), user.id, role, grant)
        .await
        .map_err(admin_error)?;
    match (
        grant,
        change.granted.is_empty() && change.revoked.is_empty(),
    ) {
        (true, true) => println!("{} already has {role}", user.email),
        (false, true) => println!("{} does not have {role}", user.email),
        (true, false) => println!("granted {role} to {}", user.email),
        (false, false) => println!(
            "revoked {role} from {}; their sessions ended at once",
            user.email
        ),
    }
    Ok(())
}

/// `accounts users reset-mfa EMAIL`.
pub async fn reset_mfa(
    conn: &mut AsyncPgConnection,
    signer: &OfflineSigner,
    email: &str,
) -> anyhow::Result<()> {
    let user = user_by_email(conn, email).await?;
    admin::reset_mfa(conn, signer, &admin::Operator::host(), user.id)
        .await
        .map_err(admin_error)?;
    println!(
        "{}: second factors removed, every session ended, password unusable; a reset link is on its way to that address",
        user.email
    );
    Ok(())
}

/// `accounts users deactivate|activate EMAIL`.
pub async fn set_active(
    conn: &mut AsyncPgConnection,
    email: &str,
    active: bool,
) -> anyhow::Result<()> {
    let user = user_by_email(conn, email).await?;
    admin::set_active(conn, &admin::Operator::host(), user.id, active)
        .await
        .map_err(admin_error)?;
    let now = Utc::now().format("%Y-%m-%d %H:%M UTC");
    match active {
        true => println!("{} is active again ({now})", user.email),
        false => println!("{} is deactivated; every session ended ({now})", user.email),
    }
    Ok(())
}
