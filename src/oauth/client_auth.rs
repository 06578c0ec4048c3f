//! Client authentication at the token, introspection and revocation endpoints (RFC 6749 2.3).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::client::{valid_client_id, AuthMethod, Client};
use super::error::OAuthError;
use super::request::Params;
use crate::crypto::opaque;

/// The credentials a request presented, before they are checked.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `Authorization: Basic` (client_secret_basic).
    Basic {
        /// Client id.
        client_id: String,
        /// Secret.
        secret: String,
    },
    /// `client_id` and `client_secret` in the body (client_secret_post).
    Post {
        /// Client id.
        client_id: String,
        /// Secret.
        secret: String,
    },
    /// `client_id` alone: a public client.
    None {
        /// Client id.
        client_id: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        write!(f, "{}({})", self.method().as_str(), self.client_id())
    }
}

impl Credentials {
    /// The client id presented.
    pub fn client_id(&self) -> &str {
        match self {
            Credentials::Basic { client_id, .. }
            | Credentials::Post { client_id, .. }
            | Credentials::None { client_id } => client_id,
        }
    }

    /// The method used.
    pub fn method(&self) -> AuthMethod {
        match self {
            Credentials::Basic { .. } => AuthMethod::ClientSecretBasic,
            Credentials::Post { .. } => AuthMethod::ClientSecretPost,
            Credentials::None { .. } => AuthMethod::None,
        }
    }

    /// Whether the request used HTTP Basic (for `WWW-Authenticate` on a 401).
    pub fn used_basic(&self) -> bool {
        matches!(self, Credentials::Basic { .. })
    }

    /// Read credentials from the `Authorization` header value and the body parameters.
    /// RFC 6749 2.3: a client must not use more than one method in a request.
    pub fn extract(authorization: Option<&str>, params: &Params) -> Result<Self, OAuthError> {
        let body_id = params.get("client_id");
        let body_secret = params.get("client_secret");
        if let Some(header) = authorization {
            let basic =
                || OAuthError::invalid_client("malformed Basic credentials").with_basic(true);
            let (scheme, value) = header.trim().split_once(' ').ok_or_else(basic)?;
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(OAuthError::invalid_client(
                    "client authentication must use the Basic scheme",
                )
                .with_basic(true));
            }
            let decoded = STANDARD.decode(value.trim()).map_err(|_| basic())?;
            let decoded = String::from_utf8(decoded).map_err(|_| basic())?;
            let (id, secret) = decoded.split_once(':').ok_or_else(basic)?;
            // RFC 6749 2.3.1: both parts are form-urlencoded before being joined.
            let id = form_decode(id);
            let secret = form_decode(secret);
            if !valid_client_id(&id) {
                // No such client can exist; also keeps NUL bytes and the like from the database.
                return Err(fail_unknown(true));
            }
            if body_secret.is_some() {
                return Err(OAuthError::invalid_request(
                    "use one client authentication method, not Basic and client_secret",
                ));
            }
            if body_id.is_some_and(|b| b != id) {
                return Err(OAuthError::invalid_request(
                    "client_id does not match the Basic credentials",
                ));
            }
            return Ok(Credentials::Basic {
                client_id: id,
                secret,
            });
        }
        if body_id.is_some_and(|id| !valid_client_id(id)) {
            return Err(fail_unknown(false));
        }
        match (body_id, body_secret) {
            (Some(id), Some(secret)) => Ok(Credentials::Post {
                client_id: id.to_owned(),
                secret: secret.to_owned(),
            }),
            (Some(id), None) => Ok(Credentials::None {
                client_id: id.to_owned(),
            }),
            (None, _) => Err(
                OAuthError::invalid_client("client authentication is required").with_basic(true),
            ),
        }
    }

    /// Check the credentials against the registered client (`None` when the id is unknown).
    /// Every failure is the same `invalid_client`, so that the response does not tell an unknown
    /// id from a wrong secret.
    pub fn authenticate<'c>(&self, client: Option<&'c Client>) -> Result<&'c Client, OAuthError> {
        let fail = || {
            OAuthError::invalid_client("client authentication failed").with_basic(self.used_basic())
        };
        let secret = match self {
            Credentials::Basic { secret, .. } | Credentials::Post { secret, .. } => Some(secret),
            Credentials::None { .. } => None,
        };
        let Some(client) = client else {
            if let Some(s) = secret {
                // Same work as for a known client.
                let _ = opaque::verify_secret(s, DUMMY_HASH);
            }
            return Err(fail());
        };
        if client.auth_method != self.method() {
            return Err(fail());
        }
        match (secret, &client.secret_hash) {
            (None, None) if client.is_public() => Ok(client),
            (Some(s), Some(hash)) if opaque::verify_secret(s, hash) => Ok(client),
            _ => Err(fail()),
        }
    }
}

fn fail_unknown(used_basic: bool) -> OAuthError {
    OAuthError::invalid_client("client authentication failed").with_basic(used_basic)
}

const DUMMY_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn form_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::error::ErrorCode;

    fn client(method: AuthMethod, secret: Option<&str>) -> Client {
        Client::sample("c1", method, secret)
    }

    fn basic(id: &str, secret: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
    }

    #[test]
    fn basic_is_form_decoded() {
        let c =
            Credentials::extract(Some(&basic("c%7E1", "s+e%25cret")), &Params::default()).unwrap();
        assert_eq!(
            c,
            Credentials::Basic {
                client_id: "c~1".into(),
                secret: "s e%cret".into()
            }
        );
        // An id no client can have is refused before any lookup.
        let e = Credentials::extract(Some(&basic("c%3A1", "x")), &Params::default()).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidClient);
    }

    #[test]
    fn two_methods_is_invalid_request() {
        let p = Params::from_pairs([("client_secret", "x")]);
        let e = Credentials::extract(Some(&basic("c1", "s")), &p).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn registered_method_and_secret_must_match() {
        let c = client(AuthMethod::ClientSecretBasic, Some("s3cret"));
        let good = Credentials::extract(Some(&basic("c1", "s3cret")), &Params::default()).unwrap();
        assert!(good.authenticate(Some(&c)).is_ok());
        let wrong = Credentials::extract(Some(&basic("c1", "nope")), &Params::default()).unwrap();
        let e = wrong.authenticate(Some(&c)).unwrap_err();
        assert_eq!((e.code, e.used_basic), (ErrorCode::InvalidClient, true));
        // Right secret, but sent in the body while the client is registered for Basic.
        let post = Credentials::extract(
            None,
            &Params::from_pairs([("client_id", "c1"), ("client_secret", "s3cret")]),
        )
        .unwrap();
        assert_eq!(
            post.authenticate(Some(&c)).unwrap_err().code,
            ErrorCode::InvalidClient
        );
        // A confidential client cannot skip its secret.
        let none = Credentials::extract(None, &Params::from_pairs([("client_id", "c1")])).unwrap();
        assert!(none.authenticate(Some(&c)).is_err());
        assert!(good.authenticate(None).is_err());
        let public = client(AuthMethod::None, None);
        assert!(none.authenticate(Some(&public)).is_ok());
    }

    #[test]
    fn malformed_basic() {
        for h in [
            "Basic",
            "Basic !!!",
            "Bearer abc",
            &format!("Basic {}", STANDARD.encode("nocolon")),
        ] {
            let e = Credentials::extract(Some(h), &Params::default()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidClient, "{h}");
        }
    }

    #[test]
    fn debug_hides_secret() {
        let c = Credentials::Basic {
            client_id: "c1".into(),
            secret: "topsecret".into(),
        };
        assert!(!format!("{c:?}").contains("topsecret"));
    }
}
