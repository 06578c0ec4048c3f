//! RFC 7662 token introspection, for access and refresh tokens.

use serde::Serialize;

use super::client::Client;
use super::issue::{AccessTokenClaims, Issuer};
use super::user::User;
use crate::clock::UnixTime;
use crate::crypto::opaque;
use crate::store::{ClientStore, RefreshRecord, StoreResult, TokenStore, UserStore};

/// How much earlier than a client's registration a token may say it was issued and still be
/// that client's: replicas' clocks may differ by this much.
const REGISTRATION_SKEW_SECS: UnixTime = 60;

/// Whether the client an access token was issued to is still registered, and was registered
/// before the token was issued: deleting a client ends its tokens, and registering the id again
/// does not bring them back.
pub(crate) fn client_holds<S: ClientStore + ?Sized>(
    store: &S,
    claims: &AccessTokenClaims,
) -> StoreResult<bool> {
    Ok(store
        .find_client(&claims.client_id)?
        .is_some_and(|c| registered_by(&c, claims)))
}

/// Whether `client` was registered by the time `claims` say their token was issued.
fn registered_by(client: &Client, claims: &AccessTokenClaims) -> bool {
    client.created_at <= claims.iat.saturating_add(REGISTRATION_SKEW_SECS)
}

/// The response: `{"active": false}` or the token's claims with `active: true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IntrospectionResponse {
    /// Whether the token is valid now.
    pub active: bool,
    /// RFC 7662 2.2 `token_type`, when active: `Bearer` or `refresh_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    /// An access token's claims, when active.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub claims: Option<AccessTokenClaims>,
    /// A refresh token's grant, when active.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshTokenInfo>,
}

/// What RFC 7662 2.2 says of an active refresh token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefreshTokenInfo {
    /// Our issuer.
    pub iss: String,
    /// The person.
    pub sub: String,
    /// The client it was issued to.
    pub client_id: String,
    /// The granted scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Issued at.
    pub iat: UnixTime,
    /// Expiry.
    pub exp: UnixTime,
    /// When the person signed in.
    pub auth_time: UnixTime,
}

impl IntrospectionResponse {
    /// `{"active": false}`: says nothing about why (RFC 7662 2.2).
    pub fn inactive() -> Self {
        Self {
            active: false,
            token_type: None,
            claims: None,
            refresh: None,
        }
    }
}

/// Which kind of token to look for first (RFC 7009 2.1 / RFC 7662 2.1 `token_type_hint`);
/// an unknown hint is ignored.
pub fn refresh_first(hint: Option<&str>) -> bool {
    hint == Some("refresh_token")
}

/// The refresh-token row for `token`, if it is one of ours, with its user.
pub fn find_refresh<S: TokenStore + ?Sized>(
    token: &str,
    store: &S,
) -> StoreResult<Option<(RefreshRecord, Option<User>)>> {
    // Our refresh tokens are 43 base64url characters; anything else is not worth a query.
    if token.len() != 43 || token.contains('.') {
        return Ok(None);
    }
    store.find_refresh(&opaque::hash_secret(token))
}

/// Introspect `token` for the authenticated `caller`.
///
/// An access token is active when it is a JWT we signed with a published key, the key's
/// algorithm, `typ: at+jwt`, our `iss`, not expired, `jti` not revoked, its client still
/// registered ([`client_holds`]), and (a person's token) its user neither locked by an operator
/// nor deleted; confidential callers
/// (resource servers) may introspect any, a public client only its own, as node-oidc-provider
/// does by default. A refresh token is active when it is current (not rotated, revoked or
/// expired), its user may still sign in and still has the roles the client requires, and the
/// caller is the client it was issued to.
pub fn introspect<S: TokenStore + UserStore + ClientStore + ?Sized>(
    issuer: &Issuer<'_>,
    caller: &Client,
    token: &str,
    hint: Option<&str>,
    store: &S,
) -> StoreResult<IntrospectionResponse> {
    let refresh = || -> StoreResult<Option<IntrospectionResponse>> {
        let Some((r, user)) = find_refresh(token, store)? else {
            return Ok(None);
        };
        let current = !r.revoked
            && r.used_at.is_none()
            && r.expires_at > issuer.now
            && r.client_id == caller.client_id
            // The refresh grant refuses it (and ends the family) once the person lacks a role
            // the client requires.
            && user.is_some_and(|u| !u.locked && caller.admits(&u.roles));
        if !current {
            return Ok(Some(IntrospectionResponse::inactive()));
        }
        Ok(Some(IntrospectionResponse {
            active: true,
            token_type: Some("refresh_token"),
            claims: None,
            refresh: Some(RefreshTokenInfo {
                iss: issuer.issuer.to_owned(),
                sub: r.user_id,
                client_id: r.client_id,
                scope: (!r.scope.is_empty()).then_some(r.scope),
                iat: r.issued_at,
                exp: r.expires_at,
                auth_time: r.auth_time,
            }),
        }))
    };
    if refresh_first(hint) {
        if let Some(found) = refresh()? {
            return Ok(found);
        }
    }
    if let Some(claims) = issuer.verify_access_token(token) {
        if caller.is_public() && claims.client_id != caller.client_id {
            return Ok(IntrospectionResponse::inactive());
        }
        // The caller was just loaded: when the token is its own, that is the lookup.
        let holds = if claims.client_id == caller.client_id {
            registered_by(caller, &claims)
        } else {
            client_holds(store, &claims)?
        };
        if !holds || store.is_jti_revoked(&claims.jti)? {
            return Ok(IntrospectionResponse::inactive());
        }
        // A person's token ends with an operator's lock or the account's deletion, as at
        // userinfo (machine tokens have no person: their `sub` is the client).
        if claims.auth_time.is_some() && store.find_user(&claims.sub)?.is_none_or(|u| u.locked) {
            return Ok(IntrospectionResponse::inactive());
        }
        return Ok(IntrospectionResponse {
            active: true,
            token_type: Some("Bearer"),
            claims: Some(claims),
            refresh: None,
        });
    }
    if !refresh_first(hint) {
        if let Some(found) = refresh()? {
            return Ok(found);
        }
    }
    Ok(IntrospectionResponse::inactive())
}
