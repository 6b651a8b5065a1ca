//! A deactivated account is no password oracle: the right and a wrong password get the same
//! answer, at the same cost, and count alike against the throttle.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{PASSWORD, spawn_app, sql};

#[tokio::test]
async fn a_leaked_password_list_learns_nothing_from_a_deactivated_account() {
    let app = spawn_app().await;
    let (email, body) = app.register_user().await;
    let id = body["user"]["id"].as_str().unwrap();
    sql(
        &app,
        &format!("UPDATE users SET active = false WHERE id = '{id}'"),
    )
    .await;
    let answer = |password: &'static str| {
        let app = &app;
        let email = email.clone();
        async move {
            let response = app.login(&email, password).await;
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            (status, body)
        }
    };
    let right = answer(PASSWORD).await;
    let wrong = answer("wrong-password-1").await;
    assert_eq!(right, wrong, "right and wrong passwords must look alike");
    assert_eq!(right.0, StatusCode::UNAUTHORIZED);

    // A right guess does not reset the failure count either: five attempts of any kind lock the
    // pair, as five wrong ones would.
    for password in [PASSWORD, "wrong-password-2", PASSWORD] {
        assert_eq!(answer(password).await, wrong, "{password}");
    }
    let locked = app.login(&email, PASSWORD).await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
}
