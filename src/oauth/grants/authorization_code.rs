//! RFC 6749 4.1.3: redeeming an authorization code, with PKCE (RFC 7636) and OIDC ID tokens.

use crate::crypto::opaque;
use crate::oauth::client::{Client, GrantType};
use crate::oauth::error::OAuthError;
use crate::oauth::issue::{Audience, IssuedAccessToken, Issuer, SignIn, TokenResponse};
use crate::oauth::pkce;
use crate::oauth::request::AuthorizationCodeRequest;
use crate::oauth::scope::Scope;
use crate::store::{CodeStore, RevocationStore, UserStore};

/// What the grant needs from storage.
pub trait CodeGrantStore: CodeStore + UserStore + RevocationStore {}
impl<T: CodeStore + UserStore + RevocationStore + ?Sized> CodeGrantStore for T {}

fn invalid(why: &str) -> OAuthError {
    OAuthError::invalid_grant(why)
}

/// Redeem `request.code` for `client`. A code is single-use: whoever presents it again (or loses
/// a race for it) gets `invalid_grant`, and the access token of the redemption is revoked
/// (RFC 6749 4.1.2: the code may have been stolen).
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
                tracing::warn!(client_id = %client.client_id, "authorization code replayed; its tokens are revoked");
            }
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
    if request.redirect_uri.as_deref() != Some(record.redirect_uri.as_str()) {
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
    let user = store
        .find_user(&record.user_id)?
        .filter(|u| !u.is_locked(issuer.now))
        .ok_or_else(|| invalid("the user can no longer sign in"))?;
    let jti = opaque::random_id();
    if !store.consume_code(&code_hash, issuer.now, &jti, issuer.access_exp())? {
        return Err(revoke_redemption()?);
    }
    let scope = Scope::parse(&record.scope)?;
    let person = SignIn {
        auth_time: record.auth_time,
        amr: &record.amr,
        roles: &user.roles,
    };
    let issued = issuer.access_token(
        &user.id,
        &client.client_id,
        &scope,
        Audience::One(issuer.issuer.to_owned()),
        Some(jti),
        Some(person),
    )?;
    let id_token = if scope.contains("openid") {
        Some(issuer.id_token(
            &user.id,
            &client.client_id,
            record.nonce.as_deref(),
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
        scope: (!scope.is_empty()).then(|| scope.to_string()),
        id_token,
    };
    Ok((response, issued))
}
