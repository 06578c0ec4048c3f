//! RFC 7009 token revocation.

use super::client::Client;
use super::error::OAuthError;
use super::introspect::{find_refresh, refresh_first};
use super::issue::Issuer;
use crate::store::TokenStore;

/// What revocation did; the HTTP answer is 200 for both (RFC 7009 2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// The token was ours, the caller's, and is now revoked; its `sub` (for the audit log).
    Revoked {
        /// The user id (or, for a machine token, the client id).
        sub: String,
        /// `refresh_token` or `access_token`.
        kind: &'static str,
    },
    /// Unknown, invalid or expired: nothing to do.
    Ignored,
}

fn foreign() -> OAuthError {
    OAuthError::unauthorized_client("the token was not issued to this client")
}

/// Revoke `token` for the authenticated `caller`. `token_type_hint` only orders the search
/// (RFC 7009 2.1). An access token is revoked by its `jti`; a refresh token takes its whole
/// family and the access tokens issued from it (RFC 7009 2.1: tokens of the same grant). A valid
/// token issued to another client is refused with `unauthorized_client` and left alone (the
/// server verifies the token was issued to the client making the request and otherwise refuses
/// the request).
pub fn revoke<S: TokenStore + ?Sized>(
    issuer: &Issuer<'_>,
    caller: &Client,
    token: &str,
    hint: Option<&str>,
    store: &S,
) -> Result<Revocation, OAuthError> {
    let refresh = || -> Result<Option<Revocation>, OAuthError> {
        let Some((r, _)) = find_refresh(token, store)? else {
            return Ok(None);
        };
        if r.client_id != caller.client_id {
            // An invalid token (revoked, used, expired) is no error (RFC 7009 2.2), whoever
            // holds it; only a current one of another client's is refused.
            let current = !r.revoked && r.used_at.is_none() && r.expires_at > issuer.now;
            return if current {
                Err(foreign())
            } else {
                Ok(Some(Revocation::Ignored))
            };
        }
        store.revoke_family(&r.family_id, issuer.now)?;
        Ok(Some(Revocation::Revoked {
            sub: r.user_id,
            kind: "refresh_token",
        }))
    };
    if refresh_first(hint) {
        if let Some(done) = refresh()? {
            return Ok(done);
        }
    }
    match issuer.verify_access_token(token) {
        Some(claims) if claims.client_id == caller.client_id => {
            store.revoke_jti(&claims.jti, claims.exp)?;
            return Ok(Revocation::Revoked {
                sub: claims.sub,
                kind: "access_token",
            });
        }
        Some(_) => return Err(foreign()),
        None => {}
    }
    if !refresh_first(hint) {
        if let Some(done) = refresh()? {
            return Ok(done);
        }
    }
    Ok(Revocation::Ignored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::UnixTime;
    use crate::config::DatabaseUrl;
    use crate::config::TokenConfig;
    use crate::crypto::keys::KeySet;
    use crate::oauth::client::AuthMethod;
    use crate::oauth::grants::client_credentials;
    use crate::oauth::introspect::introspect;
    use crate::oauth::request::ClientCredentialsRequest;
    use crate::store::db::DbStore;
    use crate::store::ClientStore;

    fn client(id: &str, method: AuthMethod) -> Client {
        Client::sample(id, method, None)
    }

    /// Keys, token settings and a migrated SQLite store in a temporary folder.
    struct Fixture {
        _dir: tempfile::TempDir,
        keys: KeySet,
        tokens: TokenConfig,
        store: DbStore,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let keys = KeySet::load_or_init(dir.path(), 600, 1_000).unwrap();
            let store = DbStore::open_single(DatabaseUrl::Sqlite(dir.path().join("t.db")));
            store.migrate().unwrap();
            Self {
                _dir: dir,
                keys,
                tokens: TokenConfig::default(),
                store,
            }
        }

        fn at(&self, now: UnixTime) -> Issuer<'_> {
            Issuer {
                issuer: "https://id.example.com",
                keys: &self.keys,
                tokens: &self.tokens,
                now,
            }
        }
    }

    #[test]
    fn revoke_own_token_only_and_introspection_follows() {
        let f = Fixture::new();
        let at = |now| f.at(now);
        let store = &f.store;
        let a = client("a", AuthMethod::ClientSecretBasic);
        let b = client("b", AuthMethod::ClientSecretBasic);
        let public = client("p", AuthMethod::None);
        for c in [&a, &b, &public] {
            store.create_client(c).unwrap();
        }
        let req = ClientCredentialsRequest {
            scope: None,
            resources: vec![],
        };
        let (resp, _) = client_credentials::exchange(&at(1_000), &a, &req).unwrap();
        let t = resp.access_token.as_str();

        let active = introspect(&at(1_001), &b, t, None, store).unwrap();
        assert!(active.active, "a resource server may introspect");
        assert_eq!(active.claims.unwrap().client_id, "a");
        assert!(
            !introspect(&at(1_001), &public, t, None, store)
                .unwrap()
                .active
        );
        assert!(
            !introspect(&at(1_600), &a, t, None, store).unwrap().active,
            "expired"
        );
        assert!(
            !introspect(&at(1_001), &a, "garbage", None, store)
                .unwrap()
                .active
        );

        assert_eq!(
            revoke(&at(1_001), &b, t, None, store).unwrap_err().code,
            crate::oauth::error::ErrorCode::UnauthorizedClient
        );
        assert!(introspect(&at(1_001), &a, t, None, store).unwrap().active);
        assert_eq!(
            revoke(&at(1_001), &a, t, None, store).unwrap(),
            Revocation::Revoked {
                sub: a.client_id.clone(),
                kind: "access_token"
            }
        );
        assert!(!introspect(&at(1_001), &a, t, None, store).unwrap().active);
        assert_eq!(
            revoke(&at(1_001), &a, "x.y.z", None, store).unwrap(),
            Revocation::Ignored
        );
    }

    #[test]
    fn a_deleted_clients_tokens_are_inactive_even_if_its_id_returns() {
        let f = Fixture::new();
        let at = |now| f.at(now);
        let store = &f.store;
        let (machine, rs) = (
            client("machine", AuthMethod::ClientSecretBasic),
            client("rs", AuthMethod::ClientSecretBasic),
        );
        store.create_client(&machine).unwrap();
        store.create_client(&rs).unwrap();
        let req = ClientCredentialsRequest {
            scope: None,
            resources: vec![],
        };
        let (resp, _) = client_credentials::exchange(&at(1_000), &machine, &req).unwrap();
        let t = resp.access_token.as_str();
        assert!(introspect(&at(1_001), &rs, t, None, store).unwrap().active);

        assert!(store.delete_client("machine").unwrap());
        assert!(!introspect(&at(1_001), &rs, t, None, store).unwrap().active);

        // The id registered again later is another client: the old token stays dead.
        let again = Client {
            created_at: 1_100,
            ..machine.clone()
        };
        store.create_client(&again).unwrap();
        assert!(!introspect(&at(1_101), &rs, t, None, store).unwrap().active);
        // Within the clock skew allowed between replicas, it is the same registration.
        store.delete_client("machine").unwrap();
        let skewed = Client {
            created_at: 1_030,
            ..machine
        };
        store.create_client(&skewed).unwrap();
        assert!(introspect(&at(1_031), &rs, t, None, store).unwrap().active);
    }
}
