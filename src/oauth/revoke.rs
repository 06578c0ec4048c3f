//! RFC 7009 token revocation.

use super::client::Client;
use super::error::OAuthError;
use super::issue::Issuer;
use crate::store::RevocationStore;

/// What revocation did; the HTTP answer is 200 for both (RFC 7009 2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// The token was ours, the caller's, and is now revoked.
    Revoked,
    /// Unknown, invalid or expired: nothing to do.
    Ignored,
}

/// Revoke `token` for the authenticated `caller`. `token_type_hint` only orders the search
/// (RFC 7009 2.1), and until refresh tokens exist there is one kind to search, so it is ignored.
/// A valid token issued to another client is refused with `unauthorized_client` and left alone
/// (RFC 7009 2.1: the server verifies the token was issued to the client making the request and
/// otherwise refuses the request).
pub fn revoke(
    issuer: &Issuer<'_>,
    caller: &Client,
    token: &str,
    revocations: &dyn RevocationStore,
) -> Result<Revocation, OAuthError> {
    match issuer.verify_access_token(token) {
        Some(claims) if claims.client_id == caller.client_id => {
            revocations.revoke_jti(&claims.jti, claims.exp)?;
            Ok(Revocation::Revoked)
        }
        Some(_) => Err(OAuthError::unauthorized_client(
            "the token was not issued to this client",
        )),
        None => Ok(Revocation::Ignored),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenConfig;
    use crate::crypto::keys::KeySet;
    use crate::oauth::client::AuthMethod;
    use crate::oauth::grants::client_credentials;
    use crate::oauth::introspect::introspect;
    use crate::oauth::request::ClientCredentialsRequest;
    use crate::store::memory::MemoryStore;

    fn client(id: &str, method: AuthMethod) -> Client {
        Client::sample(id, method, None)
    }

    #[test]
    fn revoke_own_token_only_and_introspection_follows() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeySet::load_or_init(dir.path(), 600, 1_000).unwrap();
        let tokens = TokenConfig::default();
        let at = |now| Issuer {
            issuer: "https://id.example.com",
            keys: &keys,
            tokens: &tokens,
            now,
        };
        let store = MemoryStore::default();
        let a = client("a", AuthMethod::ClientSecretBasic);
        let b = client("b", AuthMethod::ClientSecretBasic);
        let public = client("p", AuthMethod::None);
        let req = ClientCredentialsRequest {
            scope: None,
            resources: vec![],
        };
        let (resp, _) = client_credentials::exchange(&at(1_000), &a, &req).unwrap();
        let t = resp.access_token.as_str();

        let active = introspect(&at(1_001), &b, t, &store).unwrap();
        assert!(active.active, "a resource server may introspect");
        assert_eq!(active.claims.unwrap().client_id, "a");
        assert!(!introspect(&at(1_001), &public, t, &store).unwrap().active);
        assert!(
            !introspect(&at(1_600), &a, t, &store).unwrap().active,
            "expired"
        );
        assert!(
            !introspect(&at(1_001), &a, "garbage", &store)
                .unwrap()
                .active
        );

        assert_eq!(
            revoke(&at(1_001), &b, t, &store).unwrap_err().code,
            crate::oauth::error::ErrorCode::UnauthorizedClient
        );
        assert!(introspect(&at(1_001), &a, t, &store).unwrap().active);
        assert_eq!(
            revoke(&at(1_001), &a, t, &store).unwrap(),
            Revocation::Revoked
        );
        assert!(!introspect(&at(1_001), &a, t, &store).unwrap().active);
        assert_eq!(
            revoke(&at(1_001), &a, "x.y.z", &store).unwrap(),
            Revocation::Ignored
        );
    }
}
