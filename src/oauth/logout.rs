//! OpenID Connect RP-Initiated Logout 1.0: which application asks, whether the request proves
//! who is signing out (`id_token_hint`), and where the browser may go afterwards.

use super::authorize::redirect_with;
use super::client::Client;
use super::issue::IdTokenClaims;
use super::request::Params;
use crate::clock::UnixTime;
use crate::crypto::jwt;
use crate::crypto::keys::KeySet;

/// The parameters the confirmation form carries from the logout request.
pub const CARRIED: &[&str] = &["client_id", "post_logout_redirect_uri", "state"];

/// A checked logout request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    /// The application: `client_id`, or the hint's audience.
    pub client_id: Option<String>,
    /// Whom a valid `id_token_hint` names.
    pub hint_sub: Option<String>,
    /// And when they signed in.
    pub hint_auth_time: Option<UnixTime>,
    /// Where to send the browser afterwards (checked against the client by [`Self::target`]).
    pub post_logout_redirect_uri: Option<String>,
    /// Returned with the redirect.
    pub state: Option<String>,
}

/// Why a logout request is refused; shown on a page, never redirected.
pub type LogoutError = &'static str;

impl LogoutRequest {
    /// Read the request. A hint counts only if it is an ID token we issued (expired is fine,
    /// Logout 1.0 section 2) and, with `client_id`, issued to that client.
    ///
    /// A hint that does not verify (signed by a key since retired, tampered with, garbage) is
    /// treated as no hint: the person is asked (DESIGN.md: "without a valid `id_token_hint` it
    /// asks the person to confirm first"), so an application holding an old ID token can still
    /// send its user here to sign out. Without `client_id` nothing then says which application
    /// sent the request, so its `post_logout_redirect_uri` and `state` are dropped too and the
    /// browser ends on our own page.
    pub fn parse(
        params: &Params,
        keys: &KeySet,
        issuer: &str,
        now: UnixTime,
    ) -> Result<Self, LogoutError> {
        let (hint, unverified) = match params.get("id_token_hint") {
            None => (None, false),
            Some(h) => {
                match jwt::verify_ignoring_expiry::<IdTokenClaims>(keys, h, "JWT", issuer, now) {
                    Ok(claims) => (Some(claims), false),
                    Err(_) => {
                        tracing::info!("logout: id_token_hint does not verify; asking instead");
                        (None, true)
                    }
                }
            }
        };
        let client_id = match (params.get("client_id"), &hint) {
            (Some(id), Some(h)) if id != h.aud => {
                return Err("The sign-out request names two different applications.")
            }
            (Some(id), _) => Some(id.to_owned()),
            (None, Some(h)) => Some(h.aud.clone()),
            (None, None) => None,
        };
        if params
            .get("state")
            .is_some_and(|s| s.len() > super::authorize::MAX_ECHOED)
        {
            return Err("The sign-out request's state is too long.");
        }
        let follow = !(unverified && client_id.is_none());
        Ok(Self {
            client_id,
            hint_auth_time: hint.as_ref().map(|h| h.auth_time),
            hint_sub: hint.map(|h| h.sub),
            post_logout_redirect_uri: params
                .get("post_logout_redirect_uri")
                .filter(|_| follow)
                .map(str::to_owned),
            state: params.get("state").filter(|_| follow).map(str::to_owned),
        })
    }

    /// Where to go after signing out: a `post_logout_redirect_uri` registered for the client,
    /// exactly, with `state`; `None` for our own signed-out page. `client` is the client named by
    /// the request, if it exists.
    pub fn target(&self, client: Option<&Client>) -> Result<Option<String>, LogoutError> {
        if self.client_id.is_some() && client.is_none() {
            return Err("The application that sent you here is not known.");
        }
        let Some(uri) = &self.post_logout_redirect_uri else {
            return Ok(None);
        };
        let Some(client) = client else {
            return Err("The sign-out request does not say which application sent it.");
        };
        if !client.post_logout_redirect_uris.iter().any(|u| u == uri) {
            return Err("The application asked to return to an address it has not registered.");
        }
        let pairs: Vec<(&str, &str)> = self.state.iter().map(|s| ("state", s.as_str())).collect();
        Ok(Some(redirect_with(uri, &pairs)))
    }

    /// Whether the request proves it comes for this sign-in (`user_id` at `auth_time`): only
    /// then is the session ended without asking. An ID token from an earlier sign-in, which any
    /// application that ever got one could replay, is not enough.
    pub fn names(&self, user_id: &str, auth_time: UnixTime) -> bool {
        self.hint_sub.as_deref() == Some(user_id) && self.hint_auth_time == Some(auth_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::client::AuthMethod;

    fn req(client_id: Option<&str>, uri: Option<&str>) -> LogoutRequest {
        LogoutRequest {
            client_id: client_id.map(str::to_owned),
            hint_sub: None,
            hint_auth_time: None,
            post_logout_redirect_uri: uri.map(str::to_owned),
            state: Some("s&1".into()),
        }
    }

    #[test]
    fn only_registered_uris_of_a_known_client_are_followed() {
        let mut c = Client::sample("app", AuthMethod::ClientSecretBasic, None);
        c.post_logout_redirect_uris = vec!["https://app.example/bye".into()];
        let ok = req(Some("app"), Some("https://app.example/bye"));
        assert_eq!(
            ok.target(Some(&c)).unwrap().as_deref(),
            Some("https://app.example/bye?state=s%261")
        );
        assert!(req(Some("app"), Some("https://app.example/bye/"))
            .target(Some(&c))
            .is_err());
        assert!(req(None, Some("https://app.example/bye"))
            .target(None)
            .is_err());
        assert!(req(Some("gone"), None).target(None).is_err());
        assert_eq!(req(Some("app"), None).target(Some(&c)), Ok(None));
        assert_eq!(req(None, None).target(None), Ok(None));
    }

    #[test]
    fn a_hint_that_does_not_verify_counts_as_none_and_client_ids_must_agree() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeySet::load_or_init(dir.path(), 600, 1_000).unwrap();
        // A hint that does not verify counts as none; without a client id its redirect goes.
        let p = Params::from_pairs([
            ("id_token_hint", "not.a.jwt"),
            ("post_logout_redirect_uri", "https://app.example/bye"),
            ("state", "s"),
        ]);
        let r = LogoutRequest::parse(&p, &keys, "https://id.example", 1_000).unwrap();
        assert_eq!((r.client_id, r.hint_sub), (None, None));
        assert_eq!((r.post_logout_redirect_uri, r.state), (None, None));
        // With one, the redirect is checked against that client as without a hint.
        let p = Params::from_pairs([
            ("id_token_hint", "not.a.jwt"),
            ("client_id", "app"),
            ("post_logout_redirect_uri", "https://app.example/bye"),
        ]);
        let r = LogoutRequest::parse(&p, &keys, "https://id.example", 1_000).unwrap();
        assert_eq!(r.client_id.as_deref(), Some("app"));
        assert_eq!(
            r.post_logout_redirect_uri.as_deref(),
            Some("https://app.example/bye")
        );
        assert!(!r.names("anyone", 1));
        let p = Params::from_pairs([("client_id", "app"), ("state", "x")]);
        let r = LogoutRequest::parse(&p, &keys, "https://id.example", 1_000).unwrap();
        assert_eq!(r.client_id.as_deref(), Some("app"));
        assert!(!r.names("anyone", 1));
        let hinted = LogoutRequest {
            hint_sub: Some("u".into()),
            hint_auth_time: Some(100),
            ..r
        };
        assert!(hinted.names("u", 100));
        assert!(
            !hinted.names("u", 200),
            "an older sign-in's ID token asks first"
        );
        assert!(!hinted.names("v", 100));
    }
}
