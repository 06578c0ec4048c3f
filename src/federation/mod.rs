//! Federation: "Sign in with Google" (OpenID Connect, [`google`]) and "Sign in with GitHub"
//! (OAuth 2.0, [`github`]), and the rules that map an upstream identity to a local account.
//!
//! Account rules (DESIGN.md "Federated users"): an upstream identity is keyed by provider and
//! subject and maps to exactly one local user, created on first sign-in as `google:<sub>` /
//! `github:<id>`. An email is used only when the provider says it is verified, and even then
//! never signs anyone in to an existing local account by itself: it only offers to link that
//! account, which takes the account's password.

pub mod github;
pub mod google;
pub mod http;

use crate::clock::UnixTime;
use crate::config::Config;
use crate::crypto::opaque;
use crate::oauth::user::User;
use crate::store::{FederationStore, StoreResult};

/// Clock leeway when checking upstream ID tokens (DESIGN.md "Clock leeway").
pub const LEEWAY_SECS: i64 = 60;

/// An upstream identity provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Google, over OpenID Connect.
    Google,
    /// GitHub, over OAuth 2.0 and its REST API.
    Github,
}

impl Provider {
    /// The name in paths, usernames and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Google => "google",
            Provider::Github => "github",
        }
    }

    /// The name people read.
    pub fn label(self) -> &'static str {
        match self {
            Provider::Google => "Google",
            Provider::Github => "GitHub",
        }
    }

    /// From [`Provider::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "google" => Some(Provider::Google),
            "github" => Some(Provider::Github),
            _ => None,
        }
    }
}

/// Who the upstream provider says signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamIdentity {
    /// Which provider.
    pub provider: Provider,
    /// Its stable id for the person (Google `sub`, GitHub numeric id).
    pub subject: String,
    /// Who vouched for the subject: the OpenID issuer, or GitHub's API base.
    pub issuer: String,
    /// Their name there.
    pub name: Option<String>,
    /// Their email, only when the provider has verified it.
    pub verified_email: Option<String>,
}

impl UpstreamIdentity {
    /// What the provider says about the person, made fit to store: a name loses its control
    /// characters and is cut to 200 characters (an empty one is none); an email with control
    /// characters or whitespace, or longer than 254 bytes (RFC 5321 4.5.3.1.3), is dropped.
    /// (A NUL made PostgreSQL refuse the row, and a very long email its index: every attempt
    /// was a 503.)
    pub fn tidied(mut self) -> Self {
        self.name = self.name.and_then(|n| {
            let kept: String = n
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect::<String>()
                .trim()
                .to_owned();
            (!kept.is_empty()).then_some(kept)
        });
        self.verified_email = self.verified_email.filter(|e| {
            !e.is_empty()
                && e.len() <= 254
                && !e.chars().any(|c| c.is_control() || c.is_whitespace())
        });
        self
    }
}

/// Why an upstream sign-in failed. The strings are for the log: they never hold a secret, a
/// token or a response body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FederationError {
    /// The person declined at the provider (`error=access_denied`).
    #[error("the person declined at the provider")]
    Denied,
    /// The provider answered with an error, or with something unusable.
    #[error("upstream error: {0}")]
    Upstream(String),
    /// The provider did not answer within the timeout.
    #[error("upstream timeout")]
    Timeout,
    /// The ID token failed verification.
    #[error("upstream ID token rejected: {0}")]
    InvalidIdToken(String),
}

impl From<http::HttpError> for FederationError {
    fn from(e: http::HttpError) -> Self {
        match e {
            http::HttpError::Timeout => FederationError::Timeout,
            http::HttpError::Transport(m) => FederationError::Upstream(m),
        }
    }
}

/// The start of an upstream sign-in: where to send the browser, and what to keep for the
/// callback.
#[derive(Debug, Clone)]
pub struct Started {
    /// The provider's authorization URL with our request.
    pub url: String,
    /// The `state` sent (random, 128 bits or more).
    pub state: String,
    /// The PKCE `code_verifier` for the token request.
    pub pkce_verifier: String,
    /// The OIDC `nonce` (empty for GitHub).
    pub nonce: String,
}

/// The configured upstream providers.
#[derive(Debug, Default)]
pub struct Upstreams {
    /// "Sign in with Google", when `[upstream.google]` is present.
    pub google: Option<google::Google>,
    /// "Sign in with GitHub", when `[upstream.github]` is present.
    pub github: Option<github::Github>,
}

impl Upstreams {
    /// The providers `config` enables, with callbacks under its issuer.
    pub fn from_config(config: &Config) -> Self {
        let http = http::UpstreamHttp::new();
        let callback = |p: Provider| format!("{}/login/{}/callback", config.base_url(), p.as_str());
        Self {
            google: config
                .upstream
                .google
                .clone()
                .map(|c| google::Google::new(c, callback(Provider::Google), http.clone())),
            github: config
                .upstream
                .github
                .clone()
                .map(|c| github::Github::new(c, callback(Provider::Github), http.clone())),
        }
    }

    /// Whether `provider` is configured.
    pub fn enabled(&self, provider: Provider) -> bool {
        match provider {
            Provider::Google => self.google.is_some(),
            Provider::Github => self.github.is_some(),
        }
    }

    /// Begin a sign-in at `provider` (blocking: Google's discovery may be fetched).
    pub fn start(&self, provider: Provider) -> Option<Result<Started, FederationError>> {
        // Google's discovery document and keys: two calls, one budget.
        let deadline = std::time::Instant::now() + http::TIMEOUT;
        http::within(deadline, || match provider {
            Provider::Google => self.google.as_ref().map(google::Google::start),
            Provider::Github => self.github.as_ref().map(github::Github::start),
        })
    }

    /// Finish a sign-in at `provider` with the `code` from its callback (blocking).
    pub fn finish(
        &self,
        provider: Provider,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
        now: UnixTime,
    ) -> Option<Result<UpstreamIdentity, FederationError>> {
        let deadline = std::time::Instant::now() + http::TIMEOUT;
        let found = http::within(deadline, || match provider {
            Provider::Google => self
                .google
                .as_ref()
                .map(|g| g.finish(code, pkce_verifier, nonce, now)),
            Provider::Github => self.github.as_ref().map(|g| g.finish(code, pkce_verifier)),
        });
        found.map(|r| r.map(UpstreamIdentity::tidied))
    }
}

/// What an upstream identity means here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    /// It maps to this user already.
    Known(Box<User>),
    /// Unknown, but its verified email is this local account's: linking is offered, behind
    /// that account's password.
    LinkOffer(Box<User>),
    /// Unknown: a new user is created.
    New,
    /// Known, but recorded from another issuer (the provider was reconfigured): the same
    /// subject there is not the same person, so nobody signs in.
    OtherIssuer,
}

/// Apply the account rules to `identity`.
pub fn find_account(
    store: &dyn FederationStore,
    identity: &UpstreamIdentity,
) -> StoreResult<Account> {
    if let Some(known) = store.find_identity(identity.provider.as_str(), &identity.subject)? {
        if known.issuer != identity.issuer {
            return Ok(Account::OtherIssuer);
        }
        return Ok(Account::Known(Box::new(known.user)));
    }
    if let Some(email) = &identity.verified_email {
        if let Some(user) = store
            .find_password_users_by_email(email)?
            .into_iter()
            .next()
        {
            return Ok(Account::LinkOffer(Box::new(user)));
        }
    }
    Ok(Account::New)
}

/// The local user created for `identity` on its first sign-in: `google:<sub>` /
/// `github:<id>`, no password, name and verified email copied.
pub fn new_user(identity: &UpstreamIdentity, now: UnixTime) -> User {
    User {
        id: opaque::random_id(),
        username: format!("{}:{}", identity.provider.as_str(), identity.subject),
        email: identity.verified_email.clone(),
        name: identity.name.clone(),
        phone_number: None,
        address: None,
        roles: Vec::new(),
        password_hash: None,
        locked: false,
        failed_logins: 0,
        locked_until: None,
        created_at: now,
    }
}

/// An upstream subject we accept: non-empty, printable ASCII, at most 255 characters (OIDC
/// Core 2 caps `sub` at 255 ASCII characters).
pub fn valid_subject(s: &str) -> bool {
    (1..=255).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_profiles_are_tidied_before_they_are_stored() {
        let tidy = |name: &str, email: &str| {
            let i = UpstreamIdentity {
                name: Some(name.into()),
                verified_email: Some(email.into()),
                ..identity(None)
            }
            .tidied();
            (i.name, i.verified_email)
        };
        assert_eq!(
            tidy("Ada\u{0}Lovelace\n", "ada@example.com"),
            (Some("AdaLovelace".into()), Some("ada@example.com".into()))
        );
        assert_eq!(
            tidy(&"é".repeat(300), "x@example.com")
                .0
                .unwrap()
                .chars()
                .count(),
            200
        );
        assert_eq!(tidy("\u{7}", "a\u{0}@example.com"), (None, None));
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(tidy("A", &long).1, None);
        assert_eq!(tidy("A", "a b@example.com").1, None);
    }

    fn identity(email: Option<&str>) -> UpstreamIdentity {
        UpstreamIdentity {
            provider: Provider::Google,
            subject: "1234".into(),
            issuer: "https://accounts.google.com".into(),
            name: Some("Ada".into()),
            verified_email: email.map(str::to_owned),
        }
    }

    #[test]
    fn new_users_are_named_after_provider_and_subject() {
        let u = new_user(&identity(Some("ada@example.com")), 7);
        assert_eq!(u.username, "google:1234");
        assert_eq!(u.email.as_deref(), Some("ada@example.com"));
        assert_eq!(u.name.as_deref(), Some("Ada"));
        assert!(u.password_hash.is_none());
        let gh = UpstreamIdentity {
            provider: Provider::Github,
            ..identity(None)
        };
        assert_eq!(new_user(&gh, 7).username, "github:1234");
        assert_ne!(new_user(&gh, 7).id, new_user(&gh, 7).id);
    }

    #[test]
    fn subjects_are_bounded_printable_ascii() {
        assert!(valid_subject("110169484474386276334"));
        assert!(!valid_subject(""));
        assert!(!valid_subject("a b"));
        assert!(!valid_subject(&"x".repeat(256)));
        assert!(!valid_subject("caf\u{e9}"));
    }

    #[test]
    fn providers_round_trip() {
        for p in [Provider::Google, Provider::Github] {
            assert_eq!(Provider::parse(p.as_str()), Some(p));
        }
        assert_eq!(Provider::parse("facebook"), None);
    }
}
