//! The accounts service: users, sessions, tokens, and the outbox that announces what happened.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod config;
pub mod db;
pub mod devices;
pub mod domain;
pub mod error;
pub mod hashing;
pub mod links;
pub mod openapi;
pub mod outbox;
pub mod pages;
pub mod recovery;
pub mod routes;
pub mod schema;
pub mod sessions;
pub mod signin;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod throttle;
pub mod tokens;
pub mod users;
