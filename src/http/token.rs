//! The token endpoint (RFC 6749 3.2).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::error::ApiError;
use super::{authenticate_client, form, AppState};
use crate::oauth::client_auth::Credentials;
use crate::oauth::grants::{authorization_code, client_credentials, refresh_token};
use crate::oauth::request::TokenRequest;

/// `POST /token`: authenticate the client, type the request by grant, run the grant; the
/// outcome goes to the audit log.
pub async fn token(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let mut client_id = None;
    let result = issue(&state, &req, payload, &mut client_id).await;
    let mut event = match &result {
        Ok((grant, sub, _)) => state
            .audit(&req, "token.issued")
            .user(sub.clone())
            .detail(format!("grant_type={grant}")),
        Err(e) if e.error.description == refresh_token::REUSED => state
            .audit(&req, "refresh.reuse_detected")
            .detail("family and its access tokens revoked"),
        Err(e) => state
            .audit(&req, "token.refused")
            .detail(format!("error={}", e.error.code.as_str())),
    };
    if let Some(c) = client_id {
        event = event.client(c);
    }
    // Machine tokens name the client as `sub`; no user then.
    if event.user_id.as_deref() == event.client_id.as_deref() {
        event.user_id = None;
    }
    state.record(event);
    result.map(|(_, _, resp)| resp)
}

async fn issue(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    payload: web::Payload,
    client_id: &mut Option<String>,
) -> Result<(&'static str, String, HttpResponse), ApiError> {
    let params = form::read(req, payload).await?;
    let creds = Credentials::extract(form::authorization(req)?, &params)?;
    *client_id = Some(creds.client_id().to_owned());
    let client = authenticate_client(state, &creds).await?;
    super::cors::check_origin(req, &client, &state.cors_origins)?;
    let request = TokenRequest::from_params(&params)?;
    let (response, issued) = match &request {
        // No database: stays on the async worker.
        TokenRequest::ClientCredentials(r) => {
            let keys = state.keys.current();
            client_credentials::exchange(&state.issuer(&keys), &client, r)?
        }
        TokenRequest::AuthorizationCode(r) => {
            let (st, r) = (state.clone(), r.clone());
            web::block(move || {
                let keys = st.keys.current();
                authorization_code::exchange(&st.issuer(&keys), &client, &r, &*st.store)
            })
            .await??
        }
        TokenRequest::RefreshToken(r) => {
            let (st, r) = (state.clone(), r.clone());
            web::block(move || {
                let keys = st.keys.current();
                refresh_token::exchange(&st.issuer(&keys), &client, &r, &*st.store)
            })
            .await??
        }
    };
    state
        .metrics
        .token_issued(request.grant_type(), issued.alg.as_str());
    let resp = HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(response);
    Ok((request.grant_type(), issued.sub, resp))
}
