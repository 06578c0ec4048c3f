//! Discovery metadata and the JWK Set.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use super::AppState;

/// `GET /.well-known/openid-configuration` and `/.well-known/oauth-authorization-server`.
pub async fn metadata(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(state.discovery.clone())
}

/// `GET /jwks`: public keys only, each with `kid`, `use`, `alg`. Clients may cache it for five
/// minutes; a new key is published by the time anything it signed can reach them only if
/// rotation generates it that long before retiring the old one (README "Keys").
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    let keys = state.keys.current();
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .body(keys.jwks.clone())
}
