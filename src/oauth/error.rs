//! The one protocol error type: a closed set of RFC error codes, each knowing its HTTP status.

use serde::Serialize;

/// RFC 6749 5.2 / 4.1.2.1, RFC 7009 2.2.1, RFC 8707, OIDC Core 3.1.2.6 error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Missing, repeated or malformed parameter.
    InvalidRequest,
    /// Client authentication failed.
    InvalidClient,
    /// Bad code, refresh token or credentials grant.
    InvalidGrant,
    /// The client may not use this grant.
    UnauthorizedClient,
    /// The grant type is unknown.
    UnsupportedGrantType,
    /// The scope is invalid, unknown or exceeds what is allowed.
    InvalidScope,
    /// RFC 8707: the resource is not one the client may ask for.
    InvalidTarget,
    /// RFC 7009: revocation of this token type is not supported.
    UnsupportedTokenType,
    /// The resource owner or server denied the request.
    AccessDenied,
    /// The response type is not supported.
    UnsupportedResponseType,
    /// OIDC: `prompt=none` and nobody is signed in.
    LoginRequired,
    /// OIDC: `prompt=none` and consent is needed.
    ConsentRequired,
    /// RFC 6750 3.1: the access token is invalid (userinfo).
    InvalidToken,
    /// RFC 6750 3.1: the token lacks the scope.
    InsufficientScope,
    /// OIDC: `request` objects are not supported.
    RequestNotSupported,
    /// OIDC: `request_uri` is not supported.
    RequestUriNotSupported,
    /// The database or another dependency is unavailable.
    TemporarilyUnavailable,
    /// A bug. Never caused by input.
    ServerError,
}

impl ErrorCode {
    /// The HTTP status of a direct (non-redirect) error response.
    pub fn status(self) -> u16 {
        match self {
            // RFC 6749 5.2: 401 for invalid_client (the handler adds WWW-Authenticate).
            ErrorCode::InvalidClient | ErrorCode::InvalidToken => 401,
            ErrorCode::InsufficientScope => 403,
            ErrorCode::TemporarilyUnavailable => 503,
            ErrorCode::ServerError => 500,
            _ => 400,
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::UnsupportedTokenType => "unsupported_token_type",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::LoginRequired => "login_required",
            ErrorCode::ConsentRequired => "consent_required",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InsufficientScope => "insufficient_scope",
            ErrorCode::RequestNotSupported => "request_not_supported",
            ErrorCode::RequestUriNotSupported => "request_uri_not_supported",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::ServerError => "server_error",
        }
    }
}

/// A protocol error: the code, a description safe to show the client, and how the client
/// authenticated (so a 401 can name the scheme it should retry with).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}: {description}", code.as_str())]
pub struct OAuthError {
    /// RFC error code.
    #[serde(rename = "error")]
    pub code: ErrorCode,
    /// Human-readable, never containing a secret.
    #[serde(rename = "error_description")]
    pub description: String,
    /// Whether the client used HTTP Basic authentication (RFC 6749 5.2: then a 401 carries
    /// `WWW-Authenticate: Basic`).
    #[serde(skip)]
    pub used_basic: bool,
}

impl OAuthError {
    /// An error with a description.
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            used_basic: false,
        }
    }

    /// Record that the client authenticated with HTTP Basic.
    pub fn with_basic(mut self, used_basic: bool) -> Self {
        self.used_basic = used_basic;
        self
    }

    /// HTTP status.
    pub fn status(&self) -> u16 {
        self.code.status()
    }
}

macro_rules! constructors {
    ($($name:ident => $code:ident),* $(,)?) => {
        impl OAuthError {
            $(
                #[doc = concat!("`", stringify!($name), "` with a description.")]
                pub fn $name(description: impl Into<String>) -> Self {
                    Self::new(ErrorCode::$code, description)
                }
            )*
        }
    };
}

constructors! {
    invalid_request => InvalidRequest,
    invalid_client => InvalidClient,
    invalid_grant => InvalidGrant,
    unauthorized_client => UnauthorizedClient,
    unsupported_grant_type => UnsupportedGrantType,
    invalid_scope => InvalidScope,
    invalid_target => InvalidTarget,
    temporarily_unavailable => TemporarilyUnavailable,
    server_error => ServerError,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_and_status() {
        let e = OAuthError::invalid_client("client authentication failed");
        assert_eq!(e.status(), 401);
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"error": "invalid_client", "error_description": "client authentication failed"})
        );
        assert_eq!(OAuthError::invalid_scope("x").status(), 400);
        assert_eq!(OAuthError::temporarily_unavailable("db").status(), 503);
        assert_eq!(
            serde_json::to_value(ErrorCode::UnsupportedGrantType).unwrap(),
            ErrorCode::UnsupportedGrantType.as_str()
        );
    }
}
