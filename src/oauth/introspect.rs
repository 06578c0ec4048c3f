//! RFC 7662 token introspection.

use serde::Serialize;

use super::client::Client;
use super::issue::{AccessTokenClaims, Issuer};
use crate::store::{RevocationStore, StoreResult};

/// The response: `{"active": false}` or the token's claims with `active: true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IntrospectionResponse {
    /// Whether the token is valid now.
    pub active: bool,
    /// RFC 7662 2.2 `token_type`, when active.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    /// The claims, when active.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub claims: Option<AccessTokenClaims>,
}

impl IntrospectionResponse {
    /// `{"active": false}`: says nothing about why (RFC 7662 2.2).
    pub fn inactive() -> Self {
        Self {
            active: false,
            token_type: None,
            claims: None,
        }
    }
}

/// Introspect `token` for the authenticated `caller`.
///
/// Active means: a JWT we signed with a published key, the key's algorithm, `typ: at+jwt`, our
/// `iss`, not expired, `jti` not revoked. Confidential callers (resource servers) may introspect
/// any such token; a public client only its own, as node-oidc-provider does by default.
pub fn introspect(
    issuer: &Issuer<'_>,
    caller: &Client,
    token: &str,
    revocations: &dyn RevocationStore,
) -> StoreResult<IntrospectionResponse> {
    let Some(claims) = issuer.verify_access_token(token) else {
        return Ok(IntrospectionResponse::inactive());
    };
    if caller.is_public() && claims.client_id != caller.client_id {
        return Ok(IntrospectionResponse::inactive());
    }
    if revocations.is_jti_revoked(&claims.jti)? {
        return Ok(IntrospectionResponse::inactive());
    }
    Ok(IntrospectionResponse {
        active: true,
        token_type: Some("Bearer"),
        claims: Some(claims),
    })
}
