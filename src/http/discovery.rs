//! Discovery metadata and the JWK Set.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use super::AppState;
use crate::crypto::keys::PUBLISH_BEFORE_SIGN_SECS;

/// `GET /.well-known/openid-configuration` and `/.well-known/oauth-authorization-server`.
pub async fn metadata(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(state.discovery.clone())
}

/// How long a cache may keep the JWK Set: a new key signs [`PUBLISH_BEFORE_SIGN_SECS`] after it
/// is generated, and every replica publishes it within one key refresh of that, so a copy this
/// old still holds it by the time a token it signed can reach anyone (a relying party that
/// re-fetches on an unknown `kid` is not answered from a cache without it).
const JWKS_MAX_AGE: u64 = PUBLISH_BEFORE_SIGN_SECS.unsigned_abs() - super::KEY_REFRESH.as_secs();

/// `GET /jwks`: public keys only, each with `kid`, `use`, `alg`.
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    let keys = state.keys.current();
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((
            header::CACHE_CONTROL,
            format!("public, max-age={JWKS_MAX_AGE}"),
        ))
        .body(keys.jwks.clone())
}
