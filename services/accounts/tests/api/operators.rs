//! The operator hierarchy (DESIGN, Security rules, "Operators"): an operator acts only on users
//! whose permissions are a subset of their own, only a superuser acts on a superuser, and nobody
//! grants a permission they do not hold. Refusals are DRF's 403.

use diesel_async::RunQueryDsl;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    admin::{accounts_cli, call, grant_role, user_with_role},
    helpers::{PASSWORD, TestApp, errors, spawn_app, sql, superuser},
};

const NO_PERMISSION: &str = "You do not have permission to perform this action.";

async fn assert_refused(response: reqwest::Response, what: &str) {
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "{what}");
    assert_eq!(
        errors(response).await,
        json!({ "permission": [NO_PERMISSION] }),
        "{what}"
    );
}

async fn roles_of(app: &TestApp, id: &str) -> Vec<String> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        role: String,
    }
    let rows: Vec<Row> = diesel::sql_query(format!(
        "SELECT role FROM user_roles WHERE user_id = '{id}' ORDER BY role"
    ))
    .load(&mut app.conn().await)
    .await
    .unwrap();
    rows.into_iter().map(|r| r.role).collect()
}

/// The audit actions recorded on `target`, in the order their transactions took its row lock.
async fn audited_on(app: &TestApp, target: &str) -> Vec<String> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        action: String,
    }
    let rows: Vec<Row> = diesel::sql_query(format!(
        "SELECT action FROM audit_log WHERE target_id = '{target}' ORDER BY id"
    ))
    .load(&mut app.conn().await)
    .await
    .unwrap();
    rows.into_iter().map(|r| r.action).collect()
}

#[tokio::test]
async fn an_admin_cannot_deactivate_re_role_or_sign_out_the_superuser() {
    let app = spawn_app().await;
    let (_, admin, _) = user_with_role(&app, Some(("admin", &[]))).await;
    let (root, root_token) = superuser(&app).await;
    let attacks: [(&str, String, Option<Value>); 6] = [
        ("POST", format!("/api/admin/users/{root}/deactivate"), None),
        ("POST", format!("/api/admin/users/{root}/activate"), None),
        (
            "PUT",
            format!("/api/admin/users/{root}/roles"),
            Some(json!({ "roles": ["support"] })),
        ),
        (
            "PUT",
            format!("/api/admin/users/{root}/roles"),
            Some(json!({ "roles": [] })),
        ),
        ("DELETE", format!("/api/admin/users/{root}/sessions"), None),
        (
            "POST",
            format!("/api/admin/users/{root}/confirmation"),
            None,
        ),
    ];
    for (method, path, body) in attacks {
        let response = call(&app, method, &path, Some(&admin), body).await;
        assert_refused(response, &format!("an admin: {method} {path}")).await;
    }
    assert_eq!(app.current_user(&root_token).await.status(), StatusCode::OK);
    assert!(roles_of(&app, &root).await.is_empty());
    assert!(
        audited_on(&app, &root)
            .await
            .iter()
            .all(|a| a.starts_with("login.")),
        "a refused action leaves nothing behind"
    );
    // Reads stay open to users.read.
    let read = call(
        &app,
        "GET",
        &format!("/api/admin/users/{root}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(read.status(), StatusCode::OK);

    // The contract's subset rule: an admin holds every permission, so it may act on another admin;
    // and the superuser acts on anyone.
    let (other_admin, other_token, _) = user_with_role(&app, Some(("admin", &[]))).await;
    let ended = call(
        &app,
        "DELETE",
        &format!("/api/admin/users/{other_admin}/sessions"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.current_user(&other_token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let off = call(
        &app,
        "POST",
        &format!("/api/admin/users/{other_admin}/deactivate"),
        Some(&root_token),
        None,
    )
    .await;
    assert_eq!(off.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_support_agent_cannot_end_an_administrators_sessions() {
    let app = spawn_app().await;
    let (_, agent, _) = user_with_role(&app, Some(("support", &[]))).await;
    let (admin, admin_token, _) = user_with_role(&app, Some(("admin", &[]))).await;
    let refused = call(
        &app,
        "DELETE",
        &format!("/api/admin/users/{admin}/sessions"),
        Some(&agent),
        None,
    )
    .await;
    assert_refused(refused, "support ending an admin's sessions").await;
    assert_eq!(
        app.current_user(&admin_token).await.status(),
        StatusCode::OK
    );

    // Users holding no more than the agent: a customer, and another agent.
    for role in [None, Some(("support", &[][..]))] {
        let (target, token, _) = user_with_role(&app, role).await;
        let ended = call(
            &app,
            "DELETE",
            &format!("/api/admin/users/{target}/sessions"),
            Some(&agent),
            None,
        )
        .await;
        assert_eq!(ended.status(), StatusCode::NO_CONTENT, "{role:?}");
        assert_eq!(
            app.current_user(&token).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test]
async fn an_operator_cannot_grant_a_role_with_a_permission_it_lacks() {
    let app = spawn_app().await;
    // A support agent who may also manage roles.
    let (agent_id, agent, _) = user_with_role(&app, Some(("support", &[]))).await;
    grant_role(&app, &agent_id, "role-desk", &["roles.manage"]).await;
    sql(
        &app,
        "INSERT INTO roles (name) VALUES ('auditor') ON CONFLICT DO NOTHING",
    )
    .await;
    sql(
        &app,
        "INSERT INTO role_permissions VALUES ('auditor', 'audit.read') ON CONFLICT DO NOTHING",
    )
    .await;
    let (target, _, _) = user_with_role(&app, None).await;
    for roles in [
        json!(["admin"]),
        json!(["auditor"]),
        json!(["support", "admin"]),
    ] {
        let response = call(
            &app,
            "PUT",
            &format!("/api/admin/users/{target}/roles"),
            Some(&agent),
            Some(json!({ "roles": roles })),
        )
        .await;
        assert_refused(response, &format!("granting {roles}")).await;
        assert!(roles_of(&app, &target).await.is_empty(), "{roles}");
    }
    // Nor to themselves.
    let own = call(
        &app,
        "PUT",
        &format!("/api/admin/users/{agent_id}/roles"),
        Some(&agent),
        Some(json!({ "roles": ["support", "role-desk", "admin"] })),
    )
    .await;
    assert_refused(own, "granting admin to oneself").await;
    assert_eq!(roles_of(&app, &agent_id).await, ["role-desk", "support"]);

    // What the agent holds, it may grant.
    let granted = call(
        &app,
        "PUT",
        &format!("/api/admin/users/{target}/roles"),
        Some(&agent),
        Some(json!({ "roles": ["support"] })),
    )
    .await;
    assert_eq!(granted.status(), StatusCode::OK);
    assert_eq!(roles_of(&app, &target).await, ["support"]);
}

#[tokio::test]
async fn a_deactivator_cannot_deactivate_a_user_holding_permissions_it_lacks() {
    let app = spawn_app().await;
    let (_, deactivator, _) =
        user_with_role(&app, Some(("only-deactivate", &["users.deactivate"]))).await;
    let (agent, agent_token, _) = user_with_role(&app, Some(("support", &[]))).await;
    let refused = call(
        &app,
        "POST",
        &format!("/api/admin/users/{agent}/deactivate"),
        Some(&deactivator),
        None,
    )
    .await;
    assert_refused(refused, "users.deactivate alone on a support agent").await;
    assert_eq!(
        app.current_user(&agent_token).await.status(),
        StatusCode::OK
    );

    let (customer, customer_token, _) = user_with_role(&app, None).await;
    let off = call(
        &app,
        "POST",
        &format!("/api/admin/users/{customer}/deactivate"),
        Some(&deactivator),
        None,
    )
    .await;
    assert_eq!(off.status(), StatusCode::NO_CONTENT);
    assert_ne!(
        app.current_user(&customer_token).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_target_promoted_in_parallel_is_never_acted_on_while_holding_more_than_the_operator() {
    let app = spawn_app().await;
    let (_, root) = superuser(&app).await;
    let (_, operator, _) = user_with_role(
        &app,
        Some(("desk", &["users.deactivate", "sessions.revoke"])),
    )
    .await;
    let (mut acted, mut refused) = (0, 0);
    for trial in 0..12 {
        let (target, _, _) = user_with_role(&app, None).await;
        let roles = format!("/api/admin/users/{target}/roles");
        let promote = call(
            &app,
            "PUT",
            &roles,
            Some(&root),
            Some(json!({ "roles": ["support"] })),
        );
        let (action, path) = match trial % 2 {
            0 => ("POST", format!("/api/admin/users/{target}/deactivate")),
            _ => ("DELETE", format!("/api/admin/users/{target}/sessions")),
        };
        let act = call(&app, action, &path, Some(&operator), None);
        let (promoted, acted_on) = tokio::join!(promote, act);
        assert_eq!(promoted.status(), StatusCode::OK);
        let audited = audited_on(&app, &target).await;
        let granted_at = audited.iter().position(|a| a == "role.granted").unwrap();
        let done = ["user.deactivated", "sessions.ended"];
        let acted_at = audited.iter().position(|a| done.contains(&a.as_str()));
        match acted_on.status() {
            StatusCode::FORBIDDEN => {
                refused += 1;
                assert_eq!(acted_at, None, "trial {trial}: {audited:?}");
            }
            StatusCode::NO_CONTENT => {
                acted += 1;
                let acted_at = acted_at.unwrap();
                assert!(
                    acted_at < granted_at,
                    "trial {trial}: acted on a support agent: {audited:?}"
                );
            }
            other => panic!("trial {trial}: {action} {path}: {other}"),
        }
    }
    assert_eq!(acted + refused, 12);
}

#[tokio::test]
async fn the_cli_acts_as_the_host_s_root_on_anyone() {
    let app = spawn_app().await;
    let (_, body) = app.register_user().await;
    let email = body["user"]["email"].as_str().unwrap().to_string();
    let id = body["user"]["id"].as_str().unwrap().to_string();
    sql(
        &app,
        &format!("UPDATE users SET is_superuser = true WHERE id = '{id}'"),
    )
    .await;
    let granted = accounts_cli(&app, &["users", "grant", &email, "admin"], "");
    assert!(granted.status.success(), "{granted:?}");
    let off = accounts_cli(&app, &["users", "deactivate", &email], "");
    assert!(off.status.success(), "{off:?}");
    let on = accounts_cli(&app, &["users", "activate", &email], "");
    assert!(on.status.success(), "{on:?}");
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
}

/// The audit id of `action` on `target`, when it was recorded.
async fn audit_id(app: &TestApp, target: &str, action: &str) -> Option<i64> {
    diesel::select(diesel::dsl::sql::<
        diesel::sql_types::Nullable<diesel::sql_types::BigInt>,
    >(&format!(
        "(SELECT max(id) FROM audit_log WHERE target_id = '{target}' AND action = '{action}')"
    )))
    .get_result(&mut app.conn().await)
    .await
    .unwrap()
}

/// The operator's side of the same race: its request passed authentication holding a role that a
/// superuser revokes in parallel. The action must not commit after the revocation.
#[tokio::test]
async fn an_operator_whose_role_is_revoked_in_parallel_never_acts_after_the_revocation() {
    let app = spawn_app().await;
    let (_, root) = superuser(&app).await;
    for trial in 0..12 {
        let (operator_id, operator, _) =
            user_with_role(&app, Some(("desk", &["users.deactivate"]))).await;
        let (target, _, _) = user_with_role(&app, None).await;
        let (roles, deactivation) = (
            format!("/api/admin/users/{operator_id}/roles"),
            format!("/api/admin/users/{target}/deactivate"),
        );
        let revoke = call(
            &app,
            "PUT",
            &roles,
            Some(&root),
            Some(json!({ "roles": [] })),
        );
        let deactivate = call(&app, "POST", &deactivation, Some(&operator), None);
        let (revoked, deactivated) = tokio::join!(revoke, deactivate);
        assert_eq!(revoked.status(), StatusCode::OK, "trial {trial}");
        let revoked_at = audit_id(&app, &operator_id, "role.revoked").await.unwrap();
        let deactivated_at = audit_id(&app, &target, "user.deactivated").await;
        match deactivated.status() {
            StatusCode::NO_CONTENT => {
                assert!(
                    deactivated_at.unwrap() < revoked_at,
                    "trial {trial}: the operator acted after losing its role"
                );
            }
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => {
                assert_eq!(deactivated_at, None, "trial {trial}");
            }
            other => panic!("trial {trial}: {other}"),
        }
    }
}
