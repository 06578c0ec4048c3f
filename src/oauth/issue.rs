//! Building signed access tokens and token responses.

use serde::{Deserialize, Serialize};

use super::error::OAuthError;
use super::scope::Scope;
use crate::clock::UnixTime;
use crate::config::TokenConfig;
use crate::crypto::jwt::{self, ACCESS_TOKEN_TYP};
use crate::crypto::keys::{KeySet, SigningAlg};
use crate::crypto::opaque;

/// A JWT `aud`: one value or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    /// One value as a string, several as an array (RFC 7519 4.1.3).
    pub fn from_list(mut values: Vec<String>) -> Self {
        if values.len() == 1 {
            Audience::One(values.remove(0))
        } else {
            Audience::Many(values)
        }
    }

    /// Whether `value` is one of the audiences.
    pub fn contains(&self, value: &str) -> bool {
        match self {
            Audience::One(a) => a == value,
            Audience::Many(v) => v.iter().any(|a| a == value),
        }
    }
}

/// RFC 9068 section 2.2 claims of our access tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// Our issuer.
    pub iss: String,
    /// The user id, or the client id for machine tokens.
    pub sub: String,
    /// Resource indicator(s), or the issuer.
    pub aud: Audience,
    /// The client the token was issued to.
    pub client_id: String,
    /// Granted scope; absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Unique id, for revocation.
    pub jti: String,
    /// Issued at.
    pub iat: UnixTime,
    /// Expiry.
    pub exp: UnixTime,
    /// When the person signed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<UnixTime>,
    /// Authentication context class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    /// Authentication methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amr: Option<Vec<String>>,
}

/// RFC 6749 5.1 successful token response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The JWT access token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Lifetime in seconds.
    pub expires_in: u32,
    /// Granted scope (always sent, RFC 6749 5.1 allows omitting it only when unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// What signing an access token produced (for metrics and later revocation bookkeeping).
#[derive(Debug, Clone)]
pub struct IssuedAccessToken {
    /// The compact JWS.
    pub token: String,
    /// Its `jti`.
    pub jti: String,
    /// Its `exp`.
    pub exp: UnixTime,
    /// The algorithm it was signed with.
    pub alg: SigningAlg,
}

/// Everything token issuance needs: issuer, keys, lifetimes, the time.
#[derive(Clone, Copy)]
pub struct Issuer<'a> {
    /// Value of `iss`.
    pub issuer: &'a str,
    /// Signing keys.
    pub keys: &'a KeySet,
    /// Lifetimes and algorithms.
    pub tokens: &'a TokenConfig,
    /// Current time.
    pub now: UnixTime,
}

impl Issuer<'_> {
    /// Sign an access token for `sub` / `client_id` with `scope` and `aud`.
    pub fn access_token(
        &self,
        sub: &str,
        client_id: &str,
        scope: &Scope,
        aud: Audience,
    ) -> Result<IssuedAccessToken, OAuthError> {
        let alg = self.tokens.access_token_alg;
        let exp = self.now + i64::from(self.tokens.access_token_ttl_secs);
        let claims = AccessTokenClaims {
            iss: self.issuer.to_owned(),
            sub: sub.to_owned(),
            aud,
            client_id: client_id.to_owned(),
            scope: (!scope.is_empty()).then(|| scope.to_string()),
            jti: opaque::random_id(),
            iat: self.now,
            exp,
            auth_time: None,
            acr: None,
            amr: None,
        };
        let token = jwt::sign(self.keys, alg, ACCESS_TOKEN_TYP, &claims)
            .map_err(|e| OAuthError::server_error(e.to_string()))?;
        Ok(IssuedAccessToken {
            token,
            jti: claims.jti,
            exp,
            alg,
        })
    }

    /// Verify one of our access tokens (signature, `typ`, `iss`, expiry); `None` if invalid.
    pub fn verify_access_token(&self, token: &str) -> Option<AccessTokenClaims> {
        jwt::verify(self.keys, token, ACCESS_TOKEN_TYP, self.issuer, self.now).ok()
    }
}
