//! The admin API, its permissions, the audit trail and the operator CLI.

use std::{
    collections::{BTreeSet, HashMap},
    io::Write,
    process::{Command, Stdio},
};

use diesel_async::RunQueryDsl;
use futures_util::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    PASSWORD, TestApp, claims_of, errors, spawn_app, sql, token_pair, unique_email,
};

const NO_PERMISSION: &str = "You do not have permission to perform this action.";

/// Gives `user` the role `role`, created with `permissions` when missing.
pub(crate) async fn grant_role(app: &TestApp, user: &str, role: &str, permissions: &[&str]) {
    sql(
        app,
        &format!("INSERT INTO roles (name) VALUES ('{role}') ON CONFLICT DO NOTHING"),
    )
    .await;
    for permission in permissions {
        sql(
            app,
            &format!(
                "INSERT INTO role_permissions VALUES ('{role}', '{permission}') ON CONFLICT DO NOTHING"
            ),
        )
        .await;
    }
    sql(
        app,
        &format!("INSERT INTO user_roles (user_id, role) VALUES ('{user}', '{role}')"),
    )
    .await;
}

/// A fresh user holding exactly `roles` (created when missing, with `permissions`): id and tokens.
pub(crate) async fn user_with_role(
    app: &TestApp,
    role: Option<(&str, &[&str])>,
) -> (String, String, String) {
    let (email, body) = app.register_user().await;
    let id = body["user"]["id"].as_str().unwrap().to_string();
    if let Some((role, permissions)) = role {
        grant_role(app, &id, role, permissions).await;
    }
    let (access, refresh) = app.login_as(&email, "admin-test").await;
    (id, access, refresh)
}

pub(crate) async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.client.request(
        Method::from_bytes(method.as_bytes()).unwrap(),
        app.url(path),
    );
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn audit_actions(app: &TestApp, admin: &str, target: &str) -> Vec<String> {
    let response = call(
        app,
        "GET",
        &format!("/api/admin/audit?target={target}"),
        Some(admin),
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn every_admin_route_needs_a_token_and_its_permission_and_audits_what_it_does() {
    let app = spawn_app().await;
    let (target, _, _) = user_with_role(&app, None).await;
    let (_, plain, _) = user_with_role(&app, None).await;
    let (_, auditor, _) = user_with_role(&app, Some(("auditor", &["audit.read"]))).await;
    // (method, path, permission, body, the audit action it writes)
    type Route<'a> = (&'a str, String, &'a str, Option<Value>, Option<&'a str>);
    let routes: [Route; 8] = [
        ("GET", "/api/admin/users".into(), "users.read", None, None),
        (
            "GET",
            format!("/api/admin/users/{target}"),
            "users.read",
            None,
            None,
        ),
        (
            "POST",
            format!("/api/admin/users/{target}/deactivate"),
            "users.deactivate",
            None,
            Some("user.deactivated"),
        ),
        (
            "POST",
            format!("/api/admin/users/{target}/activate"),
            "users.deactivate",
            None,
            Some("user.activated"),
        ),
        (
            "DELETE",
            format!("/api/admin/users/{target}/sessions"),
            "sessions.revoke",
            None,
            Some("sessions.ended"),
        ),
        (
            "POST",
            format!("/api/admin/users/{target}/confirmation"),
            "users.write",
            None,
            Some("confirmation.sent"),
        ),
        (
            "PUT",
            format!("/api/admin/users/{target}/roles"),
            "roles.manage",
            // The one role whose permissions the actor holds: its own (see operators.rs).
            // Last: from now on the target holds roles.manage, which the other actors lack.
            Some(json!({ "roles": ["only-roles-manage"] })),
            Some("role.granted"),
        ),
        ("GET", "/api/admin/audit".into(), "audit.read", None, None),
    ];
    for (method, path, permission, body, action) in routes {
        let anonymous = call(&app, method, &path, None, body.clone()).await;
        assert_eq!(
            anonymous.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
        let refused = call(&app, method, &path, Some(&plain), body.clone()).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(errors(refused).await["permission"][0], NO_PERMISSION);

        let role = format!("only-{}", permission.replace('.', "-"));
        let (actor, allowed, _) = user_with_role(&app, Some((&role, &[permission]))).await;
        let done = call(&app, method, &path, Some(&allowed), body).await;
        assert!(
            done.status().is_success(),
            "{method} {path}: {}",
            done.status()
        );
        if let Some(action) = action {
            let response = call(
                &app,
                "GET",
                &format!("/api/admin/audit?actor={actor}&action={action}"),
                Some(&auditor),
                None,
            )
            .await;
            let trail: Value = response.json().await.unwrap();
            let entry = &trail["entries"][0];
            assert_eq!(entry["target_id"], target.as_str(), "{method} {path}");
            assert_eq!(entry["client_ip"], "127.0.0.1");
            assert!(!entry["request_id"].as_str().unwrap().is_empty());
        }
    }
}

#[tokio::test]
async fn revoking_a_role_stops_access_and_refresh_tokens_at_once() {
    let app = spawn_app().await;
    let (_, admin, _) = user_with_role(&app, Some(("admin", &[]))).await;
    let (id, _, _) = user_with_role(&app, None).await;
    let granted = call(
        &app,
        "PUT",
        &format!("/api/admin/users/{id}/roles"),
        Some(&admin),
        Some(json!({ "roles": ["support"] })),
    )
    .await;
    assert_eq!(granted.status(), StatusCode::OK);
    // A grant shows in the next token.
    let email = app.outbox_events("role-changed").await[0]["email"]
        .as_str()
        .unwrap()
        .to_string();
    let (access, refresh) = app.login_as(&email, "support-desk").await;
    let claims = claims_of(&access);
    assert_eq!(claims["roles"], json!(["support"]));
    assert_eq!(
        claims["permissions"],
        json!(["mail.read", "mail.retry", "sessions.revoke", "users.read"])
    );
    assert_eq!(
        call(&app, "GET", "/api/admin/users", Some(&access), None)
            .await
            .status(),
        StatusCode::OK
    );

    let revoked = call(
        &app,
        "PUT",
        &format!("/api/admin/users/{id}/roles"),
        Some(&admin),
        Some(json!({ "roles": [] })),
    )
    .await;
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(
        app.current_user(&access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let notices = app.outbox_events("role-changed").await;
    assert_eq!(notices.len(), 2);
    assert_eq!(notices[1]["granted"], false);

    let (again, _) = app.login_as(&email, "support-desk").await;
    assert!(
        claims_of(&again).get("roles").is_none(),
        "omitted when empty"
    );
    assert_eq!(
        call(&app, "GET", "/api/admin/users", Some(&again), None)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    let unknown = call(
        &app,
        "PUT",
        &format!("/api/admin/users/{id}/roles"),
        Some(&admin),
        Some(json!({ "roles": ["root"] })),
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    let nobody = call(
        &app,
        "PUT",
        &format!("/api/admin/users/{}/roles", uuid::Uuid::now_v7()),
        Some(&admin),
        Some(json!({ "roles": [] })),
    )
    .await;
    assert_eq!(nobody.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deactivation_and_ending_sessions_through_the_admin_api_act_at_once() {
    let app = spawn_app().await;
    let (_, admin, _) = user_with_role(&app, Some(("admin", &[]))).await;
    let (id, access, refresh) = user_with_role(&app, None).await;
    let ended = call(
        &app,
        "DELETE",
        &format!("/api/admin/users/{id}/sessions"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.current_user(&access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let detail: Value = call(
        &app,
        "GET",
        &format!("/api/admin/users/{id}"),
        Some(&admin),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let email = detail["user"]["email"].as_str().unwrap().to_string();
    let (access, refresh) = app.login_as(&email, "again").await;
    let off = call(
        &app,
        "POST",
        &format!("/api/admin/users/{id}/deactivate"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(off.status(), StatusCode::NO_CONTENT);
    assert_ne!(app.current_user(&access).await.status(), StatusCode::OK);
    assert_ne!(app.refresh(&refresh).await.status(), StatusCode::OK);
    // The wrong-password answer, whatever the password (see deactivated.rs).
    assert_eq!(
        app.login(&email, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let on = call(
        &app,
        "POST",
        &format!("/api/admin/users/{id}/activate"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(on.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
    let actions = audit_actions(&app, &admin, &id).await;
    for action in [
        "sessions.ended",
        "user.deactivated",
        "user.activated",
        "login.succeeded",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
}

#[tokio::test]
async fn paging_returns_every_user_exactly_once_while_others_register() {
    let app = spawn_app().await;
    let (_, admin, _) = user_with_role(&app, Some(("admin", &[]))).await;
    for _ in 0..25 {
        app.register_user().await;
    }
    let before: BTreeSet<String> = {
        let all: Value = call(
            &app,
            "GET",
            "/api/admin/users?limit=200",
            Some(&admin),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
        all["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_string())
            .collect()
    };
    let pages = async {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut cursor = String::new();
        loop {
            let path = format!("/api/admin/users?limit=4{cursor}");
            let page: Value = call(&app, "GET", &path, Some(&admin), None)
                .await
                .json()
                .await
                .unwrap();
            for user in page["users"].as_array().unwrap() {
                *seen
                    .entry(user["id"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => return seen,
            }
        }
    };
    // Waves small enough for the bcrypt budget (a full queue answers 429).
    let registrations = async {
        for _ in 0..3 {
            join_all((0..4).map(|_| app.register_user())).await;
        }
    };
    let (seen, _) = futures_util::join!(pages, registrations);
    assert!(
        seen.values().all(|n| *n == 1),
        "a user came twice: {seen:?}"
    );
    for id in &before {
        assert!(seen.contains_key(id), "{id} was skipped");
    }
}

#[tokio::test]
async fn search_and_filters_find_the_right_users() {
    let app = spawn_app().await;
    let (_, admin, _) = user_with_role(&app, Some(("admin", &[]))).await;
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let email = format!("Needle.{tag}@Example.com");
    let registered = app
        .register(&crate::helpers::registration(&email, PASSWORD))
        .await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    let search = |query: String| {
        let admin = admin.clone();
        let app = &app;
        async move {
            let response = call(
                app,
                "GET",
                &format!("/api/admin/users?{query}"),
                Some(&admin),
                None,
            )
            .await;
            assert_eq!(response.status(), StatusCode::OK, "{query}");
            let body: Value = response.json().await.unwrap();
            body["users"].as_array().unwrap().len()
        }
    };
    assert_eq!(search(format!("search=NEEDLE.{tag}")).await, 1);
    assert_eq!(
        search(format!("search=needle.{tag}&verified=false")).await,
        1
    );
    assert_eq!(
        search(format!("search=needle.{tag}&verified=true")).await,
        0
    );
    assert_eq!(search(format!("search=needle.{tag}&role=admin")).await, 0);
    assert_eq!(
        search("search=%25&limit=200".into()).await,
        0,
        "LIKE wildcards are literal"
    );
    assert_eq!(search("role=admin".into()).await, 1);
    for bad in [
        "verified=maybe",
        "limit=0",
        "limit=100000",
        "cursor=nope",
        "active=2",
    ] {
        let response = call(
            &app,
            "GET",
            &format!("/api/admin/users?{bad}"),
            Some(&admin),
            None,
        )
        .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn security_events_reach_the_audit_trail() {
    let app = spawn_app().await;
    let (_, admin, _) = user_with_role(&app, Some(("admin", &[]))).await;
    let (email, body) = app.register_user().await;
    let id = body["user"]["id"].as_str().unwrap().to_string();
    let (access, _) = token_pair(&body);
    assert_eq!(
        app.login(&email, "wrong-password-1").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let changed = app
        .update_user(
            &access,
            json!({ "password": "another-pass-99", "current_password": PASSWORD }),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    let actions = audit_actions(&app, &admin, &id).await;
    for action in ["login.failed", "password.changed"] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
    let paged: Value = call(&app, "GET", "/api/admin/audit?limit=1", Some(&admin), None)
        .await
        .json()
        .await
        .unwrap();
    let cursor = paged["next_cursor"].as_i64().expect("more than one entry");
    let next: Value = call(
        &app,
        "GET",
        &format!("/api/admin/audit?limit=1&cursor={cursor}"),
        Some(&admin),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(next["entries"][0]["id"].as_i64().unwrap() < cursor);
}

/// Runs `accounts <args>` against the test database with `stdin` as standard input.
pub fn accounts_cli(app: &TestApp, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_accounts"))
        .args(args)
        .env("ACCOUNTS_DATABASE_URL", app.db.url())
        .env("ACCOUNTS_BCRYPT_COST", "4")
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the accounts binary");
    // The password is typed, never an argument: it is not in the process's command line.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("Str0ng-enough-pass"),
        "the password is in /proc/<pid>/cmdline"
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn create_superuser_reads_stdin_applies_the_password_rules_and_users_commands_work() {
    let app = spawn_app().await;
    let email = unique_email();
    let weak = accounts_cli(
        &app,
        &["create-superuser", "--email", &email],
        "password\npassword\n",
    );
    assert!(!weak.status.success());
    assert!(
        String::from_utf8_lossy(&weak.stderr).contains("too common"),
        "{weak:?}"
    );
    let mismatch = accounts_cli(
        &app,
        &["create-superuser", "--email", &email],
        "Str0ng-enough-pass\nother\n",
    );
    assert!(!mismatch.status.success());

    let created = accounts_cli(
        &app,
        &["create-superuser", "--email", &email],
        "Str0ng-enough-pass\nStr0ng-enough-pass\n",
    );
    assert!(created.status.success(), "{created:?}");
    let login = app.login(&email, "Str0ng-enough-pass").await;
    assert_eq!(login.status(), StatusCode::OK);
    let (admin, _) = token_pair(&login.json().await.unwrap());
    assert_eq!(
        call(&app, "GET", "/api/admin/audit", Some(&admin), None)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        claims_of(&admin)["permissions"].as_array().unwrap().len(),
        8
    );

    let (other, _) = app.register_user().await;
    let grant = accounts_cli(&app, &["users", "grant", &other, "support"], "");
    assert!(grant.status.success(), "{grant:?}");
    let listed = accounts_cli(&app, &["users", "list", "--search", &other], "");
    assert!(String::from_utf8_lossy(&listed.stdout).contains("support"));
    let unknown = accounts_cli(&app, &["users", "grant", &other, "root"], "");
    assert!(!unknown.status.success());
    let off = accounts_cli(&app, &["users", "deactivate", &other], "");
    assert!(off.status.success());
    assert_eq!(
        app.login(&other, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let old = accounts_cli(&app, &["activate", &other], "");
    assert!(old.status.success());
    assert!(String::from_utf8_lossy(&old.stderr).contains("deprecated"));
    assert_eq!(app.login(&other, PASSWORD).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn two_operators_granting_different_roles_at_once_both_stick() {
    let app = spawn_app().await;
    let spawn = |email: &str, role: &str| {
        Command::new(env!("CARGO_BIN_EXE_accounts"))
            .args(["users", "grant", email, role])
            .env("ACCOUNTS_DATABASE_URL", app.db.url())
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the accounts binary")
    };
    for _ in 0..6 {
        let (email, _) = app.register_user().await;
        let (mut a, mut b) = (spawn(&email, "admin"), spawn(&email, "support"));
        assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
        let shown = accounts_cli(&app, &["users", "show", &email], "");
        let roles = String::from_utf8_lossy(&shown.stdout)
            .lines()
            .find(|l| l.starts_with("roles:"))
            .unwrap_or_default()
            .to_string();
        assert!(
            roles.contains("admin") && roles.contains("support"),
            "{roles}"
        );
    }
}

#[tokio::test]
async fn set_roles_answers_the_roles_as_stored() {
    let app = spawn_app().await;
    let (_, admin, _) = user_with_role(&app, Some(("admin", &[]))).await;
    let (target, _, _) = user_with_role(&app, None).await;
    sql(
        &app,
        "INSERT INTO roles (name) VALUES ('support') ON CONFLICT DO NOTHING",
    )
    .await;
    let response = call(
        &app,
        "PUT",
        &format!("/api/admin/users/{target}/roles"),
        Some(&admin),
        Some(json!({ "roles": [" support", "support ", "support"] })),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["roles"], json!(["support"]), "{body}");
    let stored = testkit::count(
        &mut app.conn().await,
        &format!(
            "SELECT count(*) AS n FROM user_roles WHERE user_id = '{target}' AND role = 'support'"
        ),
    )
    .await
    .unwrap();
    assert_eq!(stored, 1);
}

/// A year's backlog goes in batches, each well within the pool's statement timeout: one DELETE of
/// millions of rows would be cancelled by it every hour and never catch up.
#[tokio::test]
async fn audit_retention_prunes_a_backlog_in_batches_and_keeps_what_is_recent() {
    let app = spawn_app().await;
    let mut conn = app.conn().await;
    diesel::sql_query(
        "INSERT INTO audit_log (at, action) SELECT now() - interval '400 days', 'old' FROM generate_series(1, 25001)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    diesel::sql_query("INSERT INTO audit_log (action) VALUES ('recent')")
        .execute(&mut conn)
        .await
        .unwrap();
    let year = std::time::Duration::from_secs(365 * 24 * 3600);
    let pruned = accounts::audit::prune(&mut conn, year).await.unwrap();
    assert_eq!(pruned, 25_001);
    let count = |action: &'static str| {
        diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
            "(SELECT count(*) FROM audit_log WHERE action = '{action}')"
        )))
    };
    let old: i64 = count("old").get_result(&mut conn).await.unwrap();
    let recent: i64 = count("recent").get_result(&mut conn).await.unwrap();
    assert_eq!((old, recent), (0, 1));
}
