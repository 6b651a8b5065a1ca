//! The mailer's integration tests: real Postgres (a database per test), real RabbitMQ (a vhost per
//! test) and a real SMTP server on loopback (testkit's scriptable one).

mod admin;
mod database_faults;
mod delivery;
mod health;
mod helpers;
mod issuer;
mod operator;
mod poison;
mod settle;
mod smtp_faults;
mod templates;
