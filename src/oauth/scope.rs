//! Scope values (RFC 6749 3.3).

use std::fmt;

use super::error::OAuthError;

/// The OpenID Connect scopes Portcullis knows; any other scope is the operator's.
pub const OIDC_SCOPES: &[&str] = &[
    "openid",
    "profile",
    "email",
    "address",
    "phone",
    "offline_access",
];

/// A set of scope tokens, in the order first given, without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope(Vec<String>);

/// RFC 6749 3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

impl Scope {
    /// Parse a space-delimited scope string; a malformed token is `invalid_scope`.
    pub fn parse(s: &str) -> Result<Self, OAuthError> {
        let mut out: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for token in s.split(' ').filter(|t| !t.is_empty()) {
            if !is_scope_token(token) {
                return Err(OAuthError::invalid_scope(
                    "scope contains a malformed value",
                ));
            }
            if seen.insert(token) {
                out.push(token.to_owned());
            }
        }
        Ok(Self(out))
    }

    /// From already validated tokens.
    pub fn from_tokens<S: AsRef<str>>(tokens: &[S]) -> Self {
        let mut out: Vec<String> = Vec::new();
        for t in tokens {
            if !out.iter().any(|x| x == t.as_ref()) {
                out.push(t.as_ref().to_owned());
            }
        }
        Self(out)
    }

    /// The tokens.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `token` is in the set.
    pub fn contains(&self, token: &str) -> bool {
        self.0.iter().any(|t| t == token)
    }

    /// The tokens not in `allowed`.
    pub fn not_in<'a, S: AsRef<str>>(
        &'a self,
        allowed: &'a [S],
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.iter()
            .filter(move |t| !allowed.iter().any(|a| a.as_ref() == *t))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_dedupes_and_validates() {
        assert_eq!(Scope::parse(" a  b a ").unwrap().to_string(), "a b");
        assert!(Scope::parse("a \"b").is_err());
        assert!(Scope::parse("a\\b").is_err());
        assert!(Scope::parse("é").is_err());
        assert!(Scope::parse("").unwrap().is_empty());
        let s = Scope::parse("a b c").unwrap();
        assert_eq!(s.not_in(&["a", "c"]).collect::<Vec<_>>(), vec!["b"]);
    }
}
