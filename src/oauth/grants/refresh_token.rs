//! RFC 6749 6: refreshing, with rotation and reuse detection (RFC 9700 4.14.2).
//!
//! Every use returns a new refresh token and retires the presented one. Presenting a retired
//! token again, even by losing a race for it, revokes the whole family and the access tokens it
//! issued: either the client or an attacker holds a copy, and the server cannot tell which.
//!
//! One exception keeps a lost response from costing the client its grant (the connection, or the
//! database's reply to a committed rotation, can fail after the rotation happened): within
//! `tokens.refresh_retry_grace_secs` of a rotation, while the token it issued has never been
//! used, a confidential client may present the rotated token once more. That unseen token is
//! then retired, not deleted, so if someone does hold it, its use counts as reuse and revokes the
//! family: theft is still detected, one step later.

use super::{person_tokens, PersonGrant};
use crate::crypto::opaque;
use crate::oauth::client::{Client, GrantType};
use crate::oauth::error::OAuthError;
use crate::oauth::issue::{IssuedAccessToken, Issuer, TokenResponse};
use crate::oauth::login::SESSION_ABSOLUTE_SECS;
use crate::oauth::request::RefreshTokenRequest;
use crate::oauth::scope::Scope;
use crate::oauth::user::User;
use crate::store::{NextRefresh, RefreshRecord, RefreshStore, RevocationStore};

/// What the grant needs from storage.
pub trait RefreshGrantStore: RefreshStore + RevocationStore {}
impl<T: RefreshStore + RevocationStore + ?Sized> RefreshGrantStore for T {}

/// The `error_description` when a rotated refresh token comes back (its family is revoked).
pub const REUSED: &str = "the refresh token has already been used";

fn invalid(why: &str) -> OAuthError {
    OAuthError::invalid_grant(why)
}

/// Refresh for `client`: check the token, narrow the scope if asked, rotate atomically, sign.
pub fn exchange<S: RefreshGrantStore + ?Sized>(
    issuer: &Issuer<'_>,
    client: &Client,
    request: &RefreshTokenRequest,
    store: &S,
) -> Result<(TokenResponse, IssuedAccessToken), OAuthError> {
    if !client.allows_grant(GrantType::RefreshToken) {
        return Err(OAuthError::unauthorized_client(
            "the client is not registered for the refresh_token grant",
        ));
    }
    // Checked before the token rotates: a refused request leaves it current.
    super::check_resources(client, &request.resources)?;
    let hash = opaque::hash_secret(&request.refresh_token);
    let jti = opaque::random_id();
    let token = opaque::random_token();
    let next = NextRefresh {
        token_hash: opaque::hash_secret(&token),
        issued_at: issuer.now,
        expires_at: issuer.now + i64::from(issuer.tokens.refresh_token_ttl_secs),
        online_lifetime_secs: SESSION_ABSOLUTE_SECS,
        access_jti: jti.clone(),
        access_exp: issuer.access_exp(),
    };
    // The usual case, a current token and no narrowing, is one atomic store call.
    let rotated = match &request.scope {
        None => store.rotate_refresh(&hash, &client.client_id, issuer.now, &next)?,
        Some(_) => None,
    };
    let (record, user, scope) = match rotated {
        Some((record, user)) => {
            let scope = Scope::parse(&record.scope)?;
            (record, user, scope)
        }
        None => {
            // Find out why it did not rotate (and say so), or narrow the scope and rotate.
            let (record, user, scope) = check(issuer, client, request, &hash, store)?;
            let rotated = if record.used_at.is_some() {
                let since = retry_since(issuer);
                let retried =
                    store.rerotate_refresh(&hash, &client.client_id, issuer.now, since, &next)?;
                if retried.is_some() {
                    tracing::info!(
                        client_id = %client.client_id,
                        "refresh retried within the grace period; the unseen token is retired"
                    );
                }
                retried
            } else {
                store.rotate_refresh(&hash, &client.client_id, issuer.now, &next)?
            };
            if rotated.is_none() {
                // Someone rotated it between our read and our write.
                return Err(reused(store, &record.family_id, client, issuer)?);
            }
            (record, user, scope)
        }
    };
    if !client.admits(&user.roles) {
        // The person lost the role the client requires: the family ends here.
        store.revoke_family(&record.family_id, issuer.now)?;
        return Err(invalid("the user may no longer use this client"));
    }
    let grant = PersonGrant {
        client_id: &client.client_id,
        user: &user,
        scope: &scope,
        auth_time: record.auth_time,
        amr: &record.amr,
        nonce: None,
        resources: &request.resources,
    };
    person_tokens(issuer, &grant, jti, Some(token))
}

/// A retired token presented again: revoke its family.
fn reused<S: RefreshGrantStore + ?Sized>(
    store: &S,
    family_id: &str,
    client: &Client,
    issuer: &Issuer<'_>,
) -> Result<OAuthError, OAuthError> {
    store.revoke_family(family_id, issuer.now)?;
    tracing::warn!(client_id = %client.client_id, "refresh token reused; its family is revoked");
    Ok(invalid(REUSED))
}

/// The rules one by one: which one a token breaks, or the scope it may have.
fn check<S: RefreshGrantStore + ?Sized>(
    issuer: &Issuer<'_>,
    client: &Client,
    request: &RefreshTokenRequest,
    hash: &str,
    store: &S,
) -> Result<(RefreshRecord, User, Scope), OAuthError> {
    let (record, user) = store
        .find_refresh(hash)?
        .ok_or_else(|| invalid("unknown refresh token"))?;
    if record.client_id != client.client_id {
        return Err(invalid("the refresh token was issued to another client"));
    }
    if record.revoked {
        return Err(invalid("the refresh token has been revoked"));
    }
    match record.used_at {
        // A retry within the grace period: `exchange` retires the unseen successor or, if it
        // was used meanwhile, treats this as reuse. Any other failure of a used token is reuse
        // too, so that a thief cannot probe one without ending its family.
        Some(used) if may_retry(issuer, client, used) => {
            match rest_of_check(issuer, request, &record, user) {
                Ok((user, scope)) => Ok((record, user, scope)),
                Err(_) => Err(reused(store, &record.family_id, client, issuer)?),
            }
        }
        Some(_) => Err(reused(store, &record.family_id, client, issuer)?),
        None => {
            let (user, scope) = rest_of_check(issuer, request, &record, user)?;
            Ok((record, user, scope))
        }
    }
}

/// Whether a token rotated at `used` may be presented again now: within
/// `tokens.refresh_retry_grace_secs` (strictly), and only by a confidential client, whose
/// refresh tokens are useless to a thief without its secret. A public client's second use is
/// always reuse (RFC 9700 4.14.2: rotation is how theft from public clients is detected).
fn may_retry(issuer: &Issuer<'_>, client: &Client, used: i64) -> bool {
    issuer.tokens.refresh_retry_grace_secs > 0 && !client.is_public() && used > retry_since(issuer)
}

/// A token rotated after this moment is within the retry grace period.
fn retry_since(issuer: &Issuer<'_>) -> i64 {
    issuer.now - i64::from(issuer.tokens.refresh_retry_grace_secs)
}

/// Expiry, scope and the user, for a token that is current (or being retried).
fn rest_of_check(
    issuer: &Issuer<'_>,
    request: &RefreshTokenRequest,
    record: &RefreshRecord,
    user: Option<User>,
) -> Result<(User, Scope), OAuthError> {
    if record.expires_at <= issuer.now {
        return Err(invalid("the refresh token has expired"));
    }
    let granted = Scope::parse(&record.scope)?;
    let scope = match &request.scope {
        Some(asked) if asked.iter().any(|s| !granted.contains(s)) => {
            return Err(OAuthError::invalid_scope(
                "the requested scope exceeds the one granted",
            ))
        }
        Some(asked) => asked.clone(),
        None => granted,
    };
    // An operator's lock ends refreshing; a temporary lockout after wrong passwords does not,
    // or anyone could end other people's sessions by guessing.
    let user = user
        .filter(|u| !u.locked)
        .ok_or_else(|| invalid("the user can no longer sign in"))?;
    Ok((user, scope))
}
