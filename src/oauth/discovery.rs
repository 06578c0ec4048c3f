//! OpenID Connect Discovery 1.0 / RFC 8414 metadata: only what is implemented.

use serde_json::{json, Value};

use crate::crypto::keys::SigningAlg;
use crate::oauth::scope::OIDC_SCOPES;

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
    /// RFC 6749 3.1.
    pub const AUTHORIZE: &str = "/authorize";
    /// OIDC Core 5.3.
    pub const USERINFO: &str = "/userinfo";
    /// The login form posts here.
    pub const LOGIN: &str = "/login";
    /// The consent form posts here.
    pub const CONSENT: &str = "/consent";
    /// OIDC RP-Initiated Logout 1.0.
    pub const END_SESSION: &str = "/logout";
    /// The logout confirmation form posts here.
    pub const LOGOUT_CONFIRM: &str = "/logout/confirm";
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
        "authorization_endpoint": format!("{base}{}", paths::AUTHORIZE),
        "userinfo_endpoint": format!("{base}{}", paths::USERINFO),
        "end_session_endpoint": format!("{base}{}", paths::END_SESSION),
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": OIDC_SCOPES,
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "azp",
            "at_hash", "amr", "acr", "name", "preferred_username", "email",
            "phone_number", "address", "roles"],
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "authorization_response_iss_parameter_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "claims_parameter_supported": false,
        "token_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "access_token_signing_alg_values_supported": algs,
    })
}
