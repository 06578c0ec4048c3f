//! Integration tests: each starts the real `portcullis` binary on a free port and drives it over
//! HTTP and its command line, on SQLite and (when reachable) PostgreSQL.

mod common;

mod audit;
mod browser;
mod cli;
mod config;
mod cors;
mod discovery;
mod faults;
mod federation;
mod introspection;
mod logging;
mod logout;
mod mfa;
mod refresh;
mod relying_party;
mod replicas;
mod reset;
mod robustness;
mod roles;
mod schema;
mod shutdown;
mod signin;
mod token;
mod users;
