//! OIDC Core 5.3: the userinfo endpoint's claims, released by scope.

use serde_json::{json, Map, Value};

use super::error::{ErrorCode, OAuthError};
use super::issue::Issuer;
use crate::store::{ClientStore, RevocationStore, UserStore};

/// The claims for the person behind `access_token`: `sub` always, `name` and
/// `preferred_username` with `profile`, `email` with `email`, `phone_number` with `phone`,
/// `address` (`{"formatted": ...}`, OIDC Core 5.1.1) with `address`; claims the person does
/// not have are left out. The token must be one of ours, for us (`aud` the issuer), live,
/// unrevoked, a person's, carry `openid`, and its client must still be registered.
pub fn userinfo<S: RevocationStore + UserStore + ClientStore + ?Sized>(
    issuer: &Issuer<'_>,
    access_token: &str,
    store: &S,
) -> Result<Value, OAuthError> {
    let invalid = || OAuthError::new(ErrorCode::InvalidToken, "the access token is not valid");
    let claims = issuer
        .verify_access_token(access_token)
        // A token for another resource (RFC 8707) is not for this one (RFC 9068 4).
        .filter(|c| c.aud.contains(issuer.issuer))
        .ok_or_else(invalid)?;
    if store.is_jti_revoked(&claims.jti)? || !super::introspect::client_holds(store, &claims)? {
        return Err(invalid());
    }
    let scope: Vec<&str> = claims.scope.as_deref().unwrap_or("").split(' ').collect();
    if !scope.contains(&"openid") {
        return Err(OAuthError::new(
            ErrorCode::InsufficientScope,
            "the access token was not granted the openid scope",
        ));
    }
    // Machine tokens have no person behind them.
    if claims.auth_time.is_none() {
        return Err(invalid());
    }
    let user = store
        .find_user(&claims.sub)?
        // An operator's lock ends the token; a temporary lockout after wrong passwords does not,
        // or anyone could cut people off by guessing their password.
        .filter(|u| !u.locked)
        .ok_or_else(invalid)?;
    let mut out = Map::new();
    out.insert("sub".into(), json!(user.id));
    if scope.contains(&"profile") {
        out.insert("preferred_username".into(), json!(user.username));
        if let Some(name) = &user.name {
            out.insert("name".into(), json!(name));
        }
    }
    if scope.contains(&"email") {
        if let Some(email) = &user.email {
            out.insert("email".into(), json!(email));
        }
    }
    if scope.contains(&"phone") {
        if let Some(phone) = &user.phone_number {
            out.insert("phone_number".into(), json!(phone));
        }
    }
    if scope.contains(&"address") {
        if let Some(address) = &user.address {
            out.insert("address".into(), json!({ "formatted": address }));
        }
    }
    Ok(Value::Object(out))
}
