//! Guessing and flooding, the way an attacker does it: in parallel, from one address or from many.
//! A 401 means a password was checked with bcrypt; a 429 means it was turned away before.

use std::{net::IpAddr, time::Duration};

use futures_util::future::join_all;
use reqwest::{Response, StatusCode};
use serde_json::json;

use crate::helpers::{
    PASSWORD, TestApp, client, errors, login_via, registration, spawn_roomy, status_counts,
    unique_email,
};

const TRIALS: u8 = 6;

/// An app whose hashing queue never turns a login away, so only the throttle decides.
fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

fn retry_after(response: &Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn twenty_parallel_guesses_from_one_client_get_at_most_five_checks() {
    let app = spawn_roomy(None, &[]).await;
    for trial in 0..TRIALS {
        let (email, _) = app.register_user().await;
        let from = client(Some(loopback(10 + trial)));
        let guesses = (0..20).map(|i| {
            let (app, from, email) = (&app, &from, &email);
            async move { login_via(app, from, email, &format!("wrong-guess-{i}")).await }
        });
        let responses = join_all(guesses).await;
        let statuses: Vec<StatusCode> = responses.iter().map(Response::status).collect();
        let counts = status_counts(&statuses);
        assert!(
            counts.get(&401).copied().unwrap_or(0) <= 5,
            "trial {trial}: more than 5 passwords checked: {counts:?}"
        );
        assert_eq!(
            counts.get(&401).copied().unwrap_or(0) + counts.get(&429).copied().unwrap_or(0),
            20,
            "trial {trial}: {counts:?}"
        );
        for response in responses.iter().filter(|r| r.status() == 429) {
            assert!(retry_after(response) >= 1);
        }
    }
}

#[tokio::test]
async fn guesses_from_many_addresses_are_capped_by_the_per_account_delay() {
    let app = spawn_roomy(None, &[]).await;
    let clients: Vec<reqwest::Client> = (2..122).map(|n| client(Some(loopback(n)))).collect();
    for trial in 0..TRIALS {
        let (email, _) = app.register_user().await;
        // 8 chains of 15 guesses, each guess from its own address.
        let chains = clients.chunks(15).map(|chain| {
            let (app, email) = (&app, &email);
            async move {
                let mut statuses = Vec::new();
                for (i, from) in chain.iter().enumerate() {
                    let response = login_via(app, from, email, &format!("guess-{trial}-{i}")).await;
                    if response.status() == StatusCode::TOO_MANY_REQUESTS {
                        assert!(retry_after(&response) >= 1);
                    }
                    statuses.push(response.status());
                }
                statuses
            }
        });
        let statuses: Vec<StatusCode> = join_all(chains).await.into_iter().flatten().collect();
        let counts = status_counts(&statuses);
        let checked = counts.get(&401).copied().unwrap_or(0);
        // 20 free failures, then one per delay (1 s, 2 s, 4 s, ...) while the burst lasts.
        assert!(
            (20..=24).contains(&checked),
            "trial {trial}: {checked} of 120 guesses checked: {counts:?}"
        );
        assert_eq!(checked + counts.get(&429).copied().unwrap_or(0), 120);
    }
}

#[tokio::test]
async fn the_owner_waits_out_the_delay_and_a_success_resets_it() {
    let app = spawn_roomy(None, &[]).await;
    let (email, _) = app.register_user().await;
    for n in 0..20u8 {
        let from = client(Some(loopback(30 + n)));
        let response = login_via(&app, &from, &email, "wrong-password-1").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    // Even the right password, from a fresh address, waits: the account is being guessed at.
    let owner = client(Some(loopback(99)));
    let delayed = login_via(&app, &owner, &email, PASSWORD).await;
    assert_eq!(delayed.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait = retry_after(&delayed);
    assert_eq!(wait, 1);
    assert!(errors(delayed).await["throttle"][0].is_string());
    tokio::time::sleep(Duration::from_millis(wait * 1000 + 100)).await;
    assert_eq!(
        login_via(&app, &owner, &email, PASSWORD).await.status(),
        StatusCode::OK
    );
    // The success reset the delay: the next mistake is checked at once.
    assert_eq!(
        login_via(&app, &owner, &email, "wrong-password-2")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn fifty_failures_lock_the_client_whatever_accounts_it_sprays() {
    let app = spawn_roomy(None, &[]).await;
    for trial in 0..TRIALS {
        let from = client(Some(loopback(130 + trial)));
        let targets: Vec<String> = (0..60).map(|_| unique_email()).collect();
        let chains = targets.chunks(15).map(|chain| {
            let (app, from) = (&app, &from);
            async move {
                let mut statuses = Vec::new();
                for email in chain {
                    statuses.push(login_via(app, from, email, "Password1").await.status());
                }
                statuses
            }
        });
        let statuses: Vec<StatusCode> = join_all(chains).await.into_iter().flatten().collect();
        let counts = status_counts(&statuses);
        assert_eq!(counts.get(&401), Some(&50), "trial {trial}: {counts:?}");
        assert_eq!(counts.get(&429), Some(&10), "trial {trial}: {counts:?}");
    }
    // Another client is not affected.
    let (email, _) = app.register_user().await;
    let other = client(Some(loopback(200)));
    assert_eq!(
        login_via(&app, &other, &email, PASSWORD).await.status(),
        StatusCode::OK
    );
}

/// Five wrong passwords for `email`, each claiming to come from `forwarded`.
async fn guess_forwarded(app: &TestApp, email: &str, forwarded: &[&str]) -> Vec<StatusCode> {
    let mut statuses = Vec::new();
    for hop in forwarded {
        let response = app
            .client
            .post(app.url("/api/users/login"))
            .header("X-Forwarded-For", *hop)
            .json(&json!({ "user": { "email": email, "password": "wrong-password-1" } }))
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
    }
    statuses
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies_and_ipv6_counts_by_64() {
    let untrusting = spawn_roomy(None, &[]).await;
    let (email, _) = untrusting.register_user().await;
    // Rotating a forged X-Forwarded-For does not escape the per-pair lock.
    let forged = [
        "198.51.100.1",
        "198.51.100.2",
        "198.51.100.3",
        "198.51.100.4",
        "198.51.100.5",
    ];
    guess_forwarded(&untrusting, &email, &forged).await;
    let statuses = guess_forwarded(&untrusting, &email, &["198.51.100.6"]).await;
    assert_eq!(statuses, [StatusCode::TOO_MANY_REQUESTS]);

    let proxied = spawn_roomy(
        None,
        &[("ACCOUNTS_TRUSTED_PROXIES", "127.0.0.1/32, 10.0.0.0/8")],
    )
    .await;
    let (email, _) = proxied.register_user().await;
    // Behind a trusted proxy, the right-most untrusted entry is the client; the forged left-most
    // entry and our own proxies (10.x) are skipped.
    let hops: Vec<String> = (0..5)
        .map(|_| "6.6.6.6, 198.51.100.7, 10.1.2.3".to_string())
        .collect();
    let hops: Vec<&str> = hops.iter().map(String::as_str).collect();
    guess_forwarded(&proxied, &email, &hops).await;
    let locked = guess_forwarded(&proxied, &email, &["7.7.7.7, 198.51.100.7"]).await;
    assert_eq!(locked, [StatusCode::TOO_MANY_REQUESTS]);
    let elsewhere = guess_forwarded(&proxied, &email, &["198.51.100.8"]).await;
    assert_eq!(elsewhere, [StatusCode::UNAUTHORIZED]);

    // Five addresses of one IPv6 /64 are one client; the next /64 is another.
    let (email, _) = proxied.register_user().await;
    let same_64 = [
        "2001:db8:0:1::1",
        "2001:db8:0:1::2",
        "2001:db8:0:1:ffff::3",
        "2001:db8:0:1::4",
        "2001:db8:0:1::5",
    ];
    let statuses = guess_forwarded(&proxied, &email, &same_64).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED));
    let locked = guess_forwarded(&proxied, &email, &["2001:db8:0:1:abcd::9"]).await;
    assert_eq!(locked, [StatusCode::TOO_MANY_REQUESTS]);
    let next_64 = guess_forwarded(&proxied, &email, &["2001:db8:0:2::1"]).await;
    assert_eq!(next_64, [StatusCode::UNAUTHORIZED]);
}

#[tokio::test]
async fn registrations_per_client_are_limited_even_in_parallel() {
    let app = spawn_roomy(None, &[("ACCOUNTS_REGISTRATIONS_PER_HOUR", "3")]).await;
    for trial in 0..TRIALS {
        let from = client(Some(loopback(140 + trial)));
        let attempts = (0..8).map(|_| {
            let (app, from) = (&app, &from);
            async move {
                from.post(app.url("/api/users"))
                    .json(&registration(&unique_email(), PASSWORD))
                    .send()
                    .await
                    .unwrap()
            }
        });
        let responses = join_all(attempts).await;
        let statuses: Vec<StatusCode> = responses.iter().map(Response::status).collect();
        let counts = status_counts(&statuses);
        assert_eq!(counts.get(&201), Some(&3), "trial {trial}: {counts:?}");
        assert_eq!(counts.get(&429), Some(&5), "trial {trial}: {counts:?}");
        for response in responses.iter().filter(|r| r.status() == 429) {
            assert!((3000..=3600).contains(&retry_after(response)));
        }
    }

    // 0 turns the limit off (load tests).
    let unlimited = spawn_roomy(None, &[("ACCOUNTS_REGISTRATIONS_PER_HOUR", "0")]).await;
    for _ in 0..25 {
        unlimited.register_user().await;
    }
}

#[tokio::test]
async fn mail_requests_are_limited_per_client_across_addresses() {
    let app = spawn_roomy(None, &[]).await;
    for trial in 0..TRIALS {
        let from = client(Some(loopback(150 + trial)));
        // Five chains of five, half resends and half resets, each for a different address.
        let chains = (0..5).map(|chain| {
            let (app, from) = (&app, &from);
            async move {
                let mut statuses = Vec::new();
                for i in 0..5 {
                    let path = match (chain + i) % 2 {
                        0 => "/api/users/password/forgot",
                        _ => "/api/users/confirm/resend",
                    };
                    let response = from
                        .post(app.url(path))
                        .json(&json!({ "user": { "email": unique_email() } }))
                        .send()
                        .await
                        .unwrap();
                    statuses.push(response.status());
                }
                statuses
            }
        });
        let statuses: Vec<StatusCode> = join_all(chains).await.into_iter().flatten().collect();
        let counts = status_counts(&statuses);
        assert_eq!(counts.get(&202), Some(&20), "trial {trial}: {counts:?}");
        assert_eq!(counts.get(&429), Some(&5), "trial {trial}: {counts:?}");
    }
}
