//! Reading `application/x-www-form-urlencoded` request bodies, at most 64 KiB.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;

use super::error::ApiError;
use crate::oauth::error::OAuthError;
use crate::oauth::request::Params;

/// Largest accepted body.
pub const MAX_BODY: usize = 64 * 1024;

fn too_large() -> ApiError {
    ApiError::with_status(
        OAuthError::invalid_request("the request body is larger than 64 KiB"),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
}

/// Check the content type, read the body within the limit and parse it.
pub async fn read(req: &HttpRequest, mut payload: web::Payload) -> Result<Params, ApiError> {
    if !is_form(req) {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        )
        .into());
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(256).min(MAX_BODY));
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|_| OAuthError::invalid_request("the request body could not be read"))?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Params::parse(&body)?)
}

/// The `Authorization` header, if any; one that is not visible ASCII is `invalid_client`.
/// Whether the request says its body is `application/x-www-form-urlencoded`.
pub fn is_form(req: &HttpRequest) -> bool {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/x-www-form-urlencoded")
}

/// The credentials of an `Authorization: Bearer …` header (the scheme is case-insensitive,
/// RFC 7235 2.1): `None` without such a header, `Some("")` when it carries nothing.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    let h = authorization(req).ok().flatten()?.trim();
    let (scheme, token) = h.split_once(' ').unwrap_or((h, ""));
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub fn authorization(req: &HttpRequest) -> Result<Option<&str>, ApiError> {
    match req.headers().get(header::AUTHORIZATION) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| {
            OAuthError::invalid_client("malformed Authorization header")
                .with_basic(true)
                .into()
        }),
    }
}
