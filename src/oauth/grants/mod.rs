//! One module per grant type, and what the grants of a signed-in person share.

pub mod authorization_code;
pub mod client_credentials;
pub mod refresh_token;

use super::client::Client;
use super::error::OAuthError;
use super::issue::{Audience, IssuedAccessToken, Issuer, SignIn, TokenResponse};
use super::login::SESSION_ABSOLUTE_SECS;
use super::scope::Scope;
use super::user::User;
use crate::clock::UnixTime;

/// The grant a person gave a client, as the code and refresh grants carry it.
pub struct PersonGrant<'a> {
    /// The client.
    pub client_id: &'a str,
    /// The person.
    pub user: &'a User,
    /// The scope the tokens carry.
    pub scope: &'a Scope,
    /// When they signed in.
    pub auth_time: UnixTime,
    /// How.
    pub amr: &'a [String],
    /// The authorization request's nonce (none on refresh, OIDC Core 12.2).
    pub nonce: Option<&'a str>,
    /// The access token's audience: these resources (see [`check_resources`]), or the issuer.
    pub resources: &'a [String],
}

/// RFC 8707 2: every requested resource must be registered for the client, else
/// `invalid_target`.
pub fn check_resources(client: &Client, resources: &[String]) -> Result<(), OAuthError> {
    if resources.iter().any(|r| !client.resources.contains(r)) {
        return Err(OAuthError::invalid_target(
            "the requested resource is not registered for this client",
        ));
    }
    Ok(())
}

/// The access token's `aud`: the requested resources, or else the issuer.
pub fn audience(issuer: &Issuer<'_>, resources: &[String]) -> Audience {
    if resources.is_empty() {
        Audience::One(issuer.issuer.to_owned())
    } else {
        Audience::from_list(resources.to_vec())
    }
}

/// Sign the access token (with the `jti` the caller recorded) and, for `openid`, the ID token.
pub fn person_tokens(
    issuer: &Issuer<'_>,
    grant: &PersonGrant<'_>,
    jti: String,
    refresh_token: Option<String>,
) -> Result<(TokenResponse, IssuedAccessToken), OAuthError> {
    let person = SignIn {
        auth_time: grant.auth_time,
        amr: grant.amr,
        // The `roles` claim is released with the `roles` scope only.
        roles: grant
            .scope
            .contains("roles")
            .then_some(grant.user.roles.as_slice()),
    };
    let issued = issuer.access_token(
        &grant.user.id,
        grant.client_id,
        grant.scope,
        audience(issuer, grant.resources),
        Some(jti),
        Some(person),
    )?;
    let id_token = if grant.scope.contains("openid") {
        Some(issuer.id_token(
            &grant.user.id,
            grant.client_id,
            grant.nonce,
            person,
            &issued.token,
        )?)
    } else {
        None
    };
    let response = TokenResponse {
        access_token: issued.token.clone(),
        token_type: "Bearer".into(),
        expires_in: issuer.tokens.access_token_ttl_secs,
        scope: (!grant.scope.is_empty()).then(|| grant.scope.to_string()),
        id_token,
        refresh_token,
    };
    Ok((response, issued))
}

/// When a refresh token issued now expires: `tokens.refresh_token_ttl_secs` from now, and
/// without `offline_access` no later than the sign-in session could last.
pub fn refresh_expiry(issuer: &Issuer<'_>, offline: bool, auth_time: UnixTime) -> UnixTime {
    let ttl = issuer.now + i64::from(issuer.tokens.refresh_token_ttl_secs);
    if offline {
        ttl
    } else {
        ttl.min(auth_time + SESSION_ABSOLUTE_SECS)
    }
}
