//! The accounts service: users, sessions, tokens, and the outbox that announces what happened.

pub mod auth;
pub mod client;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod hashing;
pub mod http_policy;
pub mod openapi;
pub mod outbox;
pub mod pages;
pub mod routes;
pub mod schema;
pub mod sessions;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod throttle;
pub mod tokens;
pub mod users;
