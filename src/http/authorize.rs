//! The authorization endpoint and the pages of a sign-in: login and consent.
//!
//! The forms carry the authorization request's parameters, and every POST validates the request
//! again from scratch, so nothing about a pending request is trusted from the browser.

// Helpers here return the finished error page as `Err(HttpResponse)`; it is built once per
// request, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

use super::error::ApiError;
use super::pages::{self, error_page, page, render, Csrf};
use super::{form, AppState};
use crate::crypto::{jwt, opaque};
use crate::federation::Provider;
use crate::oauth::authorize::{
    decide, may_consent, redirect_with, AuthorizationRequest, AuthorizeError, Next, SignedIn,
    CARRIED,
};
use crate::oauth::client::Client;
use crate::oauth::error::{ErrorCode, OAuthError};
use crate::oauth::issue::IdTokenClaims;
use crate::oauth::login::{check_password, LoginOutcome};
use crate::oauth::request::Params;
use crate::oauth::user::User;
use crate::store::{CodeRecord, Session};

pub use crate::oauth::login::{SESSION_ABSOLUTE_SECS, SESSION_IDLE_SECS};

pub(super) const LOGIN_FAILED: &str = "The username or password is incorrect.";

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    client_name: &'a str,
    csrf_token: String,
    carried: Vec<(&'a str, &'a str)>,
    username: &'a str,
    error: Option<&'a str>,
    /// The CSRF token of the "Sign in with ..." forms.
    upstream_csrf: String,
    /// Configured upstream providers: (path segment, label).
    upstreams: Vec<(&'static str, &'static str)>,
    /// Offer "Forgot your password?" (mail is configured).
    forgot: bool,
}

/// The login page for the request in `params`.
fn login_page(
    state: &AppState,
    csrf: &Csrf,
    client: &Client,
    params: &Params,
    username: &str,
    error: Option<&str>,
    status: StatusCode,
) -> HttpResponse {
    let upstreams = [Provider::Google, Provider::Github]
        .into_iter()
        .filter(|p| state.upstreams.enabled(*p))
        .map(|p| (p.as_str(), p.label()))
        .collect();
    let page_data = LoginPage {
        client_name: &client.name,
        csrf_token: csrf.token("login"),
        carried: carried(params),
        username,
        error,
        upstream_csrf: csrf.token("upstream"),
        upstreams,
        forgot: state.mailer.is_some(),
    };
    render(page(status), &page_data)
}

#[derive(Template)]
#[template(path = "consent.html")]
struct ConsentPage<'a> {
    client_name: &'a str,
    user_display: &'a str,
    scope_lines: Vec<String>,
    csrf_token: String,
    carried: Vec<(&'a str, &'a str)>,
    redirect_host: String,
}

/// The plain-words line for a scope on the consent page.
fn describe_scope(scope: &str, client_name: &str) -> String {
    match scope {
        "openid" => "Know who you are (your account identifier)".into(),
        "profile" => "See your name and username".into(),
        "email" => "See your email address".into(),
        "address" => "See your postal address".into(),
        "phone" => "See your phone number".into(),
        "roles" => "See your roles".into(),
        "offline_access" => {
            format!("Stay connected: {client_name} keeps access while you are away")
        }
        other => format!("Use your account with the permission \u{201c}{other}\u{201d}"),
    }
}

pub(super) fn carried(params: &Params) -> Vec<(&'static str, &str)> {
    CARRIED
        .iter()
        .filter_map(|k| params.get(k).map(|v| (*k, v)))
        .collect()
}

/// The authorization request's parameters as a query string (what the pages carry).
pub(super) fn request_query(params: &Params) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in carried(params) {
        q.append_pair(k, v);
    }
    q.finish()
}

pub(super) fn with_csrf_cookie(
    mut resp: HttpResponse,
    csrf: &Csrf,
    state: &AppState,
) -> HttpResponse {
    if let Some(c) = csrf.cookie(&state.config) {
        let _ = resp.add_cookie(&c);
    }
    resp
}

/// A `303 See Other` to `location` (after a POST the browser must GET).
pub(super) fn see_other(location: &str) -> HttpResponse {
    // Registered URIs are checked for characters a header cannot carry; should one slip by,
    // a page, not actix's 500.
    let Ok(location) = header::HeaderValue::from_str(location) else {
        tracing::warn!("a redirect target cannot be sent as a Location header");
        return error_page(
            StatusCode::BAD_REQUEST,
            "Cannot return to the application",
            "Its registered return address is not valid. Ask its developers to register it again.",
        );
    };
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// RFC 6749 4.1.2.1 with RFC 9207: the error, the state and our issuer.
fn redirect_error(
    state: &AppState,
    redirect_uri: &str,
    error: &OAuthError,
    st: Option<&str>,
) -> HttpResponse {
    let mut pairs = vec![
        ("error", error.code.as_str()),
        ("error_description", error.description.as_str()),
    ];
    if let Some(s) = st {
        pairs.push(("state", s));
    }
    pairs.push(("iss", state.config.issuer.as_str()));
    tracing::info!(error = error.code.as_str(), "authorization request refused");
    see_other(&redirect_with(redirect_uri, &pairs))
}

pub(super) fn authorize_error(
    state: &AppState,
    req: &HttpRequest,
    e: AuthorizeError,
) -> HttpResponse {
    let detail = match &e {
        AuthorizeError::Page(_) => "error=invalid_request (no redirect)".to_owned(),
        AuthorizeError::Redirect { error, .. } => format!("error={}", error.code.as_str()),
    };
    state.record(state.audit(req, "authorize.refused").detail(detail));
    match e {
        AuthorizeError::Page(message) => {
            tracing::info!(%message, "authorization request refused without redirect");
            error_page(
                StatusCode::BAD_REQUEST,
                "This sign-in link is not valid",
                &message,
            )
        }
        AuthorizeError::Redirect {
            redirect_uri,
            error,
            state: st,
        } => redirect_error(state, &redirect_uri, &error, st.as_deref()),
    }
}

/// The result of a blocking storage call, its failure logged and turned into a 503 page.
pub(super) fn stored<T>(
    r: Result<Result<T, crate::store::StoreError>, actix_web::error::BlockingError>,
) -> Result<T, HttpResponse> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(error)) => {
            tracing::warn!(%error, "sign-in step failed");
            Err(unavailable())
        }
        Err(error) => {
            tracing::warn!(%error, "sign-in step failed");
            Err(unavailable())
        }
    }
}

pub(super) fn unavailable() -> HttpResponse {
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        "The service cannot complete sign-ins right now. Please try again in a moment.",
    )
}

/// Parse the query (GET) or form body (POST) of a page request; duplicates and bad bodies get
/// an error page, never a redirect.
pub(super) async fn page_params(
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Params, HttpResponse> {
    let parsed = if req.method() == actix_web::http::Method::POST {
        form::read(req, payload).await.map_err(|e| e.error)
    } else {
        Params::parse(req.query_string().as_bytes())
    };
    parsed.map_err(|e| {
        error_page(
            StatusCode::BAD_REQUEST,
            "This request is not valid",
            &e.description,
        )
    })
}

/// The client named `id`, if any (from the cache when it is there).
pub(super) async fn load_client(
    state: &web::Data<AppState>,
    id: Option<&str>,
) -> Result<Option<Arc<Client>>, HttpResponse> {
    let Some(id) = id.map(str::to_owned) else {
        return Ok(None);
    };
    if !crate::oauth::client::valid_client_id(&id) {
        return Ok(None);
    }
    if let Some(c) = state.clients.cached(&id) {
        return Ok(Some(c));
    }
    let st = state.clone();
    stored(web::block(move || st.clients.refresh(&*st.store, &id)).await)
}

/// The browser's live session and its user, if any.
pub(super) async fn current_session(
    state: &web::Data<AppState>,
    req: &HttpRequest,
) -> Result<Option<(String, Session, User)>, HttpResponse> {
    let Some(cookie) = pages::read_cookie(req, &state.config, "session") else {
        return Ok(None);
    };
    let hash = opaque::hash_secret(&cookie);
    let st = state.clone();
    let now = state.clock.now();
    let found = web::block(move || -> Result<_, crate::store::StoreError> {
        let Some(session) = st.store.find_session(&hash, now, SESSION_IDLE_SECS)? else {
            return Ok(None);
        };
        let user = st.store.find_user(&session.user_id)?;
        // A temporary lockout refuses new sign-ins only: guessing someone's password must not
        // end the session they already have (nor let them sign out of it).
        Ok(user.filter(|u| !u.locked).map(|u| (hash, session, u)))
    })
    .await;
    stored(found)
}

/// A browser sends no `SameSite=Lax` cookie with a POST from another site (a relying party's
/// auto-submitted form, OIDC Core 3.1.2.1 and RP-Initiated Logout 2 allow POST). Such a POST,
/// one without our session cookie, is answered with the same request as a GET to `path`: the
/// browser follows it as a top-level navigation, with the cookies. A GET never comes back here.
pub(super) fn retry_as_get(
    state: &AppState,
    req: &HttpRequest,
    params: &Params,
    path: &str,
) -> Option<HttpResponse> {
    if req.method() != actix_web::http::Method::POST
        || pages::read_cookie(req, &state.config, "session").is_some()
    {
        return None;
    }
    Some(
        HttpResponse::SeeOther()
            .insert_header((header::LOCATION, format!("{path}?{}", params.to_query())))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish(),
    )
}

/// `GET|POST /authorize`.
pub async fn authorize(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let params = match page_params(&req, payload).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    if let Some(resp) = retry_as_get(
        &state,
        &req,
        &params,
        crate::oauth::discovery::paths::AUTHORIZE,
    ) {
        return resp;
    }
    let client = match load_client(&state, params.get("client_id")).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let request = match AuthorizationRequest::validate(&params, client.as_deref()) {
        Ok(r) => r,
        Err(e) => return authorize_error(&state, &req, e),
    };
    let Some(client) = client else {
        return unavailable();
    };
    let session = match current_session(&state, &req).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    proceed(
        &state, &req, &params, &request, &client, session, false, None,
    )
    .await
}

/// Decide and act: login page, consent page, or a code. A session cookie made by this request
/// is set on whatever response comes out.
#[allow(clippy::too_many_arguments)]
pub(super) async fn proceed(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    params: &Params,
    request: &AuthorizationRequest,
    client: &Client,
    session: Option<(String, Session, User)>,
    just_now: bool,
    new_cookie: Option<String>,
) -> HttpResponse {
    let csrf = Csrf::for_request(req, &state.config);
    let mut resp = next_step(
        state, req, &csrf, params, request, client, session, just_now,
    )
    .await;
    resp = with_csrf_cookie(resp, &csrf, state);
    if let Some(value) = new_cookie {
        let c = pages::cookie(&state.config, "session", value, SESSION_ABSOLUTE_SECS);
        let _ = resp.add_cookie(&c);
    }
    resp
}

/// Whether a valid `id_token_hint` names someone other than `user`; an invalid hint is an error
/// redirect. Expired hints are fine (OIDC Core 3.1.2.1).
fn hint_mismatch(
    state: &AppState,
    req: &HttpRequest,
    request: &AuthorizationRequest,
    user: Option<&User>,
) -> Result<bool, HttpResponse> {
    let Some(hint) = &request.id_token_hint else {
        return Ok(false);
    };
    let keys = state.keys.current();
    let now = state.clock.now();
    match jwt::verify_ignoring_expiry::<IdTokenClaims>(
        &keys.set,
        hint,
        "JWT",
        &state.config.issuer,
        now,
    ) {
        Err(_) => Err(authorize_error(
            state,
            req,
            request.error(ErrorCode::InvalidRequest, "id_token_hint is not valid"),
        )),
        Ok(c) => Ok(user.is_some_and(|u| c.sub != u.id)),
    }
}

#[allow(clippy::too_many_arguments)]
async fn next_step(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    csrf: &Csrf,
    params: &Params,
    request: &AuthorizationRequest,
    client: &Client,
    session: Option<(String, Session, User)>,
    just_now: bool,
) -> HttpResponse {
    let now = state.clock.now();
    if let Some((_, _, user)) = &session {
        if !client.admits(&user.roles) {
            tracing::info!(client_id = %client.client_id, user_id = %user.id, "user lacks the client's required role");
            state.record(
                state
                    .audit(req, "access.role_missing")
                    .user(&user.id)
                    .client(&client.client_id)
                    .detail("required role missing"),
            );
            return authorize_error(
                state,
                req,
                request.error(
                    ErrorCode::AccessDenied,
                    "the user may not use this application",
                ),
            );
        }
    }
    let mismatch = match hint_mismatch(state, req, request, session.as_ref().map(|(_, _, u)| u)) {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    let approved = match &session {
        Some((_, _, user)) => {
            let (st, uid, cid) = (state.clone(), user.id.clone(), client.client_id.clone());
            match stored(web::block(move || st.store.granted_scopes(&uid, &cid)).await) {
                Ok(s) => s,
                Err(resp) => return resp,
            }
        }
        None => None,
    };
    let signed_in = session.as_ref().map(|(_, s, _)| SignedIn {
        auth_time: s.auth_time,
        just_now,
        hint_mismatch: mismatch,
    });
    match decide(request, client, signed_in, approved.as_deref(), now) {
        Err(e) => authorize_error(state, req, e),
        Ok(Next::Login) => login_page(
            state,
            csrf,
            client,
            params,
            request.login_hint.as_deref().unwrap_or(""),
            None,
            StatusCode::OK,
        ),
        Ok(Next::Consent) => {
            let Some((_, _, user)) = &session else {
                return unavailable();
            };
            let mut scope_lines: Vec<String> = request
                .scope
                .iter()
                .map(|s| describe_scope(s, &client.name))
                .collect();
            if scope_lines.is_empty() {
                scope_lines.push(format!("Recognise you when you use {}", client.name));
            }
            let page_data = ConsentPage {
                client_name: &client.name,
                user_display: user.name.as_deref().unwrap_or(&user.username),
                scope_lines,
                csrf_token: csrf.token("consent"),
                carried: carried(params),
                // Registration admits only URIs with a host; should one lack it, the page names
                // the scheme rather than nothing.
                redirect_host: url::Url::parse(&request.redirect_uri)
                    .map(|u| {
                        u.host_str()
                            .map_or_else(|| u.scheme().to_owned(), str::to_owned)
                    })
                    .unwrap_or_default(),
            };
            render(page(StatusCode::OK), &page_data)
        }
        Ok(Next::IssueCode) => match &session {
            Some((hash, s, user)) => issue_code(state, req, params, request, hash, s, user).await,
            None => unavailable(),
        },
    }
}

async fn issue_code(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    params: &Params,
    request: &AuthorizationRequest,
    session_hash: &str,
    session: &Session,
    user: &User,
) -> HttpResponse {
    let now = state.clock.now();
    let code = opaque::random_token();
    let record = CodeRecord {
        code_hash: opaque::hash_secret(&code),
        client_id: request.client_id.clone(),
        redirect_uri: request.redirect_uri.clone(),
        user_id: user.id.clone(),
        session_hash: session_hash.to_owned(),
        scope: request.scope.to_string(),
        nonce: request.nonce.clone(),
        code_challenge: request.code_challenge.clone(),
        auth_time: session.auth_time,
        amr: session.amr.clone(),
        expires_at: now + i64::from(state.config.tokens.authorization_code_ttl_secs),
        consumed_at: None,
        access_jti: None,
        access_exp: None,
        refresh_family: None,
    };
    let st = state.clone();
    match stored(web::block(move || st.store.save_code(&record)).await) {
        Ok(true) => {}
        // The session ended while the code was being issued: the request starts again with
        // whatever session the browser has now (the login page; `login_required` for
        // prompt=none; a code from the session that replaced it).
        Ok(false) => return see_other(&format!("/authorize?{}", request_query(params))),
        Err(resp) => return resp,
    }
    state.record(
        state
            .audit(req, "code.issued")
            .user(&user.id)
            .client(&request.client_id),
    );
    let mut pairs = vec![("code", code.as_str())];
    if let Some(s) = &request.state {
        pairs.push(("state", s));
    }
    pairs.push(("iss", state.config.issuer.as_str()));
    see_other(&redirect_with(&request.redirect_uri, &pairs))
}

/// A posted page form whose CSRF token for `purpose` checks out, checked before anything else
/// is read; the browser's CSRF state comes with it.
pub(super) async fn csrf_form(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
    purpose: &str,
) -> Result<(Params, Csrf), HttpResponse> {
    let params = page_params(req, payload).await?;
    let csrf = Csrf::for_request(req, &state.config);
    if !csrf.check(purpose, params.get("csrf_token")) {
        tracing::info!(purpose, "CSRF check failed");
        return Err(form_expired());
    }
    Ok((params, csrf))
}

/// Re-validate a posted form's authorization request; the CSRF token is checked first.
pub(super) async fn posted(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    payload: web::Payload,
    purpose: &str,
) -> Result<(Params, AuthorizationRequest, Arc<Client>), HttpResponse> {
    let (params, _) = csrf_form(state, req, payload, purpose).await?;
    let client = load_client(state, params.get("client_id")).await?;
    let request = AuthorizationRequest::validate(&params, client.as_deref())
        .map_err(|e| authorize_error(state, req, e))?;
    let client = client.ok_or_else(unavailable)?;
    Ok((params, request, client))
}

/// The page for a form whose CSRF token does not check out.
pub(super) fn form_expired() -> HttpResponse {
    error_page(
        StatusCode::FORBIDDEN,
        "This form has expired",
        "The page was open too long or came from somewhere else. Go back to the application and sign in again.",
    )
}

/// The client's IP: the peer address, or behind a trusted proxy the last `X-Forwarded-For`
/// entry (the one our proxy appended; earlier ones are the client's to forge).
/// Count a request against the per-address budget `key` (`login.ip_max_failures` per
/// `login.ip_window_secs`); whether it is within the budget.
pub(super) async fn reserve_budget(
    state: &web::Data<AppState>,
    key: String,
    now: crate::clock::UnixTime,
) -> Result<bool, HttpResponse> {
    let st = state.clone();
    stored(
        web::block(move || {
            let login = &st.config.login;
            let max = i32::try_from(login.ip_max_failures).unwrap_or(i32::MAX);
            st.store
                .reserve_ip(&key, now, i64::from(login.ip_window_secs), max)
        })
        .await,
    )
}

pub(super) fn client_ip(req: &HttpRequest, trust_forwarded_for: bool) -> String {
    let forwarded = trust_forwarded_for
        .then(|| {
            req.headers()
                .get_all("x-forwarded-for")
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|v| v.parse::<std::net::IpAddr>().is_ok())
                .last()
                .map(str::to_owned)
        })
        .flatten();
    forwarded
        .or_else(|| req.peer_addr().map(|a| a.ip().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

/// `POST /login`: check the password (off the async workers), start a new session, continue.
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let (params, request, client) = match posted(&state, &req, payload, "login").await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let typed = params.get("username").unwrap_or("").to_owned();
    let password_given = params.get("password").unwrap_or("").to_owned();
    let st = state.clone();
    let now = state.clock.now();
    let ip = client_ip(&req, state.config.login.trust_forwarded_for);
    let outcome = state
        .hashing
        .run(move || {
            check_password(
                &*st.store,
                &st.config.login,
                &ip,
                &typed,
                &password_given,
                now,
            )
        })
        .await;
    let user = match outcome.and_then(stored) {
        Ok(LoginOutcome::Success(u)) => *u,
        Ok(LoginOutcome::SecondFactor(u)) => {
            state.record(
                state
                    .audit(&req, "login.password_ok")
                    .user(&u.id)
                    .client(&client.client_id)
                    .detail("second factor required"),
            );
            return super::mfa::ask_second_factor(&state, &req, &params, &client, &u, "pwd").await;
        }
        Ok(LoginOutcome::Throttled) => {
            tracing::info!(client_id = %client.client_id, "sign-in throttled for this address");
            state.record(
                state
                    .audit(&req, "login.throttled")
                    .client(&client.client_id),
            );
            return throttled();
        }
        Ok(LoginOutcome::Failed {
            user_id,
            locked_now,
        }) => {
            tracing::info!(client_id = %client.client_id, "sign-in failed");
            record_failure(
                &state,
                &req,
                "login.failure",
                user_id,
                Some(&client),
                locked_now,
            );
            let csrf = Csrf::for_request(&req, &state.config);
            let username = params.get("username").unwrap_or("");
            return login_page(
                &state,
                &csrf,
                &client,
                &params,
                username,
                Some(LOGIN_FAILED),
                StatusCode::UNAUTHORIZED,
            );
        }
        Err(resp) => return resp,
    };
    let (hash, session, cookie_value) =
        match start_session(&state, &req, &user, vec!["pwd".into()]).await {
            Ok(s) => s,
            Err(resp) => return resp,
        };
    tracing::info!(client_id = %client.client_id, user_id = %user.id, "signed in");
    state.record(
        state
            .audit(&req, "login.success")
            .user(&user.id)
            .client(&client.client_id)
            .detail("amr=pwd"),
    );
    proceed(
        &state,
        &req,
        &params,
        &request,
        &client,
        Some((hash, session, user)),
        true,
        Some(cookie_value),
    )
    .await
}

/// Audit a failed sign-in step, and the lockout it may have started.
pub(super) fn record_failure(
    state: &AppState,
    req: &HttpRequest,
    event: &str,
    user_id: Option<String>,
    client: Option<&Client>,
    locked_now: bool,
) {
    let with_client = |mut e: crate::audit::AuditEvent| {
        if let Some(c) = client {
            e = e.client(&c.client_id);
        }
        e
    };
    let mut e = with_client(state.audit(req, event));
    if let Some(u) = &user_id {
        e = e.user(u);
    }
    state.record(e);
    if let (true, Some(u)) = (locked_now, user_id) {
        state.record(with_client(
            state
                .audit(req, "account.locked")
                .user(u)
                .detail("too many failed attempts"),
        ));
    }
}

/// The page for a sign-in refused by the per-IP limit.
pub(super) fn throttled() -> HttpResponse {
    error_page(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many attempts",
        "There were too many failed sign-ins from your network. Wait a few minutes and try again.",
    )
}

/// The hash of the session cookie this browser sent, if any.
pub(super) fn session_cookie_hash(state: &AppState, req: &HttpRequest) -> Option<String> {
    pages::read_cookie(req, &state.config, "session").map(|c| opaque::hash_secret(&c))
}

/// Start a new session for `user` in this browser, signed in by `amr`: a new id every time (no
/// fixation), and the browser's old session ends. Returns the session's hash, the session and
/// the cookie value to set.
pub(super) async fn start_session(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    user: &User,
    amr: Vec<String>,
) -> Result<(String, Session, String), HttpResponse> {
    let now = state.clock.now();
    let old = session_cookie_hash(state, req);
    let cookie_value = opaque::random_token();
    let hash = opaque::hash_secret(&cookie_value);
    let session = Session {
        user_id: user.id.clone(),
        auth_time: now,
        amr,
        expires_at: now + SESSION_ABSOLUTE_SECS,
    };
    // After a password, the session is opened only while that password is still the account's.
    let verified = (session.amr.first().map(String::as_str) == Some("pwd"))
        .then(|| user.password_hash.clone())
        .flatten();
    let (st, s, h) = (state.clone(), session.clone(), hash.clone());
    // The old session ends in the same transaction; its tokens follow the same person to the
    // new one, someone else's end with it.
    let created = web::block(move || {
        st.store
            .create_session(&h, &s, now, verified.as_deref(), old.as_deref())
    })
    .await;
    if !stored(created)? {
        tracing::info!(user_id = %user.id, "sign-in overtaken by a password change or a second factor turned on");
        return Err(password_changed());
    }
    Ok((hash, session, cookie_value))
}

/// The page for a sign-in whose password was changed (reset), or whose account turned on
/// two-step verification, while it was being checked.
pub(super) fn password_changed() -> HttpResponse {
    error_page(
        StatusCode::UNAUTHORIZED,
        "Sign in again",
        "The sign-in settings of this account changed while you were signing in (a new password, or two-step verification turned on). Go back to the application and sign in again.",
    )
}

/// `POST /consent`: remember an approval and issue the code, or send `access_denied`.
pub async fn consent(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let (params, request, client) = match posted(&state, &req, payload, "consent").await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let session = match current_session(&state, &req).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let Some((hash, session, user)) = session else {
        // Signed out meanwhile: start over at the login page.
        return proceed(&state, &req, &params, &request, &client, None, false, None).await;
    };
    if !client.admits(&user.roles) {
        return authorize_error(
            &state,
            &req,
            request.error(
                ErrorCode::AccessDenied,
                "the user may not use this application",
            ),
        );
    }
    match params.get("decision") {
        Some("allow") => {}
        Some("deny") => {
            tracing::info!(client_id = %client.client_id, "consent denied");
            state.record(
                state
                    .audit(&req, "consent.denied")
                    .user(&user.id)
                    .client(&client.client_id),
            );
            return redirect_error(
                &state,
                &request.redirect_uri,
                &OAuthError::new(ErrorCode::AccessDenied, "the user denied the request"),
                request.state.as_deref(),
            );
        }
        _ => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "This request is not valid",
                "Choose Allow or Deny.",
            )
        }
    }
    // The request's sign-in requirements hold at this POST too (prompt=login, max_age,
    // id_token_hint): a stale sign-in goes back to the login page.
    let mismatch = match hint_mismatch(&state, &req, &request, Some(&user)) {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    let signed_in = SignedIn {
        auth_time: session.auth_time,
        just_now: false,
        hint_mismatch: mismatch,
    };
    match may_consent(&request, signed_in, state.clock.now()) {
        Ok(true) => {}
        Ok(false) => {
            return proceed(&state, &req, &params, &request, &client, None, false, None).await;
        }
        Err(e) => return authorize_error(&state, &req, e),
    }
    let (st, uid, cid) = (state.clone(), user.id.clone(), client.client_id.clone());
    let scopes: Vec<String> = request.scope.iter().map(str::to_owned).collect();
    let now = state.clock.now();
    let saved = web::block(move || -> Result<(), crate::store::StoreError> {
        let mut all = st.store.granted_scopes(&uid, &cid)?.unwrap_or_default();
        for s in scopes {
            if !all.contains(&s) {
                all.push(s);
            }
        }
        st.store.save_consent(&uid, &cid, &all, now)
    })
    .await;
    if let Err(resp) = stored(saved) {
        return resp;
    }
    tracing::info!(client_id = %client.client_id, user_id = %user.id, "consent granted");
    state.record(
        state
            .audit(&req, "consent.granted")
            .user(&user.id)
            .client(&client.client_id)
            .detail(format!("scope={}", request.scope)),
    );
    issue_code(&state, &req, &params, &request, &hash, &session, &user).await
}

/// `GET|POST /userinfo` (OIDC Core 5.3): Bearer header, or `access_token` in a form body.
pub async fn userinfo(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let bearer_error = |e: OAuthError| -> HttpResponse {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        let challenge = format!(
            "Bearer error=\"{}\", error_description=\"{}\"",
            e.code.as_str(),
            e.description
        );
        HttpResponse::build(status)
            .insert_header((header::WWW_AUTHENTICATE, challenge))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(&e)
    };
    let from_header = match form::bearer(&req) {
        Some("") => {
            return Ok(bearer_error(OAuthError::invalid_request(
                "the Bearer credentials are empty",
            )))
        }
        other => other.map(str::to_owned),
    };
    // A body that is not a form carries no token (RFC 6750 2.2).
    let from_body = if req.method() == actix_web::http::Method::POST && form::is_form(&req) {
        match form::read(&req, payload).await {
            Ok(p) => p.get("access_token").map(str::to_owned),
            // A repeated or NUL-bearing parameter: invalid_request with the Bearer challenge
            // (RFC 6750 3.1); an oversized body keeps its 413.
            Err(e) if e.status.is_none() => return Ok(bearer_error(e.error)),
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let token = match (from_header, from_body) {
        (Some(_), Some(_)) => {
            // RFC 6750 2: a client MUST NOT use more than one method.
            return Ok(bearer_error(OAuthError::invalid_request(
                "send the access token one way only: the Authorization header or the body",
            )));
        }
        (header, body) => header.or(body),
    };
    let Some(token) = token else {
        // RFC 6750 3.1: no credentials, no error code.
        return Ok(HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"portcullis\""))
            .finish());
    };
    let st = state.clone();
    let result = web::block(move || {
        let keys = st.keys.current();
        crate::oauth::userinfo::userinfo(&st.issuer(&keys), &token, &*st.store)
    })
    .await?;
    Ok(match result {
        Ok(claims) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(claims),
        Err(e) if e.code == ErrorCode::TemporarilyUnavailable => ApiError::from(e).into_response(),
        Err(e) => bearer_error(e),
    })
}
