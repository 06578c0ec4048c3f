//! Introspection (RFC 7662) and revocation (RFC 7009), both with client authentication.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::error::ApiError;
use super::{authenticate_client, form, AppState};
use crate::oauth::client::Client;
use crate::oauth::client_auth::Credentials;
use crate::oauth::issue::Issuer;
use crate::oauth::{introspect, revoke};
use crate::store::Store;

/// Authenticate the client, require `token`, then run `op` on the blocking pool (it reads or
/// writes the revocation list and refresh tokens) with the token and its `token_type_hint`.
async fn with_token<T, E, F>(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
    op: F,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
    F: FnOnce(&Issuer<'_>, &Client, &str, Option<&str>, &dyn Store) -> Result<T, E>
        + Send
        + 'static,
{
    let params = form::read(&req, payload).await?;
    let creds = Credentials::extract(form::authorization(&req)?, &params)?;
    let client: Arc<Client> = authenticate_client(&state, &creds).await?;
    super::cors::check_origin(&req, &client, &state.cors_origins)?;
    let token = params.require("token")?.to_owned();
    let hint = params.get("token_type_hint").map(str::to_owned);
    let result = web::block(move || {
        let keys = state.keys.current();
        op(
            &state.issuer(&keys),
            &client,
            &token,
            hint.as_deref(),
            &*state.store,
        )
    })
    .await?;
    result.map_err(Into::into)
}

/// `POST /introspect`.
pub async fn introspect(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let response = with_token(state, req, payload, |i, c, t, h, s| {
        introspect::introspect(i, c, t, h, s)
    })
    .await?;
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
    let (st, r) = (state.clone(), req.clone());
    let (outcome, client_id) = with_token(state, req, payload, |i, c, t, h, s| {
        revoke::revoke(i, c, t, h, s).map(|o| (o, c.client_id.clone()))
    })
    .await?;
    tracing::debug!(?outcome, "revocation");
    if let revoke::Revocation::Revoked { sub, kind } = outcome {
        let mut e = st
            .audit(&r, "token.revoked")
            .client(&client_id)
            .detail(format!("token_type={kind}"));
        if sub != client_id {
            e = e.user(sub);
        }
        st.record(e);
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}
