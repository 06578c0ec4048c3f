//! Form parameters and the typed token request.

use std::borrow::Cow;
use std::collections::HashSet;

use super::error::OAuthError;
use super::scope::Scope;

/// Parameters that RFC 8707 allows to repeat; every other one must appear at most once
/// (RFC 6749 3.1 and 3.2).
const MULTI_VALUED: &[&str] = &["resource"];

/// Decoded `application/x-www-form-urlencoded` parameters (body or query).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parse a form body or query string. A repeated single-valued parameter is
    /// `invalid_request`; a parameter sent without a value counts as omitted (RFC 6749 3.1).
    /// A NUL character anywhere is `invalid_request`: no parameter has a use for it, and
    /// PostgreSQL refuses it in text.
    pub fn parse(input: &[u8]) -> Result<Self, OAuthError> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut seen: HashSet<Cow<'_, str>> = HashSet::new();
        for (k, v) in form_urlencoded::parse(input) {
            if k.contains('\0') || v.contains('\0') {
                return Err(OAuthError::invalid_request(format!(
                    "parameter '{}' contains a NUL character",
                    printable(&k)
                )));
            }
            if v.is_empty() {
                continue;
            }
            if !MULTI_VALUED.contains(&k.as_ref()) && !seen.insert(k.clone()) {
                return Err(OAuthError::invalid_request(format!(
                    "parameter '{}' is repeated",
                    printable(&k)
                )));
            }
            out.push((k.into_owned(), v.into_owned()));
        }
        Ok(Self(out))
    }

    /// Build from pairs (tests, internal callers). Later duplicates are kept; `get` sees the first.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// The parameters as a query string (`application/x-www-form-urlencoded`).
    pub fn to_query(&self) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.0 {
            out.append_pair(k, v);
        }
        out.finish()
    }

    /// The value of a single-valued parameter.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a multi-valued parameter.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a required parameter, or `invalid_request` naming it.
    pub fn require(&self, key: &str) -> Result<&str, OAuthError> {
        self.get(key)
            .ok_or_else(|| OAuthError::invalid_request(format!("missing parameter '{key}'")))
    }
}

/// A parameter name fit to echo in an error description: short, printable ASCII only.
fn printable(s: &str) -> Cow<'_, str> {
    if s.len() <= 40 && s.bytes().all(|b| b.is_ascii_graphic()) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(
            s.chars()
                .filter(char::is_ascii_graphic)
                .take(40)
                .collect::<String>(),
        )
    }
}

/// A token request, by grant type (RFC 6749 4.1.3, 4.4.2, 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRequest {
    /// RFC 6749 4.4.
    ClientCredentials(ClientCredentialsRequest),
    /// RFC 6749 4.1.3 with RFC 7636.
    AuthorizationCode(AuthorizationCodeRequest),
    /// RFC 6749 6.
    RefreshToken(RefreshTokenRequest),
}

/// RFC 6749 6.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshTokenRequest {
    /// The refresh token.
    pub refresh_token: String,
    /// A narrower scope than granted, if asked for.
    pub scope: Option<Scope>,
    /// RFC 8707 resource indicators.
    pub resources: Vec<String>,
}

impl std::fmt::Debug for RefreshTokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret.
        f.debug_struct("RefreshTokenRequest")
            .field("scope", &self.scope)
            .field("resources", &self.resources)
            .finish_non_exhaustive()
    }
}

/// RFC 6749 4.1.3 plus RFC 7636 4.5.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthorizationCodeRequest {
    /// The code.
    pub code: String,
    /// Must equal the authorization request's (which always has one here, so it is required:
    /// RFC 6749 4.1.3).
    pub redirect_uri: String,
    /// PKCE verifier.
    pub code_verifier: Option<String>,
    /// RFC 8707 resource indicators.
    pub resources: Vec<String>,
}

impl std::fmt::Debug for AuthorizationCodeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The code and verifier are secrets.
        f.debug_struct("AuthorizationCodeRequest")
            .field("redirect_uri", &self.redirect_uri)
            .field("resources", &self.resources)
            .finish_non_exhaustive()
    }
}

/// RFC 6749 4.4.2 plus RFC 8707 `resource`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCredentialsRequest {
    /// Requested scope, if any.
    pub scope: Option<Scope>,
    /// RFC 8707 resource indicators.
    pub resources: Vec<String>,
}

impl TokenRequest {
    /// The grant type name of this request.
    pub fn grant_type(&self) -> &'static str {
        match self {
            TokenRequest::ClientCredentials(_) => "client_credentials",
            TokenRequest::AuthorizationCode(_) => "authorization_code",
            TokenRequest::RefreshToken(_) => "refresh_token",
        }
    }

    /// Type the parameters by `grant_type`. An unknown grant is `unsupported_grant_type`.
    pub fn from_params(params: &Params) -> Result<Self, OAuthError> {
        match params.require("grant_type")? {
            "client_credentials" => Ok(TokenRequest::ClientCredentials(ClientCredentialsRequest {
                scope: params.get("scope").map(Scope::parse).transpose()?,
                resources: parse_resources(params)?,
            })),
            "authorization_code" => Ok(TokenRequest::AuthorizationCode(AuthorizationCodeRequest {
                code: params.require("code")?.to_owned(),
                redirect_uri: params.require("redirect_uri")?.to_owned(),
                code_verifier: params.get("code_verifier").map(str::to_owned),
                resources: parse_resources(params)?,
            })),
            "refresh_token" => Ok(TokenRequest::RefreshToken(RefreshTokenRequest {
                refresh_token: params.require("refresh_token")?.to_owned(),
                scope: params.get("scope").map(Scope::parse).transpose()?,
                resources: parse_resources(params)?,
            })),
            other => Err(OAuthError::unsupported_grant_type(format!(
                "grant_type '{}' is not supported",
                printable(other)
            ))),
        }
    }
}

/// RFC 8707 2: each `resource` is an absolute URI without a fragment.
fn parse_resources(params: &Params) -> Result<Vec<String>, OAuthError> {
    params
        .get_all("resource")
        .map(|r| match url::Url::parse(r) {
            Ok(u) if u.fragment().is_none() => Ok(r.to_owned()),
            _ => Err(OAuthError::invalid_target(
                "resource must be an absolute URI without a fragment",
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::error::ErrorCode;

    #[test]
    fn repeated_parameter_is_invalid_request() {
        let e = Params::parse(b"grant_type=client_credentials&scope=a&scope=b").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.description.contains("scope"));
        // resource may repeat (RFC 8707)
        let p = Params::parse(b"resource=https%3A%2F%2Fa&resource=https%3A%2F%2Fb").unwrap();
        assert_eq!(p.get_all("resource").count(), 2);
    }

    #[test]
    fn a_nul_character_anywhere_is_invalid_request() {
        for input in [&b"nonce=a%00b"[..], b"a%00=b", b"x=1&y=%00", b"n=\0"] {
            let e = Params::parse(input).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{input:?}");
        }
        assert!(
            Params::parse(b"nonce=a%01b%7F").is_ok(),
            "other controls are left to callers"
        );
    }

    #[test]
    fn empty_values_count_as_omitted() {
        let p = Params::parse(b"grant_type=&scope=x&grant_type=client_credentials").unwrap();
        assert_eq!(p.get("grant_type"), Some("client_credentials"));
    }

    #[test]
    fn grant_type_dispatch() {
        let req = TokenRequest::from_params(&Params::from_pairs([
            ("grant_type", "client_credentials"),
            ("scope", "a b"),
        ]))
        .unwrap();
        let TokenRequest::ClientCredentials(cc) = req else {
            panic!("wrong grant")
        };
        assert_eq!(cc.scope.unwrap().to_string(), "a b");
        let e = TokenRequest::from_params(&Params::from_pairs([("grant_type", "password")]))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedGrantType);
        let e = TokenRequest::from_params(&Params::default()).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        let e = TokenRequest::from_params(&Params::from_pairs([
            ("grant_type", "client_credentials"),
            ("resource", "not a uri"),
        ]))
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidTarget);
    }
}
