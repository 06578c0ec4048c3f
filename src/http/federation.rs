//! "Sign in with Google / GitHub": starting an upstream sign-in from the login page, its
//! callback, and the page that links an upstream identity to an existing local account.
//!
//! The upstream `state`, PKCE verifier and nonce live in the database (`upstream_logins`), bound
//! to the browser that started (through its CSRF secret) and to the authorization request it
//! continues; the callback uses a state once, from that browser only, within
//! `login.upstream_state_ttl_secs`. Every failure is our error page with a way back to the
//! login page; nothing upstream says ever redirects to the client.

#![allow(clippy::result_large_err)]

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

use super::authorize::{
    client_ip, csrf_form, form_expired, load_client, posted, proceed, request_query,
    reserve_budget, see_other, start_session, stored, throttled, with_csrf_cookie, LOGIN_FAILED,
};
use super::pages::{error_page, error_page_back, page, render, Csrf};
use super::AppState;
use crate::crypto::opaque;
use crate::federation::{self, Account, FederationError, Provider, UpstreamIdentity};
use crate::oauth::authorize::AuthorizationRequest;
use crate::oauth::client::Client;
use crate::oauth::login::{check_password, LoginOutcome};
use crate::oauth::request::Params;
use crate::oauth::user::User;
use crate::store::{PendingLink, TakenState, UpstreamLogin};

#[derive(Template)]
#[template(path = "link.html")]
struct LinkPage<'a> {
    provider: &'a str,
    email: &'a str,
    username: &'a str,
    csrf_token: String,
    link_token: &'a str,
    error: Option<&'a str>,
}

/// The provider named in the path, if it is configured.
fn provider(state: &AppState, req: &HttpRequest) -> Result<Provider, HttpResponse> {
    req.match_info()
        .get("provider")
        .and_then(Provider::parse)
        .filter(|p| state.upstreams.enabled(*p))
        .ok_or_else(|| {
            error_page(
                StatusCode::NOT_FOUND,
                "Page not found",
                "This sign-in option is not available.",
            )
        })
}

/// The login page of the authorization request stored as `request`.
fn back_link(request: &str) -> String {
    format!("/authorize?{request}")
}

/// The identity was recorded from another issuer (the provider was reconfigured).
fn other_issuer(provider: &str, request: &str) -> HttpResponse {
    tracing::warn!(
        provider,
        "upstream subject recorded from another issuer; sign-in refused"
    );
    error_page_back(
        StatusCode::FORBIDDEN,
        "This account cannot sign in here",
        "It was registered through a different sign-in provider configuration. Contact the administrator.",
        &back_link(request),
    )
}

/// The per-address budget of upstream starts that brought back no identity.
fn upstream_budget(ip: &str) -> String {
    format!("upstream:{ip}")
}

/// A start that stored nothing, or came back with an identity, stops counting.
async fn give_back_start(state: &web::Data<AppState>, req: &HttpRequest) {
    let (st, ip) = (
        state.clone(),
        client_ip(req, state.config.login.trust_forwarded_for),
    );
    if let Ok(Err(error)) = web::block(move || st.store.release_ip(&upstream_budget(&ip))).await {
        tracing::warn!(%error, "upstream start not given back");
    }
}

fn too_many_starts() -> HttpResponse {
    error_page(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many unfinished sign-ins",
        "Too many sign-ins with an outside provider were started from your network without finishing. Wait a few minutes and try again.",
    )
}

/// `POST /login/{provider}`: from the login page's "Sign in with ..." button.
pub async fn start(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let provider = match provider(&state, &req) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let (params, _request, client) = match posted(&state, &req, payload, "upstream").await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let csrf = Csrf::for_request(&req, &state.config);
    let Some(browser_hash) = csrf.binding() else {
        return form_expired();
    };
    // Each start stores a row until it expires: an address gets `ip_max_failures` starts per
    // window that bring back no identity (one the provider vouches for is given back), so that
    // a loop of starts cannot fill the database.
    let ip = client_ip(&req, state.config.login.trust_forwarded_for);
    match reserve_budget(&state, upstream_budget(&ip), state.clock.now()).await {
        Ok(true) => {}
        Ok(false) => return too_many_starts(),
        Err(resp) => return resp,
    }
    let request = request_query(&params);
    let st = state.clone();
    let started = web::block(move || st.upstreams.start(provider)).await;
    let started = match started {
        Ok(Some(Ok(s))) => s,
        Ok(Some(Err(e))) => {
            give_back_start(&state, &req).await;
            return upstream_failed(&state, &req, provider, &e, &request);
        }
        Ok(None) | Err(_) => {
            give_back_start(&state, &req).await;
            return super::authorize::unavailable();
        }
    };
    let now = state.clock.now();
    let login = UpstreamLogin {
        state_hash: opaque::hash_secret(&started.state),
        provider: provider.as_str().to_owned(),
        browser_hash,
        pkce_verifier: started.pkce_verifier,
        nonce: started.nonce,
        request,
        created_at: now,
        expires_at: now + i64::from(state.config.login.upstream_state_ttl_secs),
    };
    let st = state.clone();
    if let Err(resp) = stored(web::block(move || st.store.save_upstream_login(&login)).await) {
        give_back_start(&state, &req).await;
        return resp;
    }
    tracing::info!(provider = provider.as_str(), client_id = %client.client_id, "sign-in sent upstream");
    see_other(&started.url)
}

/// The page for a failed upstream step; `request` is the authorization request to go back to.
fn upstream_failed(
    state: &AppState,
    req: &HttpRequest,
    provider: Provider,
    e: &FederationError,
    request: &str,
) -> HttpResponse {
    tracing::info!(provider = provider.as_str(), error = %e, "upstream sign-in failed");
    let kind = match e {
        FederationError::Denied => "denied",
        FederationError::Upstream(_) => "upstream_error",
        FederationError::Timeout => "timeout",
        FederationError::InvalidIdToken(_) => "invalid_id_token",
    };
    state.record(
        state
            .audit(req, "login.failure")
            .detail(format!("provider={} reason={kind}", provider.as_str())),
    );
    let label = provider.label();
    let back = back_link(request);
    let (status, title, message) = match e {
        FederationError::Denied => (
            StatusCode::FORBIDDEN,
            format!("Sign-in with {label} was cancelled"),
            format!("{label} did not sign you in. You can try again or sign in another way."),
        ),
        FederationError::Timeout => (
            StatusCode::GATEWAY_TIMEOUT,
            format!("{label} did not answer"),
            format!("{label} took too long to answer. Please try again in a moment."),
        ),
        FederationError::Upstream(_) => (
            StatusCode::BAD_GATEWAY,
            format!("{label} could not sign you in"),
            format!("Something went wrong while talking to {label}. Please try again or sign in another way."),
        ),
        FederationError::InvalidIdToken(_) => (
            StatusCode::BAD_GATEWAY,
            format!("{label} could not sign you in"),
            format!("The answer from {label} could not be verified, so it was not used. Please try again or sign in another way."),
        ),
    };
    error_page_back(status, &title, &message, &back)
}

/// A refused callback: the page, with a way back to the login page when we know the request.
fn callback_refused(title: &str, message: &str, request: Option<&str>) -> HttpResponse {
    tracing::info!(reason = title, "upstream callback refused");
    match request {
        Some(r) => error_page_back(StatusCode::BAD_REQUEST, title, message, &back_link(r)),
        None => error_page(StatusCode::BAD_REQUEST, title, message),
    }
}

/// `GET /login/{provider}/callback`: the provider sends the browser back here.
pub async fn callback(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let provider = match provider(&state, &req) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let csrf = Csrf::for_request(&req, &state.config);
    // A browser without our cookie cannot have started anything; "" matches no row.
    let browser_hash = csrf.binding().unwrap_or_default();
    let now = state.clock.now();
    let params = Params::parse(req.query_string().as_bytes()).ok();
    let state_param = params
        .as_ref()
        .and_then(|p| p.get("state"))
        .filter(|s| !s.is_empty() && s.len() <= 512)
        .map(str::to_owned);
    let Some(state_param) = state_param else {
        let latest = latest_request(&state, &browser_hash).await;
        return callback_refused(
            "This sign-in link is not valid",
            "The answer from the sign-in provider was incomplete. Please start again.",
            latest.as_deref(),
        );
    };
    let (st, hash, bh) = (
        state.clone(),
        opaque::hash_secret(&state_param),
        browser_hash.clone(),
    );
    let taken =
        match stored(web::block(move || st.store.take_upstream_login(&hash, &bh, now)).await) {
            Ok(t) => t,
            Err(resp) => return resp,
        };
    let login = match taken {
        TakenState::Taken(l) => l,
        TakenState::Unknown => {
            let latest = latest_request(&state, &browser_hash).await;
            return callback_refused(
                "This sign-in could not be completed",
                "The answer from the sign-in provider does not match a sign-in started here. Please start again.",
                latest.as_deref(),
            );
        }
        TakenState::OtherBrowser(_) => {
            // The way back is to this browser's own request, never the one that started.
            let latest = latest_request(&state, &browser_hash).await;
            return callback_refused(
                "This sign-in was started in another browser",
                "For your safety, a sign-in must finish in the browser it started in. Please start again here.",
                latest.as_deref(),
            );
        }
        TakenState::Used(l) => {
            return callback_refused(
                "This sign-in was already used",
                "Each sign-in with an outside provider can be completed once. Please start again.",
                Some(&l.request),
            );
        }
    };
    if login.provider != provider.as_str() {
        return callback_refused(
            "This sign-in could not be completed",
            "The answer came from a different sign-in provider than the one chosen. Please start again.",
            Some(&login.request),
        );
    }
    if login.expires_at <= now {
        return callback_refused(
            "This sign-in took too long",
            "The sign-in with the outside provider expired. Please start again.",
            Some(&login.request),
        );
    }
    // Before any code is redeemed: the request must still be valid (the client may have
    // changed meanwhile).
    let pending = match revalidate(&state, &login.request).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let params = params.unwrap_or_default();
    if let Some(error) = params.get("error") {
        let e = if error == "access_denied" {
            FederationError::Denied
        } else {
            // Only a short, plain error code goes to the log.
            let code: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            FederationError::Upstream(format!("error={code}"))
        };
        return upstream_failed(&state, &req, provider, &e, &login.request);
    }
    let Some(code) = params
        .get("code")
        .filter(|c| !c.is_empty() && c.len() <= 2048)
    else {
        return upstream_failed(
            &state,
            &req,
            provider,
            &FederationError::Upstream("callback without a code".into()),
            &login.request,
        );
    };
    let (st, code, verifier, nonce) = (
        state.clone(),
        code.to_owned(),
        login.pkce_verifier.clone(),
        login.nonce.clone(),
    );
    let finished =
        web::block(move || st.upstreams.finish(provider, &code, &verifier, &nonce, now)).await;
    let identity = match finished {
        // The provider vouched for someone: this start no longer counts against the address
        // (a callback alone, `error=` say, gives nothing back: it costs nothing to send).
        Ok(Some(Ok(identity))) => {
            give_back_start(&state, &req).await;
            identity
        }
        Ok(Some(Err(e))) => return upstream_failed(&state, &req, provider, &e, &login.request),
        Ok(None) | Err(_) => return super::authorize::unavailable(),
    };
    let st = state.clone();
    let id = identity.clone();
    let account = match stored(web::block(move || federation::find_account(&*st.store, &id)).await)
    {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    match account {
        Account::Known(user) => sign_in(&state, &req, *user, &pending, &login.request).await,
        Account::New => create_and_sign_in(&state, &req, &identity, &pending, &login.request).await,
        Account::OtherIssuer => other_issuer(provider.as_str(), &login.request),
        Account::LinkOffer(user) => {
            offer_link(
                &state,
                &csrf,
                &browser_hash,
                &identity,
                &user,
                &login.request,
            )
            .await
        }
    }
}

/// The request this browser most recently sent upstream, to offer a way back.
async fn latest_request(state: &web::Data<AppState>, browser_hash: &str) -> Option<String> {
    if browser_hash.is_empty() {
        return None;
    }
    let (st, bh) = (state.clone(), browser_hash.to_owned());
    match web::block(move || st.store.latest_upstream_login(&bh)).await {
        Ok(Ok(Some(l))) => Some(l.request),
        _ => None,
    }
}

/// An authorization request waiting for an upstream sign-in, validated again.
type Pending = (Params, AuthorizationRequest, Arc<Client>);

/// The stored authorization request `request`, validated again: the client may have changed
/// since it was sent upstream. A request no longer valid gets a page (never a redirect).
async fn revalidate(state: &web::Data<AppState>, request: &str) -> Result<Pending, HttpResponse> {
    let gone = || {
        error_page(
            StatusCode::BAD_REQUEST,
            "This sign-in request is no longer valid",
            "The application's sign-in request cannot be completed. Go back to the application and sign in again.",
        )
    };
    let params = Params::parse(request.as_bytes()).map_err(|_| gone())?;
    let client = load_client(state, params.get("client_id")).await?;
    let validated = AuthorizationRequest::validate(&params, client.as_deref());
    match (validated, client) {
        (Ok(request), Some(client)) => Ok((params, request, client)),
        _ => {
            tracing::info!("stored authorization request no longer valid");
            Err(gone())
        }
    }
}

/// Sign `user` in (amr `fed`) and continue the pending authorization request (`request` is
/// its query string, for the way back).
async fn sign_in(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    user: User,
    pending: &Pending,
    request: &str,
) -> HttpResponse {
    // Only an operator's lock stops an upstream sign-in. A temporary lockout (wrong passwords,
    // by anyone) guards the password, which the upstream did not use: honouring it here would
    // let a stranger shut a linked person out of Google and GitHub too. A second factor still
    // refuses codes during the lockout.
    if user.locked {
        tracing::info!(user_id = %user.id, "federated sign-in to a locked account refused");
        return error_page_back(
            StatusCode::FORBIDDEN,
            "This account is locked",
            "This account cannot sign in at the moment. Contact the administrator if this is unexpected.",
            &back_link(request),
        );
    }
    let (params, request, client) = pending;
    // An account with a second factor gets it after the upstream too.
    let (st, uid) = (state.clone(), user.id.clone());
    match stored(web::block(move || st.store.find_totp(&uid)).await) {
        Ok(Some(t)) if t.confirmed => {
            return super::mfa::ask_second_factor(state, req, params, client, &user, "fed").await;
        }
        Ok(_) => {}
        Err(resp) => return resp,
    }
    let (hash, session, cookie) = match start_session(state, req, &user, vec!["fed".into()]).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    tracing::info!(client_id = %client.client_id, user_id = %user.id, "signed in through upstream");
    state.record(
        state
            .audit(req, "login.success")
            .user(&user.id)
            .client(&client.client_id)
            .detail("amr=fed"),
    );
    proceed(
        state,
        req,
        params,
        request,
        client,
        Some((hash, session, user)),
        true,
        Some(cookie),
    )
    .await
}

/// First sign-in of an identity: a new user `provider:subject`, then continue.
async fn create_and_sign_in(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    identity: &UpstreamIdentity,
    pending: &Pending,
    request: &str,
) -> HttpResponse {
    let now = state.clock.now();
    let user = federation::new_user(identity, now);
    let (st, provider, subject, issuer) = (
        state.clone(),
        identity.provider.as_str(),
        identity.subject.clone(),
        identity.issuer.clone(),
    );
    let created = web::block(move || {
        st.store
            .create_federated_user(&user, provider, &subject, &issuer)
    })
    .await;
    let found = match stored(created) {
        // A parallel first sign-in created it, from another issuer: refused as find_account
        // refuses it.
        Ok(f) if f.issuer != identity.issuer => return other_issuer(provider, request),
        Ok(f) => f,
        Err(resp) => return resp,
    };
    // Created only if this call did: a parallel first sign-in (or a link of the same identity
    // from another tab) is the account the identity now belongs to, and was recorded there.
    if found.created {
        tracing::info!(provider, user_id = %found.user.id, "federated user created");
        state.record(
            state
                .audit(req, "federation.user_created")
                .user(&found.user.id)
                .detail(format!("provider={provider}")),
        );
    }
    sign_in(state, req, found.user, pending, request).await
}

/// A verified email matched a local account: offer to link it, behind its password.
async fn offer_link(
    state: &web::Data<AppState>,
    csrf: &Csrf,
    browser_hash: &str,
    identity: &UpstreamIdentity,
    candidate: &User,
    request: &str,
) -> HttpResponse {
    let Some(email) = identity.verified_email.clone() else {
        return super::authorize::unavailable();
    };
    let token = opaque::random_token();
    let link = PendingLink {
        link_hash: opaque::hash_secret(&token),
        browser_hash: browser_hash.to_owned(),
        provider: identity.provider.as_str().to_owned(),
        subject: identity.subject.clone(),
        issuer: identity.issuer.clone(),
        name: identity.name.clone(),
        email,
        user_id: candidate.id.clone(),
        request: request.to_owned(),
        // As long as the upstream sign-in itself may take.
        expires_at: state.clock.now() + i64::from(state.config.login.upstream_state_ttl_secs),
    };
    let st = state.clone();
    let l = link.clone();
    if let Err(resp) = stored(web::block(move || st.store.save_pending_link(&l)).await) {
        return resp;
    }
    tracing::info!(provider = %link.provider, "upstream email matches a local account; linking offered");
    let resp = link_page(
        csrf,
        &link,
        &candidate.username,
        &token,
        None,
        StatusCode::OK,
    );
    with_csrf_cookie(resp, csrf, state)
}

fn link_page(
    csrf: &Csrf,
    link: &PendingLink,
    username: &str,
    token: &str,
    error: Option<&str>,
    status: StatusCode,
) -> HttpResponse {
    let label = Provider::parse(&link.provider).map_or("the provider", Provider::label);
    render(
        page(status),
        &LinkPage {
            provider: label,
            email: &link.email,
            username,
            csrf_token: csrf.token("link"),
            link_token: token,
            error,
        },
    )
}

/// `POST /login/link`: link with the local password, or keep the accounts apart.
pub async fn link(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let (params, csrf) = match csrf_form(&state, &req, payload, "link").await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let browser_hash = csrf.binding().unwrap_or_default();
    let token = params.get("link_token").unwrap_or("").to_owned();
    let now = state.clock.now();
    let (st, hash) = (state.clone(), opaque::hash_secret(&token));
    let found = web::block(move || -> Result<_, crate::store::StoreError> {
        let Some(link) = st.store.find_pending_link(&hash, now)? else {
            return Ok(None);
        };
        let user = st.store.find_user(&link.user_id)?;
        Ok(user.map(|u| (link, u)))
    })
    .await;
    let (link, candidate) = match stored(found) {
        Ok(Some((l, u))) if l.browser_hash == browser_hash => (l, u),
        Ok(_) => {
            let latest = latest_request(&state, &browser_hash).await;
            return callback_refused(
                "This page has expired",
                "Linking must finish in the same browser, soon after it starts. Please sign in again.",
                latest.as_deref(),
            );
        }
        Err(resp) => return resp,
    };
    let identity = UpstreamIdentity {
        provider: Provider::parse(&link.provider).unwrap_or(Provider::Google),
        subject: link.subject.clone(),
        issuer: link.issuer.clone(),
        name: link.name.clone(),
        verified_email: Some(link.email.clone()),
    };
    let pending = match revalidate(&state, &link.request).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    match params.get("decision") {
        Some("link") => {}
        Some("new") => {
            // Single use: whoever deletes the pending link goes on.
            let (st, h) = (state.clone(), link.link_hash.clone());
            match stored(web::block(move || st.store.delete_pending_link(&h)).await) {
                Ok(true) => {}
                Ok(false) => {
                    return callback_refused(
                        "This page has expired",
                        "It was already used. Please sign in again.",
                        Some(&link.request),
                    )
                }
                Err(resp) => return resp,
            }
            return create_and_sign_in(&state, &req, &identity, &pending, &link.request).await;
        }
        _ => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "This request is not valid",
                "Choose to link the accounts or to create a new one.",
            )
        }
    }
    let password = params.get("password").unwrap_or("").to_owned();
    let ip = client_ip(&req, state.config.login.trust_forwarded_for);
    let (st, username) = (state.clone(), candidate.username.clone());
    let outcome = state
        .hashing
        .run(move || check_password(&*st.store, &st.config.login, &ip, &username, &password, now))
        .await;
    let user = match outcome.and_then(stored) {
        Ok(LoginOutcome::Success(u)) if u.id == link.user_id => *u,
        Ok(LoginOutcome::Throttled) => return throttled(),
        Ok(LoginOutcome::SecondFactor(_)) => {
            // Linking would let the upstream stand in for the password and the second factor.
            tracing::info!(provider = %link.provider, "linking refused: account has a second factor");
            return error_page_back(
                StatusCode::FORBIDDEN,
                "This account cannot be linked",
                "It uses two-step verification, so it can only be signed in to with its password and code. Keep the accounts apart or sign in with the password.",
                &back_link(&link.request),
            );
        }
        Ok(other) => {
            tracing::info!(provider = %link.provider, "linking refused: wrong password");
            let locked_now = matches!(
                other,
                LoginOutcome::Failed {
                    locked_now: true,
                    ..
                }
            );
            let mut e = state
                .audit(&req, "login.failure")
                .user(&candidate.id)
                .detail(format!("linking provider={}", link.provider));
            e.client_id = None;
            state.record(e);
            if locked_now {
                state.record(
                    state
                        .audit(&req, "account.locked")
                        .user(&candidate.id)
                        .detail("too many failed attempts"),
                );
            }
            return link_page(
                &csrf,
                &link,
                &candidate.username,
                &token,
                Some(LOGIN_FAILED),
                StatusCode::UNAUTHORIZED,
            );
        }
        Err(resp) => return resp,
    };
    let (st, l, uid) = (state.clone(), link.clone(), user.id.clone());
    let checked = user.password_hash.clone().unwrap_or_default();
    let linked = web::block(move || -> Result<bool, crate::store::StoreError> {
        if !st.store.delete_pending_link(&l.link_hash)? {
            return Ok(false);
        }
        st.store
            .link_identity(&l.provider, &l.subject, &l.issuer, &uid, &checked, now)
    })
    .await;
    match stored(linked) {
        Ok(true) => {}
        Ok(false) => {
            return callback_refused(
                "This page has expired",
                "It was already used, or this sign-in is linked to another account already. Please sign in again.",
                Some(&link.request),
            )
        }
        Err(resp) => return resp,
    }
    tracing::info!(provider = %link.provider, user_id = %user.id, "upstream identity linked");
    state.record(
        state
            .audit(&req, "federation.linked")
            .user(&user.id)
            .detail(format!("provider={}", link.provider)),
    );
    sign_in(&state, &req, user, &pending, &link.request).await
}
