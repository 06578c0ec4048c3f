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
    /// The person's roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
}

/// How a person signed in, for the tokens of a session.
#[derive(Debug, Clone, Copy)]
pub struct SignIn<'a> {
    /// When.
    pub auth_time: UnixTime,
    /// How (`pwd`, `otp`, `mfa`, `fed`).
    pub amr: &'a [String],
    /// Their roles, when the `roles` scope was granted.
    pub roles: Option<&'a [String]>,
}

/// The `acr` for a set of `amr` values.
pub fn acr_for(amr: &[String]) -> &'static str {
    if amr.iter().any(|a| a == "mfa") {
        "urn:portcullis:acr:mfa"
    } else {
        "urn:portcullis:acr:sfa"
    }
}

/// OIDC Core 2 ID token claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdTokenClaims {
    /// Our issuer.
    pub iss: String,
    /// The user id.
    pub sub: String,
    /// The client id.
    pub aud: String,
    /// Expiry.
    pub exp: UnixTime,
    /// Issued at.
    pub iat: UnixTime,
    /// When the person signed in.
    pub auth_time: UnixTime,
    /// The request's nonce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Authorized party: the client.
    pub azp: String,
    /// OIDC Core 3.1.3.6: left half of SHA-256 of the access token, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    /// Authentication methods.
    pub amr: Vec<String>,
    /// Authentication context class.
    pub acr: String,
    /// The person's roles, with the `roles` scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
}

/// OIDC Core 3.1.3.6 `at_hash` for SHA-256-based algorithms.
pub fn at_hash(access_token: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let digest = sha2::Sha256::digest(access_token.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
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
    /// OIDC ID token, when `openid` was granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// The next refresh token, for clients registered with the grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
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
    /// Its `sub` (a user id, or the client id for machine tokens).
    pub sub: String,
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
    /// Sign an access token for `sub` / `client_id` with `scope` and `aud`; `jti` when the
    /// caller recorded it beforehand, `person` for tokens of a signed-in person.
    pub fn access_token(
        &self,
        sub: &str,
        client_id: &str,
        scope: &Scope,
        aud: Audience,
        jti: Option<String>,
        person: Option<SignIn<'_>>,
    ) -> Result<IssuedAccessToken, OAuthError> {
        let alg = self.tokens.access_token_alg;
        let exp = self.access_exp();
        let claims = AccessTokenClaims {
            iss: self.issuer.to_owned(),
            sub: sub.to_owned(),
            aud,
            client_id: client_id.to_owned(),
            scope: (!scope.is_empty()).then(|| scope.to_string()),
            jti: jti.unwrap_or_else(opaque::random_id),
            iat: self.now,
            exp,
            auth_time: person.map(|p| p.auth_time),
            acr: person.map(|p| acr_for(p.amr).to_owned()),
            amr: person.map(|p| p.amr.to_vec()),
            roles: person.and_then(|p| p.roles).map(<[String]>::to_vec),
        };
        let token = jwt::sign(self.keys, alg, ACCESS_TOKEN_TYP, &claims)
            .map_err(|e| OAuthError::server_error(e.to_string()))?;
        Ok(IssuedAccessToken {
            token,
            sub: claims.sub,
            jti: claims.jti,
            exp,
            alg,
        })
    }

    /// When an access token issued now expires.
    pub fn access_exp(&self) -> UnixTime {
        self.now + i64::from(self.tokens.access_token_ttl_secs)
    }

    /// Sign an ID token (RS256) for `sub` and `client_id`.
    pub fn id_token(
        &self,
        sub: &str,
        client_id: &str,
        nonce: Option<&str>,
        person: SignIn<'_>,
        access_token: &str,
    ) -> Result<String, OAuthError> {
        let claims = IdTokenClaims {
            iss: self.issuer.to_owned(),
            sub: sub.to_owned(),
            aud: client_id.to_owned(),
            exp: self.now + i64::from(self.tokens.id_token_ttl_secs),
            iat: self.now,
            auth_time: person.auth_time,
            nonce: nonce.map(str::to_owned),
            azp: client_id.to_owned(),
            at_hash: Some(at_hash(access_token)),
            amr: person.amr.to_vec(),
            acr: acr_for(person.amr).to_owned(),
            roles: person.roles.map(<[String]>::to_vec),
        };
        jwt::sign(self.keys, SigningAlg::RS256, "JWT", &claims)
            .map_err(|e| OAuthError::server_error(e.to_string()))
    }

    /// Verify one of our access tokens (signature, `typ`, `iss`, expiry); `None` if invalid.
    pub fn verify_access_token(&self, token: &str) -> Option<AccessTokenClaims> {
        jwt::verify(self.keys, token, ACCESS_TOKEN_TYP, self.issuer, self.now).ok()
    }
}
