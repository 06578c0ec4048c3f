//! The protocol layer: typed requests, rules and decisions. No HTTP framework, no database.

pub mod authorize;
pub mod client;
pub mod client_auth;
pub mod discovery;
pub mod error;
pub mod grants;
pub mod introspect;
pub mod issue;
pub mod login;
pub mod logout;
pub mod pkce;
pub mod request;
pub mod reset;
pub mod revoke;
pub mod scope;
pub mod totp;
pub mod user;
pub mod userinfo;

pub use error::{ErrorCode, OAuthError};
