//! The accounts service: users, sessions, tokens, and the outbox that announces what happened.
//!
//! One folder per capability: `signin/` (how a user proves who they are and begins a session),
//! `sessions/`, `users/`, `auth/` (who calls, with which grants), `admin/`, `tokens/`, `throttle/`,
//! `outbox/` and `domain/` (the rules on values). `routes/` holds only the HTTP shape of each, and
//! `http/` what every route shares (errors, the client's address, request ids, body limits).

pub mod admin;
pub mod audit;
pub mod auth;
pub mod config;
pub mod db;
pub mod domain;
pub mod hashing;
pub mod http;
pub mod outbox;
pub mod routes;
pub mod schema;
pub mod sessions;
pub mod signin;
pub mod startup;
pub mod state;
pub mod throttle;
pub mod tokens;
pub mod users;
