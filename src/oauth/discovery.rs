//! OpenID Connect Discovery 1.0 / RFC 8414 metadata: only what is implemented.

use serde_json::{json, Value};

use crate::crypto::keys::SigningAlg;

/// Paths of the endpoints, relative to the issuer.
pub mod paths {
    /// Token endpoint.
    pub const TOKEN: &str = "/token";
    /// JWK Set.
    pub const JWKS: &str = "/jwks";
    /// RFC 7662.
    pub const INTROSPECT: &str = "/introspect";
    /// RFC 7009.
    pub const REVOKE: &str = "/revoke";
}

/// The metadata document for `issuer` (used for both well-known paths).
pub fn metadata(issuer: &str) -> Value {
    let base = issuer.trim_end_matches('/');
    let auth_methods = ["client_secret_basic", "client_secret_post", "none"];
    let algs: Vec<&str> = SigningAlg::ALL.iter().map(|a| a.as_str()).collect();
    json!({
        "issuer": issuer,
        "token_endpoint": format!("{base}{}", paths::TOKEN),
        "jwks_uri": format!("{base}{}", paths::JWKS),
        "introspection_endpoint": format!("{base}{}", paths::INTROSPECT),
        "revocation_endpoint": format!("{base}{}", paths::REVOKE),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "access_token_signing_alg_values_supported": algs,
    })
}
