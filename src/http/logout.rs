//! RP-initiated logout (`end_session_endpoint`) and its confirmation page.

// Helpers return the finished error page as `Err(HttpResponse)`, built once per request.
#![allow(clippy::result_large_err)]

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

use super::authorize::{
    load_client, page_params, see_other, session_cookie_hash, stored, with_csrf_cookie,
};
use super::pages::{self, error_page, page, render, Csrf};
use super::AppState;
use crate::clock::UnixTime;
use crate::oauth::logout::{LogoutRequest, CARRIED};
use crate::oauth::request::Params;
use crate::oauth::user::User;

#[derive(Template)]
#[template(path = "logout.html")]
struct ConfirmPage<'a> {
    user_display: &'a str,
    client_name: Option<&'a str>,
    csrf_token: String,
    carried: Vec<(&'a str, &'a str)>,
}

#[derive(Template)]
#[template(path = "signed_out.html")]
struct SignedOutPage<'a> {
    title: &'a str,
    message: &'a str,
}

fn refused(message: &str) -> HttpResponse {
    tracing::info!(%message, "logout request refused");
    error_page(
        StatusCode::BAD_REQUEST,
        "This sign-out link is not valid",
        message,
    )
}

/// The request, its client and where to go afterwards; a bad request is an error page.
async fn checked(
    state: &web::Data<AppState>,
    params: &Params,
) -> Result<(LogoutRequest, Option<String>, Option<String>), HttpResponse> {
    let request = {
        let keys = state.keys.current();
        LogoutRequest::parse(params, &keys.set, &state.config.issuer, state.clock.now())
            .map_err(refused)?
    };
    let client = load_client(state, request.client_id.as_deref()).await?;
    let target = request.target(client.as_deref()).map_err(refused)?;
    Ok((request, client.map(|c| c.name.clone()), target))
}

/// End the browser's session (`hash`): the row, the refresh tokens issued in it without
/// `offline_access`, and the cookie.
async fn end_session(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    hash: String,
) -> Result<(), HttpResponse> {
    let st = state.clone();
    let now = state.clock.now();
    let ended = web::block(move || -> Result<_, crate::store::StoreError> {
        let who = st.store.session_owner(&hash)?.map(|(user_id, _)| user_id);
        let revoked = st.store.end_session(&hash, now)?;
        Ok((who, revoked))
    })
    .await;
    let (who, families) = stored(ended)?;
    tracing::info!(refresh_families_revoked = families, "signed out");
    let mut event = state
        .audit(req, "logout")
        .detail(format!("refresh_families_revoked={families}"));
    if let Some(u) = who {
        event = event.user(u);
    }
    state.record(event);
    Ok(())
}

/// The session this browser's cookie names (its hash, sign-in time and user), live or not: one
/// gone idle, or whose user an operator locked, signs nobody in but still holds the refresh
/// tokens issued in it, so signing out ends it too, by the same rules as a live one.
async fn cookie_session(
    state: &web::Data<AppState>,
    req: &HttpRequest,
) -> Result<Option<(String, UnixTime, User)>, HttpResponse> {
    let Some(hash) = session_cookie_hash(state, req) else {
        return Ok(None);
    };
    let st = state.clone();
    let found = web::block(move || -> Result<_, crate::store::StoreError> {
        let Some((user_id, auth_time)) = st.store.session_owner(&hash)? else {
            return Ok(None);
        };
        Ok(st.store.find_user(&user_id)?.map(|u| (hash, auth_time, u)))
    })
    .await;
    stored(found)
}

/// Redirect to `target`, or show our own page; with `signed_out`, the session cookie goes.
fn finish(state: &AppState, target: Option<String>, signed_out: bool) -> HttpResponse {
    let mut resp = match target {
        Some(url) => see_other(&url),
        None if signed_out => render(
            page(StatusCode::OK),
            &SignedOutPage {
                title: "You have signed out",
                message: "Your session has ended in this browser.",
            },
        ),
        None => render(
            page(StatusCode::OK),
            &SignedOutPage {
                title: "You are still signed in",
                message: "Nothing has changed: your session continues.",
            },
        ),
    };
    if signed_out {
        let _ = resp.add_cookie(&pages::cookie(&state.config, "session", String::new(), 0));
    }
    resp
}

/// `GET|POST /logout`. A valid `id_token_hint` naming the signed-in person ends the session at
/// once; otherwise the person is asked. Without a session there is nothing to end.
pub async fn end_session_endpoint(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let params = match page_params(&req, payload).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let end_session_path = crate::oauth::discovery::paths::END_SESSION;
    if let Some(resp) = super::authorize::retry_as_get(&state, &req, &params, end_session_path) {
        return resp;
    }
    let (request, client_name, target) = match checked(&state, &params).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let session = match cookie_session(&state, &req).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let Some((hash, auth_time, user)) = session else {
        return finish(&state, target, true);
    };
    if request.names(&user.id, auth_time) {
        if let Err(resp) = end_session(&state, &req, hash).await {
            return resp;
        }
        return finish(&state, target, true);
    }
    let csrf = Csrf::for_request(&req, &state.config);
    let carried: Vec<(&str, &str)> = CARRIED
        .iter()
        .filter_map(|k| {
            // Carry what the request resolved to: the client id may have come from the hint,
            // and a redirect nothing vouches for was dropped.
            let v = match *k {
                "client_id" => request.client_id.as_deref(),
                "post_logout_redirect_uri" => request.post_logout_redirect_uri.as_deref(),
                "state" => request.state.as_deref(),
                _ => None,
            };
            v.map(|v| (*k, v))
        })
        .collect();
    let confirm = ConfirmPage {
        user_display: user.name.as_deref().unwrap_or(&user.username),
        client_name: client_name.as_deref(),
        csrf_token: csrf.token("logout"),
        carried,
    };
    with_csrf_cookie(render(page(StatusCode::OK), &confirm), &csrf, &state)
}

/// `POST /logout/confirm`: the person's answer. CSRF first, then the request is checked again.
pub async fn confirm(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let params = match page_params(&req, payload).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let csrf = Csrf::for_request(&req, &state.config);
    if !csrf.check("logout", params.get("csrf_token")) {
        tracing::info!("CSRF check failed on logout");
        return error_page(
            StatusCode::FORBIDDEN,
            "This form has expired",
            "The page was open too long or came from somewhere else. Go back to the application and try again.",
        );
    }
    // The form carries no hint; anything else it carries is checked as if new.
    let carried = Params::from_pairs(
        CARRIED
            .iter()
            .filter_map(|k| params.get(k).map(|v| (*k, v.to_owned()))),
    );
    let (_, _, target) = match checked(&state, &carried).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    match params.get("decision") {
        Some("logout") => {
            // Whatever the cookie names ends, live or gone idle meanwhile.
            if let Some(hash) = session_cookie_hash(&state, &req) {
                if let Err(resp) = end_session(&state, &req, hash).await {
                    return resp;
                }
            }
            finish(&state, target, true)
        }
        Some("stay") => finish(&state, target, false),
        _ => error_page(
            StatusCode::BAD_REQUEST,
            "This request is not valid",
            "Choose Sign out or Stay signed in.",
        ),
    }
}
