//! RFC 6749 4.1.3: redeeming an authorization code, with PKCE (RFC 7636) and OIDC ID tokens.

use super::{person_tokens, refresh_expiry, PersonGrant};
use crate::crypto::opaque;
use crate::oauth::client::{Client, GrantType};
use crate::oauth::error::OAuthError;
use crate::oauth::issue::{IssuedAccessToken, Issuer, TokenResponse};
use crate::oauth::pkce;
use crate::oauth::request::AuthorizationCodeRequest;
use crate::oauth::scope::Scope;
use crate::store::{CodeStore, RefreshRecord, RefreshStore, RevocationStore, UserStore};

/// What the grant needs from storage.
pub trait CodeGrantStore: CodeStore + UserStore + RevocationStore + RefreshStore {}
impl<T: CodeStore + UserStore + RevocationStore + RefreshStore + ?Sized> CodeGrantStore for T {}

fn invalid(why: &str) -> OAuthError {
    OAuthError::invalid_grant(why)
}

/// Redeem `request.code` for `client`. A code is single-use: whoever presents it again (or loses
/// a race for it) gets `invalid_grant`, and the access token and refresh-token family of the
/// redemption are revoked (RFC 6749 4.1.2: the code may have been stolen). Clients registered
/// for the refresh grant get a refresh token, whether or not `offline_access` was asked for.
pub fn exchange<S: CodeGrantStore + ?Sized>(
    issuer: &Issuer<'_>,
    client: &Client,
    request: &AuthorizationCodeRequest,
    store: &S,
) -> Result<(TokenResponse, IssuedAccessToken), OAuthError> {
    if !client.allows_grant(GrantType::AuthorizationCode) {
        return Err(OAuthError::unauthorized_client(
            "the client is not registered for the authorization code grant",
        ));
    }
    let code_hash = opaque::hash_secret(&request.code);
    let record = store
        .find_code(&code_hash)?
        .ok_or_else(|| invalid("unknown code"))?;
    let revoke_redemption = || -> Result<OAuthError, OAuthError> {
        if let Some(r) = store.find_code(&code_hash)? {
            if let (Some(jti), Some(exp)) = (r.access_jti, r.access_exp) {
                store.revoke_jti(&jti, exp)?;
            }
            if let Some(family) = r.refresh_family {
                store.revoke_family(&family, issuer.now)?;
            }
            tracing::warn!(client_id = %client.client_id, "authorization code replayed; its tokens are revoked");
        }
        Ok(invalid("the code has already been used"))
    };
    if record.consumed_at.is_some() {
        return Err(revoke_redemption()?);
    }
    if record.client_id != client.client_id {
        return Err(invalid("the code was issued to another client"));
    }
    if record.expires_at <= issuer.now {
        return Err(invalid("the code has expired"));
    }
    if request.redirect_uri != record.redirect_uri {
        return Err(invalid(
            "redirect_uri does not match the authorization request",
        ));
    }
    match (&record.code_challenge, &request.code_verifier) {
        (Some(challenge), Some(verifier)) if pkce::verify(verifier, challenge) => {}
        (Some(_), Some(_)) => return Err(invalid("code_verifier does not match")),
        (Some(_), None) => return Err(invalid("code_verifier is required")),
        (None, Some(_)) => return Err(invalid("no code_challenge was sent for this code")),
        (None, None) => {}
    }
    // The person signed in moments ago: only an operator's lock stops the code now (a temporary
    // lockout from someone else's guesses does not), and so does losing the client's role.
    let user = store
        .find_user(&record.user_id)?
        .filter(|u| !u.locked)
        .ok_or_else(|| invalid("the user can no longer sign in"))?;
    if !client.admits(&user.roles) {
        return Err(invalid("the user may no longer use this client"));
    }
    super::check_resources(client, &request.resources)?;
    let scope = Scope::parse(&record.scope)?;
    let jti = opaque::random_id();
    // The first token of a new family.
    let refresh = client.allows_grant(GrantType::RefreshToken).then(|| {
        let token = opaque::random_token();
        let offline = scope.contains("offline_access");
        let first = RefreshRecord {
            token_hash: opaque::hash_secret(&token),
            family_id: opaque::random_id(),
            client_id: client.client_id.clone(),
            user_id: user.id.clone(),
            session_hash: record.session_hash.clone(),
            scope: record.scope.clone(),
            offline,
            auth_time: record.auth_time,
            amr: record.amr.clone(),
            issued_at: issuer.now,
            expires_at: refresh_expiry(issuer, offline, record.auth_time),
            used_at: None,
            revoked: false,
            access_jti: Some(jti.clone()),
            access_exp: Some(issuer.access_exp()),
        };
        (token, first)
    });
    let stored = refresh.as_ref().map(|(_, r)| r);
    if !store.consume_code(&code_hash, issuer.now, &jti, issuer.access_exp(), stored)? {
        return Err(revoke_redemption()?);
    }
    let grant = PersonGrant {
        client_id: &client.client_id,
        user: &user,
        scope: &scope,
        auth_time: record.auth_time,
        amr: &record.amr,
        nonce: record.nonce.as_deref(),
        resources: &request.resources,
    };
    person_tokens(issuer, &grant, jti, refresh.map(|(t, _)| t))
}
