//! The authorization request (RFC 6749 4.1.1, OIDC Core 3.1.2.1): validation, and what to do
//! next given the browser's session and remembered consent.

use super::client::{Client, GrantType};
use super::error::{ErrorCode, OAuthError};
use super::pkce;
use super::request::Params;
use super::scope::{Scope, OIDC_SCOPES};
use crate::clock::UnixTime;

/// A validated authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationRequest {
    /// The client.
    pub client_id: String,
    /// Exactly one of the client's registered redirect URIs.
    pub redirect_uri: String,
    /// Requested scopes the client may have (others are dropped).
    pub scope: Scope,
    /// Opaque client state, echoed back.
    pub state: Option<String>,
    /// OIDC nonce, put in the ID token.
    pub nonce: Option<String>,
    /// PKCE S256 challenge.
    pub code_challenge: Option<String>,
    /// `prompt=login`.
    pub prompt_login: bool,
    /// `prompt=consent`.
    pub prompt_consent: bool,
    /// `prompt=none`.
    pub prompt_none: bool,
    /// `max_age` in seconds.
    pub max_age: Option<i64>,
    /// Pre-fills the username.
    pub login_hint: Option<String>,
    /// `id_token_hint` as sent (checked by the caller, who has the keys).
    pub id_token_hint: Option<String>,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeError {
    /// The client or redirect URI cannot be trusted: show an error page, never redirect
    /// (RFC 6749 4.1.2.1).
    Page(String),
    /// Redirect the error to the client (with `state` and `iss`).
    Redirect {
        /// Where.
        redirect_uri: String,
        /// What.
        error: OAuthError,
        /// Echoed state.
        state: Option<String>,
    },
}

/// The longest `state`, `nonce` or `login_hint` accepted (bytes): `state` comes back in the
/// Location header, `nonce` in the ID token, `login_hint` in the login page.
pub const MAX_ECHOED: usize = 2048;

/// The longest `scope` or `id_token_hint` accepted (bytes): they are carried through the
/// sign-in pages and stored with an upstream sign-in while it is under way.
pub const MAX_CARRIED: usize = 8192;

/// Parameters carried through the login and consent forms, so that the request can be
/// validated again from scratch when they are posted.
pub const CARRIED: &[&str] = &[
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "prompt",
    "max_age",
    "login_hint",
    "id_token_hint",
];

impl AuthorizationRequest {
    /// Validate `params` for `client` (`None` if `client_id` named no client).
    pub fn validate(params: &Params, client: Option<&Client>) -> Result<Self, AuthorizeError> {
        let Some(client_id) = params.get("client_id") else {
            return Err(AuthorizeError::Page(
                "The request names no client (client_id).".into(),
            ));
        };
        let Some(client) = client.filter(|c| c.client_id == client_id) else {
            return Err(AuthorizeError::Page(
                "The application is not registered here.".into(),
            ));
        };
        // RFC 9700 2.1: exact string match against a registered URI (OIDC makes it required),
        // but for the port of a loopback IP address (RFC 8252 7.3).
        let redirect_uri = match params.get("redirect_uri") {
            Some(uri)
                if client
                    .redirect_uris
                    .iter()
                    .any(|r| redirect_matches(r, uri)) =>
            {
                uri.to_owned()
            }
            Some(_) => {
                return Err(AuthorizeError::Page(
                    "The redirect URI is not registered for this application.".into(),
                ))
            }
            None => {
                return Err(AuthorizeError::Page(
                    "The request has no redirect URI (redirect_uri).".into(),
                ))
            }
        };
        let state = params.get("state").map(str::to_owned);
        // Echoed in the Location header: beyond this, proxies refuse the redirect (a 502).
        if state.as_ref().is_some_and(|s| s.len() > MAX_ECHOED) {
            return Err(AuthorizeError::Page(format!(
                "The request's state is too long (over {MAX_ECHOED} characters)."
            )));
        }
        let fail = |code: ErrorCode, why: &str| AuthorizeError::Redirect {
            redirect_uri: redirect_uri.clone(),
            error: OAuthError::new(code, why),
            state: state.clone(),
        };
        // The code goes back in the query only (OAuth 2.0 Multiple Response Type Encoding
        // Practices 2.1): a client asking for another mode is told so, not answered in the query.
        if params.get("response_mode").is_some_and(|m| m != "query") {
            return Err(fail(
                ErrorCode::InvalidRequest,
                "only response_mode=query is supported",
            ));
        }
        for name in ["nonce", "login_hint"] {
            if params.get(name).is_some_and(|v| v.len() > MAX_ECHOED) {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    &format!("{name} is too long (over {MAX_ECHOED} characters)"),
                ));
            }
        }
        for name in ["scope", "id_token_hint"] {
            if params.get(name).is_some_and(|v| v.len() > MAX_CARRIED) {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    &format!("{name} is too long (over {MAX_CARRIED} characters)"),
                ));
            }
        }
        if params.get("request").is_some() {
            return Err(fail(
                ErrorCode::RequestNotSupported,
                "request objects are not supported",
            ));
        }
        if params.get("request_uri").is_some() {
            return Err(fail(
                ErrorCode::RequestUriNotSupported,
                "request_uri is not supported",
            ));
        }
        match params.get("response_type") {
            Some("code") => {}
            Some(_) => {
                return Err(fail(
                    ErrorCode::UnsupportedResponseType,
                    "only response_type=code is supported",
                ))
            }
            None => {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    "missing parameter 'response_type'",
                ))
            }
        }
        if !client.allows_grant(GrantType::AuthorizationCode) {
            return Err(fail(
                ErrorCode::UnauthorizedClient,
                "the client is not registered for the authorization code grant",
            ));
        }
        // RFC 7636: S256 only; a challenge without a method would mean `plain`.
        let code_challenge = match (
            params.get("code_challenge"),
            params.get("code_challenge_method"),
        ) {
            (None, None) => None,
            (Some(c), Some("S256")) if pkce::valid_challenge(c) => Some(c.to_owned()),
            (Some(_), Some("S256")) => {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    "code_challenge is malformed",
                ))
            }
            (_, Some(_)) | (Some(_), None) => {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    "code_challenge_method must be S256 (plain is not supported)",
                ))
            }
        };
        if client.is_public() && code_challenge.is_none() {
            return Err(fail(
                ErrorCode::InvalidRequest,
                "PKCE (S256) is required for public clients",
            ));
        }
        // Settled details: scopes the client is not registered for are dropped.
        let asked = Scope::parse(params.get("scope").unwrap_or_default()).map_err(|e| {
            AuthorizeError::Redirect {
                redirect_uri: redirect_uri.clone(),
                error: e,
                state: state.clone(),
            }
        })?;
        let kept: Vec<&str> = asked
            .iter()
            .filter(|s| OIDC_SCOPES.contains(s) || client.scopes.iter().any(|c| c == s))
            .collect();
        let scope = Scope::from_tokens(&kept);
        let prompts: Vec<&str> = params
            .get("prompt")
            .unwrap_or_default()
            .split(' ')
            .filter(|p| !p.is_empty())
            .collect();
        if prompts.contains(&"none") && prompts.len() > 1 {
            return Err(fail(
                ErrorCode::InvalidRequest,
                "prompt=none cannot be combined",
            ));
        }
        if let Some(p) = prompts
            .iter()
            .find(|p| !matches!(**p, "none" | "login" | "consent" | "select_account"))
        {
            let _ = p;
            return Err(fail(ErrorCode::InvalidRequest, "unsupported prompt value"));
        }
        let max_age = match params.get("max_age") {
            None => None,
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n >= 0 => Some(n),
                _ => {
                    return Err(fail(
                        ErrorCode::InvalidRequest,
                        "max_age must be a non-negative integer",
                    ))
                }
            },
        };
        Ok(Self {
            client_id: client.client_id.clone(),
            redirect_uri,
            scope,
            state,
            nonce: params.get("nonce").map(str::to_owned),
            code_challenge,
            // Choosing another account is signing in again (OIDC Core 3.1.2.1).
            prompt_login: prompts.contains(&"login") || prompts.contains(&"select_account"),
            prompt_consent: prompts.contains(&"consent"),
            prompt_none: prompts.contains(&"none"),
            max_age,
            login_hint: params.get("login_hint").map(str::to_owned),
            id_token_hint: params.get("id_token_hint").map(str::to_owned),
        })
    }

    /// An error to redirect back to the client.
    pub fn error(&self, code: ErrorCode, why: &str) -> AuthorizeError {
        AuthorizeError::Redirect {
            redirect_uri: self.redirect_uri.clone(),
            error: OAuthError::new(code, why),
            state: self.state.clone(),
        }
    }
}

/// What the browser's sign-in looks like to the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedIn {
    /// When the person signed in.
    pub auth_time: UnixTime,
    /// Whether they signed in during this very request (after the login form).
    pub just_now: bool,
    /// Whether an `id_token_hint` names someone else.
    pub hint_mismatch: bool,
}

/// The next step of an authorization request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Show the login page.
    Login,
    /// Show the consent page.
    Consent,
    /// Issue a code and redirect.
    IssueCode,
}

/// Decide the next step (OIDC Core 3.1.2.3 / 3.1.2.4). `approved` are the scopes this person
/// has approved for the client, `None` if they never approved it at all.
pub fn decide(
    req: &AuthorizationRequest,
    client: &Client,
    signed_in: Option<SignedIn>,
    approved: Option<&[String]>,
    now: UnixTime,
) -> Result<Next, AuthorizeError> {
    let needs_login = match signed_in {
        None => true,
        // OIDC Core 3.1.2.1: signed in just now, but not as the hint's subject.
        Some(s) if s.just_now && s.hint_mismatch => {
            return Err(req.error(
                ErrorCode::LoginRequired,
                "the signed-in user is not the one id_token_hint names",
            ))
        }
        Some(s) if s.just_now => false,
        Some(s) => {
            s.hint_mismatch
                || req.prompt_login
                || req.max_age.is_some_and(|m| now - s.auth_time > m)
        }
    };
    if needs_login {
        return if req.prompt_none {
            Err(req.error(ErrorCode::LoginRequired, "the user is not signed in"))
        } else {
            Ok(Next::Login)
        };
    }
    // prompt=consent always asks; otherwise first-party clients never do, and others do until
    // every requested scope (or, with none, the client itself) has been approved.
    let needs_consent = req.prompt_consent
        || (!client.skip_consent
            && approved.is_none_or(|a| req.scope.iter().any(|s| !a.iter().any(|x| x == s))));
    if needs_consent {
        return if req.prompt_none {
            Err(req.error(
                ErrorCode::ConsentRequired,
                "the user has not approved this application",
            ))
        } else {
            Ok(Next::Consent)
        };
    }
    Ok(Next::IssueCode)
}

/// How long after signing in a consent form may still be posted for a request that demanded
/// a fresh sign-in (`prompt=login`, `max_age`).
pub const CONSENT_WINDOW_SECS: i64 = 600;

/// Whether a posted consent may issue a code, or the person must sign in again: the sign-in
/// requirements of the request hold at the time of the POST too.
pub fn may_consent(
    req: &AuthorizationRequest,
    s: SignedIn,
    now: UnixTime,
) -> Result<bool, AuthorizeError> {
    if s.hint_mismatch {
        return Err(req.error(
            ErrorCode::LoginRequired,
            "the signed-in user is not the one id_token_hint names",
        ));
    }
    let demands_fresh = req.prompt_login || req.max_age.is_some_and(|m| now - s.auth_time > m);
    Ok(!demands_fresh || now - s.auth_time <= CONSENT_WINDOW_SECS)
}

/// `redirect_uri` with `pairs` added to its query (RFC 6749 3.1.2: keep the existing query).
pub fn redirect_with(redirect_uri: &str, pairs: &[(&str, &str)]) -> String {
    // Nothing to add: the URI exactly as registered (no empty `?` appended).
    if pairs.is_empty() {
        return redirect_uri.to_owned();
    }
    match url::Url::parse(redirect_uri) {
        Ok(mut url) => {
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in pairs {
                    q.append_pair(k, v);
                }
            }
            url.to_string()
        }
        // Registered URIs are validated absolute URLs; this cannot happen for them.
        Err(_) => redirect_uri.to_owned(),
    }
}

/// Whether the requested `uri` is the registered one: the same string, or, for a registered
/// http URI on a loopback IP address (127.0.0.1, [::1]), the same but for any port: a native
/// app listens on the port the system gives it (RFC 8252 7.3, RFC 9700 4.1.3). `localhost` is
/// matched exactly (RFC 8252 8.3).
pub fn redirect_matches(registered: &str, uri: &str) -> bool {
    registered == uri
        || matches!(
            (loopback_parts(registered), loopback_parts(uri)),
            (Some(r), Some(u)) if r == u
        )
}

/// An `http` URI on 127.0.0.1 or [::1] as (scheme and host, everything after the port), the
/// port (1 to 65535, or none) left out; compared as written, without normalising.
fn loopback_parts(uri: &str) -> Option<(&str, &str)> {
    let host = ["http://127.0.0.1", "http://[::1]"]
        .into_iter()
        .find(|h| uri.starts_with(h))?;
    let rest = &uri[host.len()..];
    let rest = match rest.strip_prefix(':') {
        Some(p) => {
            let digits = p.bytes().take_while(u8::is_ascii_digit).count();
            match p[..digits].parse::<u16>() {
                Ok(port) if port > 0 && digits <= 5 => &p[digits..],
                _ => return None,
            }
        }
        None => rest,
    };
    (rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')).then_some((host, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::client::AuthMethod;

    fn client(public: bool) -> Client {
        let mut c = Client::sample(
            "app",
            if public {
                AuthMethod::None
            } else {
                AuthMethod::ClientSecretBasic
            },
            None,
        );
        c.grant_types = vec![GrantType::AuthorizationCode];
        c.redirect_uris = vec!["https://app.example.com/cb".into()];
        c.scopes = vec!["api:read".into()];
        c
    }

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn redirects_keep_the_registered_uri_and_its_query() {
        assert_eq!(
            redirect_with("https://rp.example/bye", &[]),
            "https://rp.example/bye"
        );
        assert_eq!(
            redirect_with("https://rp.example/cb?a=1", &[("state", "x y")]),
            "https://rp.example/cb?a=1&state=x+y"
        );
    }

    #[test]
    fn loopback_redirects_match_on_any_port_and_nothing_else() {
        for (registered, requested) in [
            ("http://127.0.0.1/cb", "http://127.0.0.1:53219/cb"),
            ("http://127.0.0.1:8000/cb", "http://127.0.0.1:9/cb"),
            ("http://127.0.0.1:8000/cb", "http://127.0.0.1/cb"),
            ("http://[::1]/cb?x=1", "http://[::1]:65535/cb?x=1"),
            ("http://127.0.0.1", "http://127.0.0.1:1"),
            ("https://app.example.com/cb", "https://app.example.com/cb"),
        ] {
            assert!(redirect_matches(registered, requested), "{requested}");
        }
        for (registered, requested) in [
            ("http://127.0.0.1/cb", "http://127.0.0.1:53219/cb/"),
            ("http://127.0.0.1/cb", "http://127.0.0.1:53219/CB"),
            ("http://127.0.0.1/cb", "http://127.0.0.1:0/cb"),
            ("http://127.0.0.1/cb", "http://127.0.0.1:65536/cb"),
            ("http://127.0.0.1/cb", "http://127.0.0.1:/cb"),
            ("http://127.0.0.1/cb", "http://127.0.0.1:80@evil.example/cb"),
            ("http://127.0.0.1/cb", "http://127.0.0.1.evil.example/cb"),
            ("http://127.0.0.1/cb", "http://[::1]:8000/cb"),
            ("http://127.0.0.1/cb", "http://127.0.0.1:8000/cb#x"),
            ("http://localhost/cb", "http://localhost:8000/cb"),
            (
                "https://app.example.com/cb",
                "https://app.example.com:8443/cb",
            ),
        ] {
            assert!(!redirect_matches(registered, requested), "{requested}");
        }
    }

    fn params(extra: &[(&str, &str)]) -> Params {
        let mut p = vec![
            ("client_id", "app"),
            ("redirect_uri", "https://app.example.com/cb"),
            ("response_type", "code"),
            ("state", "s1"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ];
        p.extend_from_slice(extra);
        Params::from_pairs(p)
    }

    fn redirect_code(e: AuthorizeError) -> ErrorCode {
        match e {
            AuthorizeError::Redirect { error, state, .. } => {
                assert_eq!(state.as_deref(), Some("s1"));
                error.code
            }
            AuthorizeError::Page(p) => panic!("page: {p}"),
        }
    }

    #[test]
    fn untrusted_client_or_redirect_never_redirects() {
        let c = client(false);
        let bad_uri = Params::from_pairs([
            ("client_id", "app"),
            ("redirect_uri", "https://app.example.com/cb/extra"),
            ("response_type", "code"),
        ]);
        assert!(matches!(
            AuthorizationRequest::validate(&bad_uri, Some(&c)),
            Err(AuthorizeError::Page(_))
        ));
        assert!(matches!(
            AuthorizationRequest::validate(&params(&[]), None),
            Err(AuthorizeError::Page(_))
        ));
        let no_uri = Params::from_pairs([("client_id", "app"), ("response_type", "code")]);
        assert!(matches!(
            AuthorizationRequest::validate(&no_uri, Some(&c)),
            Err(AuthorizeError::Page(_))
        ));
    }

    #[test]
    fn redirected_errors() {
        let c = client(true);
        let v = |extra: &[(&str, &str)]| AuthorizationRequest::validate(&params(extra), Some(&c));
        let plain = Params::from_pairs([
            ("client_id", "app"),
            ("redirect_uri", "https://app.example.com/cb"),
            ("response_type", "code"),
            ("state", "s1"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "plain"),
        ]);
        assert_eq!(
            redirect_code(AuthorizationRequest::validate(&plain, Some(&c)).unwrap_err()),
            ErrorCode::InvalidRequest
        );
        let no_pkce = Params::from_pairs([
            ("client_id", "app"),
            ("redirect_uri", "https://app.example.com/cb"),
            ("response_type", "code"),
            ("state", "s1"),
        ]);
        assert_eq!(
            redirect_code(AuthorizationRequest::validate(&no_pkce, Some(&c)).unwrap_err()),
            ErrorCode::InvalidRequest,
            "public clients need PKCE"
        );
        assert_eq!(
            redirect_code(v(&[("request", "x")]).unwrap_err()),
            ErrorCode::RequestNotSupported
        );
        assert_eq!(
            redirect_code(v(&[("prompt", "none login")]).unwrap_err()),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            redirect_code(v(&[("max_age", "-1")]).unwrap_err()),
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn unregistered_scopes_are_dropped_and_prompts_decide() {
        let c = client(false);
        let v = |extra: &[(&str, &str)], c: &Client| {
            AuthorizationRequest::validate(&params(extra), Some(c)).unwrap()
        };
        let req = v(&[("scope", "openid api:read admin")], &c);
        assert_eq!(req.scope.to_string(), "openid api:read");
        let fresh = SignedIn {
            auth_time: 100,
            just_now: false,
            hint_mismatch: false,
        };
        let both = vec!["openid".to_owned(), "api:read".to_owned()];
        let approved = Some(both.as_slice());
        assert_eq!(decide(&req, &c, None, None, 200).unwrap(), Next::Login);
        assert_eq!(
            decide(&req, &c, Some(fresh), None, 200).unwrap(),
            Next::Consent
        );
        assert_eq!(
            decide(&req, &c, Some(fresh), approved, 200).unwrap(),
            Next::IssueCode
        );

        // No scope at all still needs the client approved once; prompt=consent always asks,
        // even for first-party clients.
        let bare = v(&[], &c);
        assert_eq!(
            decide(&bare, &c, Some(fresh), None, 200).unwrap(),
            Next::Consent
        );
        assert_eq!(
            decide(&bare, &c, Some(fresh), Some(&[]), 200).unwrap(),
            Next::IssueCode
        );
        let mut first_party = c.clone();
        first_party.skip_consent = true;
        assert_eq!(
            decide(&bare, &first_party, Some(fresh), None, 200).unwrap(),
            Next::IssueCode
        );
        let ask = v(&[("prompt", "consent")], &first_party);
        assert_eq!(
            decide(&ask, &first_party, Some(fresh), None, 200).unwrap(),
            Next::Consent
        );

        let none = v(&[("prompt", "none")], &c);
        let e = decide(&none, &c, None, None, 200).unwrap_err();
        assert_eq!(redirect_code(e), ErrorCode::LoginRequired);

        let aged = v(&[("max_age", "50")], &c);
        assert_eq!(
            decide(&aged, &c, Some(fresh), approved, 151).unwrap(),
            Next::Login
        );
        assert_eq!(
            decide(&aged, &c, Some(fresh), approved, 150).unwrap(),
            Next::IssueCode
        );

        let login = v(&[("prompt", "login")], &c);
        assert_eq!(
            decide(&login, &c, Some(fresh), approved, 200).unwrap(),
            Next::Login
        );
        let just = SignedIn {
            just_now: true,
            ..fresh
        };
        assert_eq!(
            decide(&login, &c, Some(just), approved, 200).unwrap(),
            Next::IssueCode
        );

        // Signing in as someone other than the hint names is an error, not a code.
        let other = SignedIn {
            just_now: true,
            hint_mismatch: true,
            ..fresh
        };
        let e = decide(&req, &c, Some(other), approved, 200).unwrap_err();
        assert_eq!(redirect_code(e), ErrorCode::LoginRequired);

        // A consent POST for prompt=login stands only shortly after signing in.
        assert!(may_consent(&login, fresh, 100 + CONSENT_WINDOW_SECS).unwrap());
        assert!(!may_consent(&login, fresh, 101 + CONSENT_WINDOW_SECS).unwrap());
        assert!(may_consent(&req, fresh, 100_000).unwrap());
    }

    #[test]
    fn redirect_keeps_query() {
        assert_eq!(
            redirect_with(
                "https://a.example/cb?x=1",
                &[("code", "c d"), ("state", "s")]
            ),
            "https://a.example/cb?x=1&code=c+d&state=s"
        );
    }
}
