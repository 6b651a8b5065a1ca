//! Micro-benchmarks of the costs that bound accounts: one bcrypt hash at the configured cost,
//! one access-token verification with the JWKS key (no database), and a repeat verification
//! of the same token (remembered). Prints one JSON object.
//!
//! `cargo bench -p accounts --bench primitives` (ACCOUNTS_BCRYPT_COST, default 12).

use std::time::Instant;

use accounts::tokens::{Purpose, SigningKeys, TokenIssuer};

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let cost: u32 = std::env::var("ACCOUNTS_BCRYPT_COST")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(12);
    let hash_ms = median(
        (0..7)
            .map(|_| {
                let started = Instant::now();
                bcrypt::non_truncating_hash("correct horse battery 1", cost).expect("bcrypt");
                started.elapsed().as_secs_f64() * 1000.0
            })
            .collect(),
    );

    let dir = std::env::temp_dir().join(format!("bench-keys-{}", std::process::id()));
    let none: &[&std::path::Path] = &[];
    let keys = SigningKeys::load(&dir.join("key.pem"), true, none).expect("a key");
    let issuer = TokenIssuer::new(keys, "http://localhost:8080".into());
    let mut claims = issuer.claims(Purpose::Access, uuid::Uuid::new_v4());
    claims.ver = Some(0);
    let token = issuer.sign(&claims).token;
    let batch = 2_000;
    let verify_us = median(
        (0..15)
            .map(|_| {
                let started = Instant::now();
                for _ in 0..batch {
                    issuer
                        .verify_signed(&token, Purpose::Access)
                        .expect("valid");
                }
                started.elapsed().as_secs_f64() * 1e6 / f64::from(batch)
            })
            .collect(),
    );
    // The same token again: what a repeat request pays once the signature check is remembered.
    let verify_memo_us = median(
        (0..15)
            .map(|_| {
                let started = Instant::now();
                for _ in 0..batch {
                    issuer.verify(&token, Purpose::Access).expect("valid");
                }
                started.elapsed().as_secs_f64() * 1e6 / f64::from(batch)
            })
            .collect(),
    );
    let sign_us = median(
        (0..15)
            .map(|_| {
                let started = Instant::now();
                for _ in 0..batch {
                    issuer.sign(&claims);
                }
                started.elapsed().as_secs_f64() * 1e6 / f64::from(batch)
            })
            .collect(),
    );
    let _ = std::fs::remove_dir_all(dir);
    println!(
        "{{\"bcrypt_cost\": {cost}, \"bcrypt_hash_ms\": {hash_ms:.2}, \"jwt_verify_us\": {verify_us:.2}, \"jwt_verify_remembered_us\": {verify_memo_us:.2}, \"jwt_sign_us\": {sign_us:.2}}}"
    );
}
