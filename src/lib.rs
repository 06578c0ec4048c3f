//! Portcullis: an OAuth 2.0 / OpenID Connect authorization server.
//!
//! Layers, each ignorant of the one above: [`oauth`] (protocol rules, no HTTP, no database),
//! [`store`] (diesel over SQLite and PostgreSQL), [`http`] (actix-web handlers). Keys, config,
//! clock and the command line sit beside them.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod federation;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod mail;
pub mod metrics;
pub mod oauth;
pub mod store;
