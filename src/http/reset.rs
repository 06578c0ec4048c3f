//! Password reset pages: `GET|POST /password/reset?token=...` (a link from `user reset-link` or
//! from mail), and, when `[smtp]` is configured, `GET|POST /password/forgot`, which answers the
//! same whether or not the account exists and mails the link in the background.

#![allow(clippy::result_large_err)]

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

use super::authorize::{client_ip, csrf_form, reserve_budget, stored, throttled, with_csrf_cookie};
use super::pages::{error_page, notice_page, page, render, Csrf};
use super::AppState;
use crate::crypto::{opaque, password};
use crate::oauth::request::Params;
use crate::oauth::reset::{create_link, usable};
use crate::oauth::user::{check_password_policy, normalize_username, User};

/// At most one mailed link per account in this long (the last one works for 30 minutes).
const MAIL_COOLDOWN_SECS: i64 = 300;

#[derive(Template)]
#[template(path = "reset.html")]
struct ResetPage<'a> {
    username: &'a str,
    token: &'a str,
    csrf_token: String,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "forgot.html")]
struct ForgotPage {
    csrf_token: String,
}

fn link_dead() -> HttpResponse {
    error_page(
        StatusCode::BAD_REQUEST,
        "This link no longer works",
        "Password-reset links work once, for 30 minutes. Ask for a new one.",
    )
}

/// The live link `token` and its user.
async fn live_link(
    state: &web::Data<AppState>,
    token: &str,
) -> Result<(String, User), HttpResponse> {
    if token.is_empty() || token.len() > 64 {
        return Err(link_dead());
    }
    let (st, hash, now) = (state.clone(), opaque::hash_secret(token), state.clock.now());
    let found = web::block(move || -> Result<_, crate::store::StoreError> {
        let Some(r) = st.store.find_reset(&hash)? else {
            return Ok(None);
        };
        if !usable(&r, now) {
            return Ok(None);
        }
        Ok(st.store.find_user(&r.user_id)?.map(|u| (hash, u)))
    })
    .await;
    stored(found)?.ok_or_else(link_dead)
}

fn reset_page(
    csrf: &Csrf,
    user: &User,
    token: &str,
    error: Option<&str>,
    status: StatusCode,
) -> HttpResponse {
    render(
        page(status),
        &ResetPage {
            username: &user.username,
            token,
            csrf_token: csrf.token("reset"),
            error,
        },
    )
}

/// `GET /password/reset?token=...`: the form, if the link still works.
pub async fn reset_form(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let params = Params::parse(req.query_string().as_bytes()).unwrap_or_default();
    let token = params.get("token").unwrap_or("").to_owned();
    let (_, user) = match live_link(&state, &token).await {
        Ok(l) => l,
        Err(resp) => return resp,
    };
    let csrf = Csrf::for_request(&req, &state.config);
    let resp = reset_page(&csrf, &user, &token, None, StatusCode::OK);
    with_csrf_cookie(resp, &csrf, &state)
}

/// `POST /password/reset`: set the new password; the link, sessions and refresh tokens end.
pub async fn reset_submit(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let (params, csrf) = match csrf_form(&state, &req, payload, "reset").await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let token = params.get("token").unwrap_or("").to_owned();
    let (hash, user) = match live_link(&state, &token).await {
        Ok(l) => l,
        Err(resp) => return resp,
    };
    let new = params.get("password").unwrap_or("").to_owned();
    if params.get("confirm") != Some(new.as_str()) {
        return reset_page(
            &csrf,
            &user,
            &token,
            Some("The two passwords are not the same."),
            StatusCode::BAD_REQUEST,
        );
    }
    if let Err(why) = check_password_policy(&new, &user.username) {
        let message = format!("Choose another password: {why}.");
        return reset_page(
            &csrf,
            &user,
            &token,
            Some(&message),
            StatusCode::BAD_REQUEST,
        );
    }
    let (st, now) = (state.clone(), state.clock.now());
    let done = state
        .hashing
        .run(move || -> Result<_, crate::store::StoreError> {
            let Ok(new_hash) = password::hash_password(&new) else {
                return Ok(None);
            };
            st.store.complete_reset(&hash, &new_hash, now)
        })
        .await;
    match done.and_then(stored) {
        Ok(Some(user_id)) => {
            tracing::info!(user_id = %user_id, "password reset");
            state.record(
                state
                    .audit(&req, "password.reset")
                    .user(user_id)
                    .detail("sessions and refresh tokens ended"),
            );
            notice_page(
                "Your password has been changed",
                "You are signed out everywhere. Go back to your application and sign in with the new password.",
            )
        }
        Ok(None) => link_dead(),
        Err(resp) => resp,
    }
}

fn no_mail() -> HttpResponse {
    error_page(
        StatusCode::NOT_FOUND,
        "Not available",
        "Password reset by email is not set up here. Ask your administrator for a reset link.",
    )
}

/// `GET /password/forgot`.
pub async fn forgot_form(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    if state.mailer.is_none() {
        return no_mail();
    }
    let csrf = Csrf::for_request(&req, &state.config);
    let resp = render(
        page(StatusCode::OK),
        &ForgotPage {
            csrf_token: csrf.token("forgot"),
        },
    );
    with_csrf_cookie(resp, &csrf, &state)
}

/// `POST /password/forgot`: the same answer whatever was typed; the mail goes out in the
/// background, so timing tells nothing either.
pub async fn forgot_submit(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    if state.mailer.is_none() {
        return no_mail();
    }
    let (params, _) = match csrf_form(&state, &req, payload, "forgot").await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let typed = params.get("account").unwrap_or("").trim().to_owned();
    let ip = client_ip(&req, state.config.login.trust_forwarded_for);
    let (st, now) = (state.clone(), state.clock.now());
    let event = state.audit(&req, "password.reset_requested");
    // Every request counts against the address's budget for these requests (its own, not the
    // sign-in failures', so asking for links cannot lock an address out of signing in): no mail
    // bombing from one place. Per account, see MAIL_COOLDOWN_SECS.
    let allowed = reserve_budget(&state, format!("forgot:{ip}"), now).await;
    if let Ok(true) = allowed {
        // The answer does not wait for the lookup, the link or the mail: whether the account
        // exists changes neither the page nor its timing.
        actix_web::rt::spawn(async move {
            let sent = web::block(move || mail_link(&st, &typed, now, event)).await;
            if let Ok(Err(error)) = sent {
                tracing::warn!(%error, "reset link not prepared");
            }
        });
    }
    match allowed {
        Ok(true) => notice_page(
            "Check your email",
            "If an account matches what you typed and has an email address, a link to reset its password is on its way. It works once, for 30 minutes.",
        ),
        Ok(false) => throttled(),
        Err(resp) => resp,
    }
}

/// Find the account `typed` names (username, or email of a local account), and mail it a link.
fn mail_link(
    st: &AppState,
    typed: &str,
    now: crate::clock::UnixTime,
    event: crate::audit::AuditEvent,
) -> Result<(), crate::store::StoreError> {
    let user = match normalize_username(typed) {
        Ok(name) => st.store.find_user_by_username(&name)?,
        Err(_) => None,
    };
    let user = match user {
        Some(u) => Some(u),
        None if typed.contains('@') => st
            .store
            .find_password_users_by_email(typed)?
            .into_iter()
            .next(),
        None => None,
    };
    let Some(user) = user.filter(|u| !u.locked && u.password_hash.is_some()) else {
        st.record(event.detail("no matching account"));
        return Ok(());
    };
    let Some(email) = user.email.clone() else {
        st.record(event.user(&user.id).detail("no email address"));
        return Ok(());
    };
    // The link mailed moments ago still works: no second one (no flooding an inbox from many
    // addresses, nor from parallel requests).
    let quiet_since = Some(now - MAIL_COOLDOWN_SECS);
    let Some(link) = create_link(&*st.store, st.config.base_url(), &user.id, now, quiet_since)?
    else {
        st.record(
            event
                .user(&user.id)
                .detail("a link was made recently; none mailed"),
        );
        return Ok(());
    };
    let name = user.name.clone().unwrap_or_else(|| user.username.clone());
    if let Some(mailer) = &st.mailer {
        match mailer.send_reset(&email, &name, &link.url) {
            Ok(()) => st.record(event.user(&user.id).detail("link mailed")),
            Err(error) => {
                tracing::warn!(%error, "reset mail not sent");
                // Refused by the relay, so never delivered: it must not hold the next request
                // back as "mailed moments ago". (After a timeout it may have been delivered; it
                // stays.)
                if error.not_delivered {
                    st.store.delete_reset(&link.token_hash)?;
                }
                st.record(event.user(&user.id).detail("mail failed"));
            }
        }
    }
    Ok(())
}
