//! Integration tests of the accounts service over HTTP, against real Postgres and RabbitMQ.

mod admin;
mod auth;
mod bad_input;
mod confirm;
mod contract;
mod cors;
mod database;
mod deactivated;
mod devices;
mod events;
mod hardening;
mod helpers;
mod identifiers;
mod mfa;
mod mfa_recovery;
mod openapi;
mod operators;
mod passkeys;
mod reauth;
mod recovery;
mod refusals;
mod register;
mod revocation;
mod sessions;
mod social;
mod throttle;
