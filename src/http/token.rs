//! The token endpoint (RFC 6749 3.2).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::error::ApiError;
use super::{authenticate_client, form, AppState};
use crate::oauth::client_auth::Credentials;
use crate::oauth::grants::client_credentials;
use crate::oauth::request::TokenRequest;

/// `POST /token`: authenticate the client, type the request by grant, run the grant.
pub async fn token(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let params = form::read(&req, payload).await?;
    let creds = Credentials::extract(form::authorization(&req)?, &params)?;
    let client = authenticate_client(&state, &creds).await?;
    let request = TokenRequest::from_params(&params)?;
    let keys = state.keys.current();
    let issuer = state.issuer(&keys);
    let (response, issued) = match &request {
        TokenRequest::ClientCredentials(r) => client_credentials::exchange(&issuer, &client, r)?,
    };
    state
        .metrics
        .token_issued(request.grant_type(), issued.alg.as_str());
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(response))
}
