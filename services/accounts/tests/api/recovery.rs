//! Recovery that the intruder cannot undo: an intruder holding a fresh stolen session changes the
//! email (perhaps twice), sets a password, asks for reset links; the owner's revert link must still
//! win, and leave the intruder nothing that works.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    PASSWORD, TestApp, errors, registration, spawn_app, token_of, token_pair, unique_email,
};

const INTRUDER_PASSWORD: &str = "intrud3r-pass";
const OWNER_PASSWORD: &str = "0wner-is-back";

async fn change_email(app: &TestApp, access: &str, email: &str) {
    let changed = app.update_user(access, json!({ "email": email })).await;
    assert_eq!(
        changed.status(),
        StatusCode::OK,
        "changing the email to {email}"
    );
}

async fn revert(app: &TestApp, token: &str) -> StatusCode {
    app.post("/api/users/email/revert", &json!({ "token": token }))
        .await
        .status()
}

async fn reset(app: &TestApp, token: &str, password: &str) -> StatusCode {
    app.post(
        "/api/users/password/reset",
        &json!({ "token": token, "password": password, "confirm_password": password }),
    )
    .await
    .status()
}

/// Opens a confirmation link as a JSON client.
async fn confirm(app: &TestApp, token: &str) -> StatusCode {
    app.client
        .get(app.url(&format!("/api/users/confirm?token={token}")))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .status()
}

/// Posts a sign-in notice's "this wasn't me" link.
async fn reject(app: &TestApp, token: &str) -> StatusCode {
    app.post("/api/users/sign-in/reject", &json!({ "token": token }))
        .await
        .status()
}

/// Asks for a reset link for `email`; the newest reset link's token.
async fn forgot(app: &TestApp, email: &str) -> String {
    let asked = app
        .post(
            "/api/users/password/forgot",
            &json!({ "user": { "email": email } }),
        )
        .await;
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    app.link_token("password-reset-requested", "reset_url")
        .await
}

/// Signs in from a new device and rejects the notice it mails.
async fn sign_in_and_reject(app: &TestApp, email: &str, password: &str, user_agent: &str) {
    app.login_from(email, password, user_agent).await;
    let notice = app.link_token("new-sign-in", "reject_url").await;
    assert_eq!(reject(app, &notice).await, StatusCode::NO_CONTENT);
}

async fn email_of(app: &TestApp, email: &str, password: &str) -> Option<Value> {
    let login = app.login(email, password).await;
    match login.status() {
        StatusCode::OK => Some(login.json::<Value>().await.unwrap()["user"].clone()),
        _ => None,
    }
}

/// An owner's account, its address confirmed, whose fresh session the intruder holds: the
/// owner's address, the stolen access token.
async fn stolen_account(app: &TestApp) -> (String, String) {
    let (owner, body) = app.register_user().await;
    let (access, _) = token_pair(&body);
    let confirmation = app.link_token("user-registered", "confirmation_url").await;
    assert_eq!(confirm(app, &confirmation).await, StatusCode::OK);
    (owner, access)
}

const INTRUDERS_DEVICE: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

#[tokio::test]
async fn the_intruders_own_revert_link_cannot_undo_the_owners_recovery() {
    let app = spawn_app().await;
    let (owner, stolen) = stolen_account(&app).await;
    let (b, c) = (unique_email(), unique_email());
    change_email(&app, &stolen, &b).await;
    change_email(&app, &stolen, &c).await;
    // The owner holds the link mailed to A; the intruder the one mailed to B.
    let links = app.link_tokens("email-changed", "revert_url").await;
    let (owners_link, intruders_link) = (&links[0], &links[1]);

    assert_eq!(revert(&app, owners_link).await, StatusCode::NO_CONTENT);
    let resets = app
        .link_tokens("password-reset-requested", "reset_url")
        .await;
    assert_eq!(
        reset(&app, resets.last().unwrap(), OWNER_PASSWORD).await,
        StatusCode::NO_CONTENT
    );
    let owner_session = app.login(&owner, OWNER_PASSWORD).await;
    assert_eq!(owner_session.status(), StatusCode::OK);
    let (owner_access, _) = token_pair(&owner_session.json().await.unwrap());

    // The intruder's link for B was voided by the owner's revert of the earlier change.
    assert_eq!(revert(&app, intruders_link).await, StatusCode::BAD_REQUEST);
    let me: Value = app.current_user(&owner_access).await.json().await.unwrap();
    assert_eq!(
        me["user"]["email"],
        owner.as_str(),
        "the owner's address stays"
    );
    assert_eq!(me["user"]["verified"], true);
    assert!(email_of(&app, &b, OWNER_PASSWORD).await.is_none());
}

#[tokio::test]
async fn the_owners_link_still_wins_when_the_intruder_reverts_first() {
    let app = spawn_app().await;
    let (owner, stolen) = stolen_account(&app).await;
    let (b, c) = (unique_email(), unique_email());
    change_email(&app, &stolen, &b).await;
    change_email(&app, &stolen, &c).await;
    let links = app.link_tokens("email-changed", "revert_url").await;

    // The intruder undoes only its second change: B is back, and so is nothing of the owner's.
    assert_eq!(revert(&app, &links[1]).await, StatusCode::NO_CONTENT);
    // A later change by the intruder (impossible without a session now, but a link must not
    // depend on that) and the intruder's revert never void the owner's earlier link.
    assert_eq!(revert(&app, &links[0]).await, StatusCode::NO_CONTENT);
    let resets = app
        .link_tokens("password-reset-requested", "reset_url")
        .await;
    assert_eq!(
        reset(&app, resets.last().unwrap(), OWNER_PASSWORD).await,
        StatusCode::NO_CONTENT
    );
    let me = email_of(&app, &owner, OWNER_PASSWORD)
        .await
        .expect("the owner signs in");
    assert_eq!(me["email"], owner.as_str());
}

#[tokio::test]
async fn parallel_reverts_of_the_owner_and_the_intruder_always_leave_the_owners_address() {
    for trial in 0..5 {
        let app = spawn_app().await;
        let (owner, stolen) = stolen_account(&app).await;
        change_email(&app, &stolen, &unique_email()).await;
        change_email(&app, &stolen, &unique_email()).await;
        let links = app.link_tokens("email-changed", "revert_url").await;
        let (first, second) = tokio::join!(revert(&app, &links[0]), revert(&app, &links[1]));
        assert_eq!(
            first,
            StatusCode::NO_CONTENT,
            "trial {trial}: the owner's link works"
        );
        assert!(
            [StatusCode::NO_CONTENT, StatusCode::BAD_REQUEST].contains(&second),
            "trial {trial}: {second}"
        );
        let resets = app
            .link_tokens("password-reset-requested", "reset_url")
            .await;
        let owners_reset = resets.last().unwrap();
        assert_eq!(
            reset(&app, owners_reset, OWNER_PASSWORD).await,
            StatusCode::NO_CONTENT
        );
        let me = email_of(&app, &owner, OWNER_PASSWORD).await;
        assert_eq!(
            me.expect("the owner signs in")["email"],
            owner.as_str(),
            "trial {trial}"
        );
    }
}

#[tokio::test]
async fn the_old_address_stays_reserved_to_the_account_while_its_revert_link_is_valid() {
    let app = spawn_app().await;
    let (owner, stolen) = stolen_account(&app).await;
    change_email(&app, &stolen, &unique_email()).await;

    // Neither a new account nor another account's email change can take the address the owner's
    // link restores.
    let squatter = app.register(&registration(&owner, PASSWORD)).await;
    assert_eq!(squatter.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        errors(squatter).await["email"][0],
        "user with this email already exists."
    );
    let (_, other) = app.register_user().await;
    let (other_access, _) = token_pair(&other);
    let taken = app
        .update_user(&other_access, json!({ "email": owner }))
        .await;
    assert_eq!(taken.status(), StatusCode::BAD_REQUEST);

    // Parallel registrations racing the reservation: none gets it.
    let body = registration(&owner, PASSWORD);
    let attempts = (0..10).map(|_| app.register(&body));
    for response in futures_util::future::join_all(attempts).await {
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }

    // The account itself may move back to its reserved address.
    change_email(&app, &stolen, &owner).await;
    let link = &app.link_tokens("email-changed", "revert_url").await[0];
    assert_eq!(revert(&app, link).await, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_revert_leaves_the_intruder_no_working_password() {
    let app = spawn_app().await;
    let (owner, stolen) = stolen_account(&app).await;
    let b = unique_email();
    change_email(&app, &stolen, &b).await;
    let set = app
        .update_user(
            &stolen,
            json!({ "password": INTRUDER_PASSWORD, "current_password": PASSWORD }),
        )
        .await;
    assert_eq!(set.status(), StatusCode::OK);

    let link = &app.link_tokens("email-changed", "revert_url").await[0];
    assert_eq!(revert(&app, link).await, StatusCode::NO_CONTENT);

    // Neither the intruder's password nor the owner's old one opens the restored account.
    for password in [INTRUDER_PASSWORD, PASSWORD] {
        let login = app.login(&owner, password).await;
        assert_eq!(login.status(), StatusCode::UNAUTHORIZED, "{password}");
    }
    // Only the reset mailed to the restored address does.
    let resets = app.outbox_events("password-reset-requested").await;
    let mailed = resets.last().unwrap();
    assert_eq!(mailed["email"], owner.as_str());
    let token = token_of(mailed["reset_url"].as_str().unwrap());
    assert_eq!(
        reset(&app, &token, OWNER_PASSWORD).await,
        StatusCode::NO_CONTENT
    );
    assert!(email_of(&app, &owner, OWNER_PASSWORD).await.is_some());
    assert_eq!(
        reset(&app, &token, "y3t-another-one").await,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_reset_link_mailed_to_the_intruders_address_dies_with_the_revert() {
    let app = spawn_app().await;
    let (_, stolen) = stolen_account(&app).await;
    let b = unique_email();
    change_email(&app, &stolen, &b).await;
    let intruders_reset = forgot(&app, &b).await;

    let link = &app.link_tokens("email-changed", "revert_url").await[0];
    assert_eq!(revert(&app, link).await, StatusCode::NO_CONTENT);
    assert_eq!(
        reset(&app, &intruders_reset, INTRUDER_PASSWORD).await,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_reset_link_left_in_an_old_mailbox_dies_when_the_address_changes() {
    let app = spawn_app().await;
    let (owner, body) = app.register_user().await;
    let (access, _) = token_pair(&body);
    let old_mailbox = forgot(&app, &owner).await;
    change_email(&app, &access, &unique_email()).await;
    assert_eq!(
        reset(&app, &old_mailbox, OWNER_PASSWORD).await,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_confirmation_link_of_an_earlier_epoch_is_void_even_for_the_same_address() {
    let app = spawn_app().await;
    let (owner, body) = app.register_user().await;
    let (access, _) = token_pair(&body);
    let first = app.link_tokens("user-registered", "confirmation_url").await[0].clone();
    // Away and back: the address is the same, the epoch is not.
    change_email(&app, &access, &unique_email()).await;
    change_email(&app, &access, &owner).await;
    assert_eq!(confirm(&app, &first).await, StatusCode::BAD_REQUEST);
    let me: Value = app.current_user(&access).await.json().await.unwrap();
    assert_eq!(me["user"]["verified"], false);

    // The link mailed for the current epoch works.
    let current = app
        .link_token("email-confirmation-requested", "confirmation_url")
        .await;
    assert_eq!(confirm(&app, &current).await, StatusCode::OK);
}

#[tokio::test]
async fn rejecting_a_sign_in_ends_every_session_and_the_password_the_intruder_knows() {
    const CHROME: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
    let app = spawn_app().await;
    let (owner, _) = app.register_user().await;
    // Two sign-ins from one new device: one notice.
    let (first_access, first_refresh) = app.login_as(&owner, CHROME).await;
    let (second_access, second_refresh) = app.login_as(&owner, CHROME).await;
    let notices = app.link_tokens("new-sign-in", "reject_url").await;
    assert_eq!(notices.len(), 1);

    assert_eq!(reject(&app, &notices[0]).await, StatusCode::NO_CONTENT);
    for (access, refresh) in [
        (&first_access, &first_refresh),
        (&second_access, &second_refresh),
    ] {
        assert_eq!(
            app.current_user(access).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            app.refresh(refresh).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // The password the intruder knows no longer signs in; the mailed reset does.
    assert_eq!(
        app.login(&owner, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let resets = app
        .link_tokens("password-reset-requested", "reset_url")
        .await;
    assert_eq!(resets.len(), 1);
    assert_eq!(
        reset(&app, &resets[0], OWNER_PASSWORD).await,
        StatusCode::NO_CONTENT
    );
    assert!(email_of(&app, &owner, OWNER_PASSWORD).await.is_some());
}

#[tokio::test]
async fn sign_in_notices_mailed_to_the_intruders_address_die_with_the_owners_revert() {
    let app = spawn_app().await;
    let (owner, stolen) = stolen_account(&app).await;
    let b = unique_email();
    change_email(&app, &stolen, &b).await;
    // The intruder gives itself a password through its own address and signs in from a new
    // device: the notice, with its "this wasn't me" link, goes to B.
    let intruders_reset = forgot(&app, &b).await;
    assert_eq!(
        reset(&app, &intruders_reset, INTRUDER_PASSWORD).await,
        StatusCode::NO_CONTENT
    );
    app.login_from(&b, INTRUDER_PASSWORD, INTRUDERS_DEVICE)
        .await;
    let intruders_reject = app.link_tokens("new-sign-in", "reject_url").await;
    assert_eq!(intruders_reject.len(), 1);

    let link = &app.link_tokens("email-changed", "revert_url").await[0];
    assert_eq!(revert(&app, link).await, StatusCode::NO_CONTENT);
    let resets = app
        .link_tokens("password-reset-requested", "reset_url")
        .await;
    assert_eq!(
        reset(&app, resets.last().unwrap(), OWNER_PASSWORD).await,
        StatusCode::NO_CONTENT
    );
    let (owner_access, _) = token_pair(
        &app.login(&owner, OWNER_PASSWORD)
            .await
            .json()
            .await
            .unwrap(),
    );

    assert_eq!(
        reject(&app, &intruders_reject[0]).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        app.current_user(&owner_access).await.status(),
        StatusCode::OK
    );
    assert!(email_of(&app, &owner, OWNER_PASSWORD).await.is_some());
}

#[tokio::test]
async fn the_owners_sign_in_notice_still_works_after_the_intruder_changed_the_address() {
    let app = spawn_app().await;
    let (owner, _) = stolen_account(&app).await;
    // The intruder knows the password: signing in mails the owner's address.
    let body = app.login_from(&owner, PASSWORD, INTRUDERS_DEVICE).await;
    let (intruder, _) = token_pair(&body);
    change_email(&app, &intruder, &unique_email()).await;
    let notice = &app.link_tokens("new-sign-in", "reject_url").await[0];
    assert_eq!(reject(&app, notice).await, StatusCode::NO_CONTENT);
    assert_eq!(
        app.current_user(&intruder).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn an_address_the_account_never_confirmed_is_not_reserved() {
    let app = spawn_app().await;
    let (_, body) = app.register_user().await;
    let (access, _) = token_pair(&body);
    // Someone else's addresses, set and left at once: none was proven this account's.
    let (v1, v2) = (unique_email(), unique_email());
    change_email(&app, &access, &v1).await;
    change_email(&app, &access, &v2).await;
    let owner_of_v1 = app.register(&registration(&v1, PASSWORD)).await;
    assert_eq!(owner_of_v1.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn devices_first_seen_during_the_takeover_are_forgotten() {
    let app = spawn_app().await;
    let (owner, _) = stolen_account(&app).await;
    let body = app.login_from(&owner, PASSWORD, INTRUDERS_DEVICE).await;
    let (intruder, _) = token_pair(&body);
    change_email(&app, &intruder, &unique_email()).await;
    let link = &app.link_tokens("email-changed", "revert_url").await[0];
    assert_eq!(revert(&app, link).await, StatusCode::NO_CONTENT);
    let resets = app
        .link_tokens("password-reset-requested", "reset_url")
        .await;
    assert_eq!(
        reset(&app, resets.last().unwrap(), OWNER_PASSWORD).await,
        StatusCode::NO_CONTENT
    );

    // Should the intruder ever get the password again, its device is new again: the owner hears.
    let before = app.outbox_events("new-sign-in").await.len();
    app.login_from(&owner, OWNER_PASSWORD, INTRUDERS_DEVICE)
        .await;
    assert_eq!(app.outbox_events("new-sign-in").await.len(), before + 1);
}

#[tokio::test]
async fn reset_links_of_an_earlier_recovery_stay_dead_when_the_password_is_unusable_again() {
    const SAFARI: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15";
    let app = spawn_app().await;
    let (owner, _) = stolen_account(&app).await;
    sign_in_and_reject(&app, &owner, PASSWORD, INTRUDERS_DEVICE).await;
    let mailed_by_the_reject = app
        .link_token("password-reset-requested", "reset_url")
        .await;
    let left_unused = forgot(&app, &owner).await;
    let used = forgot(&app, &owner).await;
    assert_eq!(
        reset(&app, &used, OWNER_PASSWORD).await,
        StatusCode::NO_CONTENT
    );

    // A second recovery leaves the account without a password again: no link of the first one,
    // used or not, comes back to life.
    sign_in_and_reject(&app, &owner, OWNER_PASSWORD, SAFARI).await;
    for earlier in [&used, &left_unused, &mailed_by_the_reject] {
        assert_eq!(
            reset(&app, earlier, INTRUDER_PASSWORD).await,
            StatusCode::BAD_REQUEST
        );
    }
    let current = app
        .link_token("password-reset-requested", "reset_url")
        .await;
    assert_eq!(
        reset(&app, &current, INTRUDER_PASSWORD).await,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn create_superuser_cannot_take_an_address_a_revert_link_can_restore() {
    let app = spawn_app().await;
    let (owner, stolen) = stolen_account(&app).await;
    change_email(&app, &stolen, &unique_email()).await;
    let created = crate::admin::accounts_cli(
        &app,
        &["create-superuser", "--email", &owner],
        "Str0ng-enough-pass\nStr0ng-enough-pass\n",
    );
    assert!(!created.status.success());
    assert!(
        String::from_utf8_lossy(&created.stderr).contains("reserved"),
        "{created:?}"
    );
    let link = &app.link_tokens("email-changed", "revert_url").await[0];
    assert_eq!(revert(&app, link).await, StatusCode::NO_CONTENT);
}
