//! The mailer service: consumes account events, renders Tera templates, sends them over SMTP,
//! retries transient failures on a durable schedule, and records what it gave up on.

pub mod admin;
pub mod config;
pub mod consumer;
pub mod db;
pub mod deliveries;
pub mod failed_sends;
pub mod operator;
pub mod redact;
pub mod routes;
pub mod schema;
pub mod sender;
pub mod smtp;
pub mod startup;
pub mod templates;
