//! Introspection (RFC 7662) and revocation (RFC 7009), both with client authentication.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::error::ApiError;
use super::{authenticate_client, form, AppState};
use crate::oauth::client_auth::Credentials;
use crate::oauth::request::Params;
use crate::oauth::{introspect, revoke};

async fn authenticated(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<(Params, std::sync::Arc<crate::oauth::client::Client>), ApiError> {
    let params = form::read(req, payload).await?;
    let creds = Credentials::extract(form::authorization(req)?, &params)?;
    let client = authenticate_client(state, &creds).await?;
    params.require("token")?;
    Ok((params, client))
}

/// `POST /introspect`.
pub async fn introspect(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (params, client) = authenticated(&state, &req, payload).await?;
    let st = state.clone();
    let response = web::block(move || {
        let keys = st.keys.current();
        let token = params.get("token").unwrap_or_default();
        introspect::introspect(&st.issuer(&keys), &client, token, &*st.store)
    })
    .await??;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(response))
}

/// `POST /revoke`: 200 whether or not there was anything to revoke (RFC 7009 2.2).
pub async fn revoke(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (params, client) = authenticated(&state, &req, payload).await?;
    let st = state.clone();
    let outcome = web::block(move || {
        let keys = st.keys.current();
        let token = params.get("token").unwrap_or_default();
        revoke::revoke(&st.issuer(&keys), &client, token, &*st.store)
    })
    .await??;
    tracing::debug!(?outcome, "revocation");
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}
