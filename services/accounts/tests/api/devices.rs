//! Sessions by device, the refresh grace window, the new sign-in notice and the mail's language.

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    Options, PASSWORD, TestApp, claims_of, registration, spawn_app, spawn_with, token_pair,
    unique_email,
};

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

async fn register_as(app: &TestApp, user_agent: &str) -> (String, (String, String)) {
    let email = unique_email();
    let response = app
        .client
        .post(app.url("/api/users"))
        .header("User-Agent", user_agent)
        .json(&registration(&email, PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    (email, token_pair(&response.json().await.unwrap()))
}

async fn sessions(app: &TestApp, access: &str) -> Vec<Value> {
    let response = app
        .client
        .get(app.url("/api/user/sessions"))
        .header("Authorization", format!("Token {access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["sessions"].as_array().unwrap().clone()
}

async fn delete_session(app: &TestApp, access: &str, id: &str) -> StatusCode {
    app.client
        .delete(app.url(&format!("/api/user/sessions/{id}")))
        .header("Authorization", format!("Token {access}"))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn the_session_list_shows_each_device_and_exactly_one_current() {
    let app = spawn_app().await;
    let (email, (first_access, _)) = register_as(&app, FIREFOX).await;
    let (second_access, _) = app.login_as(&email, CHROME_MAC).await;

    let listed = sessions(&app, &second_access).await;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed.iter().filter(|s| s["current"] == true).count(), 1);
    assert_eq!(listed[0]["current"], true, "newest first");
    assert_eq!(listed[0]["user_agent"], CHROME_MAC);
    assert_eq!(listed[1]["user_agent"], FIREFOX);
    assert_eq!(listed[1]["ip"], "127.0.0.1");
    for key in ["id", "created_at", "last_used_at"] {
        assert!(listed[0][key].is_string(), "{key}");
    }
    let from_first = sessions(&app, &first_access).await;
    assert_eq!(from_first[1]["current"], true);
}

#[tokio::test]
async fn deleting_a_session_ends_its_tokens_and_another_users_session_is_404() {
    let app = spawn_app().await;
    let (email, (access, _)) = register_as(&app, FIREFOX).await;
    let (other_access, other_refresh) = app.login_as(&email, CHROME_MAC).await;
    let (_, (stranger_access, _)) = register_as(&app, FIREFOX).await;
    let listed = sessions(&app, &access).await;
    let other_id = listed[0]["id"].as_str().unwrap().to_string();

    assert_eq!(
        delete_session(&app, &stranger_access, &other_id).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        delete_session(&app, &access, "not-a-uuid").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.current_user(&other_access).await.status(),
        StatusCode::OK
    );

    assert_eq!(
        delete_session(&app, &access, &other_id).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.current_user(&other_access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&other_refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.current_user(&access).await.status(), StatusCode::OK);
    assert_eq!(
        delete_session(&app, &access, &other_id).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(sessions(&app, &access).await.len(), 1);
}

#[tokio::test]
async fn a_refresh_token_replayed_inside_the_grace_window_gets_the_current_one() {
    let app = spawn_app().await;
    let (_, body) = app.register_user().await;
    let (_, a) = token_pair(&body);
    let first = app.refresh(&a).await;
    assert_eq!(first.status(), StatusCode::OK);
    let (_, b) = token_pair(&first.json().await.unwrap());
    // The response was lost, or a second tab had the same token: it works again, and answers
    // with the family's current token, not a second one.
    let second = app.refresh(&a).await;
    assert_eq!(second.status(), StatusCode::OK);
    let (access_c, c) = token_pair(&second.json().await.unwrap());
    assert_eq!(b, c);
    assert_eq!(app.current_user(&access_c).await.status(), StatusCode::OK);
    let listed = sessions(&app, &access_c).await;
    assert_eq!(listed.len(), 1, "one family, one session");
    // Once the current token is used, a replay of `a` gets its successor.
    let third = app.refresh(&b).await;
    assert_eq!(third.status(), StatusCode::OK);
    let (_, d) = token_pair(&third.json().await.unwrap());
    let replay = app.refresh(&a).await;
    assert_eq!(replay.status(), StatusCode::OK);
    assert_eq!(token_pair(&replay.json().await.unwrap()).1, d);
    assert_eq!(live_refresh_tokens(&app, &access_c).await, 1);
}

/// The refresh tokens of the access token's session that are neither used nor revoked.
async fn live_refresh_tokens(app: &TestApp, access: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Live {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        live: i64,
    }
    use diesel_async::RunQueryDsl;
    let sid: uuid::Uuid = claims_of(access)["sid"].as_str().unwrap().parse().unwrap();
    let row: Live = diesel::sql_query(
        "SELECT count(*) AS live FROM refresh_tokens \
         WHERE family_id = $1 AND used_at IS NULL AND revoked_at IS NULL",
    )
    .bind::<diesel::sql_types::Uuid, _>(sid)
    .get_result(&mut app.conn().await)
    .await
    .unwrap();
    row.live
}

#[tokio::test]
async fn twenty_parallel_replays_inside_the_grace_window_never_fork_the_session() {
    let app = spawn_app().await;
    for trial in 0..6 {
        let (_, body) = app.register_user().await;
        let (_, a) = token_pair(&body);
        // Half the trials replay a token already used; the others race its first use against
        // nineteen replays.
        let current = match trial % 2 {
            0 => {
                let first = app.refresh(&a).await;
                assert_eq!(first.status(), StatusCode::OK);
                Some(token_pair(&first.json().await.unwrap()).1)
            }
            _ => None,
        };
        let answers = join_all((0..20).map(|_| app.refresh(&a))).await;
        let mut handed_out = std::collections::HashSet::new();
        let mut access_tokens = Vec::new();
        for answer in answers {
            assert_eq!(answer.status(), StatusCode::OK, "trial {trial}");
            let (access, refresh) = token_pair(&answer.json().await.unwrap());
            handed_out.insert(refresh);
            access_tokens.push(access);
        }
        assert_eq!(
            handed_out.len(),
            1,
            "trial {trial}: 20 replays were handed {} refresh tokens",
            handed_out.len()
        );
        let live = handed_out.into_iter().next().unwrap();
        if let Some(current) = current {
            assert_eq!(
                live, current,
                "trial {trial}: not the family's current token"
            );
        }
        assert_eq!(
            live_refresh_tokens(&app, &access_tokens[0]).await,
            1,
            "trial {trial}"
        );
        for access in &access_tokens {
            assert_eq!(app.current_user(access).await.status(), StatusCode::OK);
        }
        // The one chain goes on; the replayed token, once its window is over, ends it.
        let next = app.refresh(&live).await;
        assert_eq!(next.status(), StatusCode::OK, "trial {trial}");
        assert_eq!(
            live_refresh_tokens(&app, &access_tokens[0]).await,
            1,
            "trial {trial}"
        );
    }
}

#[tokio::test]
async fn a_reuse_after_the_grace_window_revokes_the_family() {
    let app = spawn_with(Options {
        vars: vec![("ACCOUNTS_REFRESH_REUSE_GRACE_SECONDS", "1".into())],
        ..Options::default()
    })
    .await;
    let (_, body) = app.register_user().await;
    let (_, a) = token_pair(&body);
    let rotated = app.refresh(&a).await;
    let (access_b, b) = token_pair(&rotated.json().await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(app.refresh(&a).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.refresh(&b).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.current_user(&access_b).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_never_answer_5xx() {
    let app = spawn_app().await;
    for _ in 0..6 {
        let (_, body) = app.register_user().await;
        let (_, token) = token_pair(&body);
        let answers = join_all((0..8).map(|_| app.refresh(&token))).await;
        for answer in answers {
            assert_eq!(
                answer.status(),
                StatusCode::OK,
                "inside the window every one works"
            );
        }
    }
}

#[tokio::test]
async fn a_new_device_gets_exactly_one_notice_and_a_known_one_none() {
    let app = spawn_app().await;
    let (email, _) = register_as(&app, FIREFOX).await;
    // Registration was the first device.
    app.login_as(&email, FIREFOX).await;
    assert!(app.outbox_events("new-sign-in").await.is_empty());

    let (intruder_access, intruder_refresh) = app.login_as(&email, CHROME_MAC).await;
    let (later_access, _) = app.login_as(&email, CHROME_MAC).await;
    let notices = app.outbox_events("new-sign-in").await;
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0]["email"], email.as_str());
    assert_eq!(notices[0]["device"], "Chrome on Mac OSX");
    assert_eq!(notices[0]["ip"], "127.0.0.1");

    // "This wasn't me": the page consumes nothing, the POST ends every session and starts a reset.
    let token = app.link_token("new-sign-in", "reject_url").await;
    let page = app
        .client
        .get(app.url(&format!("/account/reject-sign-in?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let (owner_access, _) = app.login_as(&email, FIREFOX).await;
    let rejected = app
        .post("/api/users/sign-in/reject", &json!({ "token": token }))
        .await;
    assert_eq!(rejected.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.current_user(&intruder_access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&intruder_refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Every session ends: the intruder's second sign-in from that device sent no notice.
    for access in [&later_access, &owner_access] {
        assert_eq!(
            app.current_user(access).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(app.outbox_events("password-reset-requested").await.len(), 1);
    let again = app
        .post("/api/users/sign-in/reject", &json!({ "token": token }))
        .await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_mail_language_comes_from_the_field_or_accept_language() {
    let app = spawn_app().await;
    let french = app
        .client
        .post(app.url("/api/users"))
        .header("Accept-Language", "fr-CA,fr;q=0.9,en;q=0.5")
        .json(&registration(&unique_email(), PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(french.status(), StatusCode::CREATED);
    let mut explicit = registration(&unique_email(), PASSWORD);
    explicit["user"]["locale"] = json!("en-GB");
    assert_eq!(app.register(&explicit).await.status(), StatusCode::CREATED);
    let mut hostile = registration(&unique_email(), PASSWORD);
    hostile["user"]["locale"] = json!("<script>");
    assert_eq!(
        app.register(&hostile).await.status(),
        StatusCode::BAD_REQUEST
    );

    let locales: Vec<_> = app
        .outbox_events("user-registered")
        .await
        .iter()
        .map(|e| e["locale"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(locales, ["fr", "en-GB"]);
}

/// The current refresh token is kept sealed only for the grace window: afterwards nothing in the
/// database decrypts to a live token, even with the encryption key.
#[tokio::test]
async fn a_sealed_refresh_token_is_forgotten_once_its_grace_window_ends() {
    use diesel_async::RunQueryDsl;
    let app = spawn_with(Options {
        vars: vec![("ACCOUNTS_REFRESH_REUSE_GRACE_SECONDS", "1".into())],
        ..Options::default()
    })
    .await;
    let (_, body) = app.register_user().await;
    let (_, refresh) = token_pair(&body);
    assert_eq!(app.refresh(&refresh).await.status(), StatusCode::OK);
    let sealed = || {
        diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
            "(SELECT count(*) FROM refresh_tokens WHERE sealed IS NOT NULL)",
        ))
    };
    let mut conn = app.conn().await;
    assert_eq!(sealed().get_result::<i64>(&mut conn).await.unwrap(), 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while sealed().get_result::<i64>(&mut conn).await.unwrap() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a sealed token outlived its grace window by 15 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
