//! Protocol errors as HTTP responses: RFC 6749 5.2 JSON, `no-store`, `WWW-Authenticate` on a 401
//! after HTTP Basic.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::oauth::error::{ErrorCode, OAuthError};
use crate::store::StoreError;

/// An API error response.
#[derive(Debug)]
pub struct ApiError {
    /// The protocol error.
    pub error: OAuthError,
    /// A status other than the code's own (413 for an oversized body, 405, 404).
    pub status: Option<StatusCode>,
}

impl ApiError {
    /// This error as a response.
    pub fn into_response(self) -> HttpResponse {
        ResponseError::error_response(&self)
    }

    /// With an explicit HTTP status.
    pub fn with_status(error: OAuthError, status: StatusCode) -> Self {
        Self {
            error,
            status: Some(status),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl From<OAuthError> for ApiError {
    fn from(error: OAuthError) -> Self {
        Self {
            error,
            status: None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        OAuthError::from(e).into()
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(_: actix_web::error::BlockingError) -> Self {
        OAuthError::temporarily_unavailable("the service is temporarily unavailable").into()
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status.unwrap_or_else(|| {
            StatusCode::from_u16(self.error.status()).unwrap_or(StatusCode::BAD_REQUEST)
        })
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        // Logged once, here, inside the request's span (which carries the request id).
        tracing::info!(
            status = status.as_u16(),
            error = self.error.code.as_str(),
            "request refused"
        );
        let mut resp = HttpResponse::build(status);
        resp.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        // RFC 9110 15.5.2: every 401 carries a challenge, however the client authenticated.
        if status == StatusCode::UNAUTHORIZED && self.error.code == ErrorCode::InvalidClient {
            resp.insert_header((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"portcullis\", charset=\"UTF-8\""),
            ));
        }
        resp.json(&self.error)
    }
}
