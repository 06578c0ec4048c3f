//! The second factor: the TOTP page after a right password (`POST /login/totp`), and enrolment
//! by a signed-in person (`GET|POST /account/totp`: a QR code, confirmed with a first code, then
//! ten recovery codes shown once).

#![allow(clippy::result_large_err)]

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

use super::authorize::{
    carried, client_ip, csrf_form, current_session, form_expired, posted, proceed, start_session,
    stored, throttled, with_csrf_cookie,
};
use super::pages::{error_page, error_page_back, page, render, Csrf};
use super::AppState;
use crate::crypto::opaque;
use crate::oauth::client::Client;
use crate::oauth::request::Params;
use crate::oauth::totp::{self, SecondFactorOutcome};
use crate::oauth::user::User;
use crate::store::{PendingMfa, StoreError};

/// How long the second-factor page may stay open after the password.
const PENDING_SECS: i64 = 300;
const CODE_FAILED: &str = "That code is not right, or was already used. Try the next one.";

#[derive(Template)]
#[template(path = "totp.html")]
struct TotpPage<'a> {
    client_name: &'a str,
    csrf_token: String,
    mfa_token: &'a str,
    carried: Vec<(&'a str, &'a str)>,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "totp_enrol.html")]
struct EnrolPage<'a> {
    qr_svg: &'a str,
    secret: &'a str,
    csrf_token: String,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "recovery_codes.html")]
struct RecoveryPage<'a> {
    codes: &'a [String],
    /// A new set in place of earlier codes (not a first enrolment).
    replaced: bool,
}

#[derive(Template)]
#[template(path = "totp_on.html")]
struct OnPage<'a> {
    csrf_token: String,
    codes_left: i64,
    error: Option<&'a str>,
}

fn totp_page(
    csrf: &Csrf,
    client: &Client,
    params: &Params,
    mfa_token: &str,
    error: Option<&str>,
    status: StatusCode,
) -> HttpResponse {
    render(
        page(status),
        &TotpPage {
            client_name: &client.name,
            csrf_token: csrf.token("totp"),
            mfa_token,
            carried: carried(params),
            error,
        },
    )
}

/// After a first factor (`pwd`, or `fed`) for an account with TOTP: remember that
/// (browser-bound, 5 minutes) and ask for the code.
pub(super) async fn ask_second_factor(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    params: &Params,
    client: &Client,
    user: &User,
    first_factor: &str,
) -> HttpResponse {
    let csrf = Csrf::for_request(req, &state.config);
    let Some(browser_hash) = csrf.binding() else {
        return form_expired();
    };
    let token = opaque::random_token();
    let pending = PendingMfa {
        id_hash: opaque::hash_secret(&token),
        user_id: user.id.clone(),
        first_factor: first_factor.to_owned(),
        browser_hash,
        expires_at: state.clock.now() + PENDING_SECS,
    };
    // After a password, only while it is still the account's (a reset may have committed
    // since it was checked).
    let verified = (first_factor == "pwd")
        .then(|| user.password_hash.clone())
        .flatten();
    let st = state.clone();
    match stored(web::block(move || st.store.save_pending_mfa(&pending, verified.as_deref())).await)
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(user_id = %user.id, "sign-in overtaken by a password change");
            return super::authorize::password_changed();
        }
        Err(resp) => return resp,
    }
    tracing::info!(client_id = %client.client_id, user_id = %user.id, "first factor accepted; second factor asked");
    let resp = totp_page(&csrf, client, params, &token, None, StatusCode::OK);
    with_csrf_cookie(resp, &csrf, state)
}

/// `POST /login/totp`: the code (or a recovery code) after the password.
pub async fn login_totp(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let (params, request, client) = match posted(&state, &req, payload, "totp").await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let csrf = Csrf::for_request(&req, &state.config);
    let browser_hash = csrf.binding().unwrap_or_default();
    let token = params.get("mfa_token").unwrap_or("").to_owned();
    let now = state.clock.now();
    let (st, hash) = (state.clone(), opaque::hash_secret(&token));
    let pending = match stored(web::block(move || st.store.find_pending_mfa(&hash, now)).await) {
        Ok(Some(p)) if p.browser_hash == browser_hash => p,
        Ok(_) => {
            let back = format!("/authorize?{}", query_of(&params));
            return error_page_back(
                StatusCode::BAD_REQUEST,
                "This page has expired",
                "Two-step verification must follow the password within five minutes, in the same browser. Please sign in again.",
                &back,
            );
        }
        Err(resp) => return resp,
    };
    let outcome = second_factor(
        &state,
        &req,
        &pending.user_id,
        &params,
        totp::Accept::AppOrRecovery,
    )
    .await;
    let user = match outcome {
        Ok(SecondFactorOutcome::Success(u)) => *u,
        Ok(SecondFactorOutcome::Throttled) => {
            state.record(
                state
                    .audit(&req, "login.throttled")
                    .client(&client.client_id),
            );
            return throttled();
        }
        Ok(SecondFactorOutcome::Failed { locked_now }) => {
            tracing::info!(client_id = %client.client_id, user_id = %pending.user_id, "second factor failed");
            super::authorize::record_failure(
                &state,
                &req,
                "mfa.failure",
                Some(pending.user_id.clone()),
                Some(&client),
                locked_now,
            );
            return totp_page(
                &csrf,
                &client,
                &params,
                &token,
                Some(CODE_FAILED),
                StatusCode::UNAUTHORIZED,
            );
        }
        Err(resp) => return resp,
    };
    let (st, h) = (state.clone(), pending.id_hash.clone());
    match stored(web::block(move || st.store.delete_pending_mfa(&h)).await) {
        Ok(true) => {}
        Ok(false) => return form_expired(),
        Err(resp) => return resp,
    }
    let amr = totp::amr_with_otp(&pending.first_factor);
    let amr_text = amr.join(" ");
    let (hash, session, cookie) = match start_session(&state, &req, &user, amr).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    tracing::info!(client_id = %client.client_id, user_id = %user.id, "signed in with a second factor");
    state.record(
        state
            .audit(&req, "login.success")
            .user(&user.id)
            .client(&client.client_id)
            .detail(format!("amr={amr_text}")),
    );
    proceed(
        &state,
        &req,
        &params,
        &request,
        &client,
        Some((hash, session, user)),
        true,
        Some(cookie),
    )
    .await
}

/// The form's `code` checked as `user_id`'s second factor ([`totp::check_second_factor`]).
async fn second_factor(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    user_id: &str,
    params: &Params,
    accept: totp::Accept,
) -> Result<SecondFactorOutcome, HttpResponse> {
    let code = params.get("code").unwrap_or("").to_owned();
    let ip = client_ip(req, state.config.login.trust_forwarded_for);
    let now = state.clock.now();
    let (st, uid) = (state.clone(), user_id.to_owned());
    let outcome = web::block(move || {
        totp::check_second_factor(
            &*st.store,
            &st.sealer,
            &st.config.login,
            &ip,
            &uid,
            &code,
            accept,
            now,
        )
    })
    .await;
    stored(outcome)
}

fn query_of(params: &Params) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in carried(params) {
        q.append_pair(k, v);
    }
    q.finish()
}

/// How recent the sign-in must be to change the second factor.
const RECENT_SECS: i64 = 600;

/// How long a seed shown for enrolment may be confirmed; after that the page shows a new one.
const ENROLMENT_SECS: i64 = 600;

/// What a seed being enrolled is sealed to: the account and the session that asked for it, so
/// that only that session can show it again or confirm it.
fn enrolment_context(user_id: &str, session_hash: &str) -> String {
    format!("{user_id} enrolling in {session_hash}")
}

/// The person signed in with a password within the last 10 minutes, or a page saying to sign
/// in (again) first: a session cookie alone, perhaps stolen hours ago, does not change the
/// second factor.
async fn signed_in(
    state: &web::Data<AppState>,
    req: &HttpRequest,
) -> Result<(String, User), HttpResponse> {
    match current_session(state, req).await? {
        // Signed in through a linked Google or GitHub identity: the upstream account alone
        // must not set the factor that password sign-ins will ask for.
        Some((_, session, user))
            if user.password_hash.is_some() && !session.amr.iter().any(|m| m == "pwd") =>
        {
            Err(error_page(
                StatusCode::UNAUTHORIZED,
                "Sign in with your password first",
                "Two-step verification is set up after signing in with this account's password. Sign in to an application with your password, then come back.",
            ))
        }
        Some((hash, session, user)) if user.password_hash.is_some() => {
            if session.auth_time + RECENT_SECS < state.clock.now() {
                return Err(error_page(
                    StatusCode::UNAUTHORIZED,
                    "Sign in again first",
                    "For your safety, two-step verification is set up within ten minutes of signing in. Sign in to an application again, then come back.",
                ));
            }
            Ok((hash, user))
        }
        Some(_) => Err(error_page(
            StatusCode::FORBIDDEN,
            "Not available for this account",
            "Accounts that sign in with Google or GitHub use that provider's own two-step verification.",
        )),
        None => Err(error_page(
            StatusCode::UNAUTHORIZED,
            "Sign in first",
            "Sign in to an application with this account, then come back to this page.",
        )),
    }
}

/// A form of the account pages: CSRF for `purpose` first, then [`signed_in`].
async fn signed_in_form(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    payload: web::Payload,
    purpose: &str,
) -> Result<(Params, Csrf, String, User), HttpResponse> {
    let (params, csrf) = csrf_form(state, req, payload, purpose).await?;
    let (session_hash, user) = signed_in(state, req).await?;
    Ok((params, csrf, session_hash, user))
}

fn qr_svg(uri: &str) -> String {
    use qrcode::render::svg;
    match qrcode::QrCode::new(uri.as_bytes()) {
        Ok(code) => {
            let svg = code
                .render::<svg::Color>()
                .min_dimensions(200, 200)
                .quiet_zone(true)
                .build();
            // Inline in the page: without the XML declaration.
            match svg.find("<svg") {
                Some(i) => svg[i..].to_owned(),
                None => String::new(),
            }
        }
        Err(_) => String::new(),
    }
}

fn enrol_page(
    csrf: &Csrf,
    user: &User,
    secret: &[u8],
    error: Option<&str>,
    status: StatusCode,
) -> HttpResponse {
    let uri = totp::otpauth_uri(secret, &user.username).unwrap_or_default();
    let b32 = totp::base32(secret);
    let grouped: Vec<String> = b32
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    render(
        page(status),
        &EnrolPage {
            qr_svg: &qr_svg(&uri),
            secret: &grouped.join(" "),
            csrf_token: csrf.token("totp-enrol"),
            error,
        },
    )
}

/// "Two-step verification is on", with how many recovery codes are left and the form for a new
/// set (also what a second click on "Turn on" gets, whose first click showed the codes).
async fn on_page(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    user_id: &str,
    error: Option<&str>,
    status: StatusCode,
) -> HttpResponse {
    let (st, uid) = (state.clone(), user_id.to_owned());
    let codes_left = match stored(web::block(move || st.store.recovery_codes_left(&uid)).await) {
        Ok(n) => n,
        Err(resp) => return resp,
    };
    let csrf = Csrf::for_request(req, &state.config);
    let resp = render(
        page(status),
        &OnPage {
            csrf_token: csrf.token("totp-recovery"),
            codes_left,
            error,
        },
    );
    with_csrf_cookie(resp, &csrf, state)
}

/// `GET /account/totp`: the seed of the enrolment in progress (a new one if there is none),
/// its QR code, and the form for the first code. A GET changes nothing once a seed is shown: a
/// link from another site cannot restart an enrolment the person is scanning.
pub async fn enrol_start(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let (session_hash, user) = match signed_in(&state, &req).await {
        Ok(u) => u,
        Err(resp) => return resp,
    };
    let (st, uid) = (state.clone(), user.id.clone());
    let context = enrolment_context(&user.id, &session_hash);
    let now = state.clock.now();
    let pending = match stored(web::block(move || st.store.find_totp(&uid)).await) {
        Ok(Some(r)) if r.confirmed => {
            return on_page(&state, &req, &user.id, None, StatusCode::OK).await
        }
        // Only this session's own enrolment, and only while it is recent: another session of
        // the account (someone else holding the password) never sees it, nor it theirs.
        Ok(Some(r)) if r.created_at + ENROLMENT_SECS > now => {
            state.sealer.open(&r.secret_sealed, &context).ok()
        }
        Ok(_) => None,
        Err(resp) => return resp,
    };
    let secret = match pending {
        Some(secret) => secret,
        None => {
            let secret = totp::new_secret();
            let sealed = state.sealer.seal(&secret, &context);
            let (st, uid) = (state.clone(), user.id.clone());
            match stored(web::block(move || st.store.begin_totp(&uid, &sealed, now)).await) {
                Ok(true) => secret,
                Ok(false) => return on_page(&state, &req, &user.id, None, StatusCode::OK).await,
                Err(resp) => return resp,
            }
        }
    };
    let csrf = Csrf::for_request(&req, &state.config);
    let resp = enrol_page(&csrf, &user, &secret, None, StatusCode::OK);
    with_csrf_cookie(resp, &csrf, &state)
}

/// `POST /account/totp`: confirm with a first code; show the recovery codes once.
pub async fn enrol_confirm(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let (params, csrf, session_hash, user) =
        match signed_in_form(&state, &req, payload, "totp-enrol").await {
            Ok(f) => f,
            Err(resp) => return resp,
        };
    let (st, uid) = (state.clone(), user.id.clone());
    let now = state.clock.now();
    let start_again = || {
        error_page(
            StatusCode::BAD_REQUEST,
            "Start again",
            "Open the set-up page again to get a new code to scan.",
        )
    };
    let record = match stored(web::block(move || st.store.find_totp(&uid)).await) {
        Ok(Some(r)) if !r.confirmed => r,
        Ok(Some(_)) => return on_page(&state, &req, &user.id, None, StatusCode::OK).await,
        Ok(None) => return start_again(),
        Err(resp) => return resp,
    };
    // The seed this session was shown, still recent; not one another session began.
    if record.created_at + ENROLMENT_SECS <= now {
        return start_again();
    }
    let context = enrolment_context(&user.id, &session_hash);
    let Ok(secret) = state.sealer.open(&record.secret_sealed, &context) else {
        return start_again();
    };
    let Some(step) = totp::matching_step(&secret, params.get("code").unwrap_or(""), now) else {
        return enrol_page(
            &csrf,
            &user,
            &secret,
            Some("That code is not right. Check the time on your phone and try the next one."),
            StatusCode::UNAUTHORIZED,
        );
    };
    let codes = totp::new_recovery_codes();
    let hashes = totp::recovery_hashes(&codes);
    // Confirmed, the seed is sealed to the account alone (sign-ins open it).
    let sealed = state.sealer.seal(&secret, &user.id);
    let begun = record.secret_sealed;
    let (st, uid) = (state.clone(), user.id.clone());
    // The person's other sessions began without the code: they end (this one stays).
    // Once confirmed the factor is in force, so the recovery codes are shown even if ending the
    // other sessions fails (they could never be shown again); that failure is logged.
    let confirmed = web::block(
        move || -> Result<Option<Result<usize, StoreError>>, StoreError> {
            if !st
                .store
                .confirm_totp(&uid, &begun, &sealed, step, &hashes)?
            {
                return Ok(None);
            }
            Ok(Some(st.store.delete_user_sessions(
                &uid,
                Some(&session_hash),
                now,
            )))
        },
    )
    .await;
    let ended = match stored(confirmed) {
        Ok(Some(Ok(n))) => n.to_string(),
        Ok(Some(Err(error))) => {
            tracing::error!(user_id = %user.id, %error, "TOTP enrolled, but other sessions not ended");
            "failed".to_owned()
        }
        // Not confirmed by this request: confirmed by another (a double submit), or the seed
        // was replaced meanwhile (another session opened the page).
        Ok(None) => {
            let (st, uid) = (state.clone(), user.id.clone());
            return match stored(web::block(move || st.store.find_totp(&uid)).await) {
                Ok(Some(r)) if r.confirmed => {
                    on_page(&state, &req, &user.id, None, StatusCode::OK).await
                }
                Ok(_) => start_again(),
                Err(resp) => resp,
            };
        }
        Err(resp) => return resp,
    };
    tracing::info!(user_id = %user.id, "TOTP enrolled");
    state.record(
        state
            .audit(&req, "mfa.enrolled")
            .user(&user.id)
            .detail(format!("other_sessions_ended={ended}")),
    );
    render(
        page(StatusCode::OK),
        &RecoveryPage {
            codes: &codes,
            replaced: false,
        },
    )
}

/// `POST /account/totp/recovery-codes`: a new set of recovery codes in place of the old ones,
/// for a person whose factor is on, signed in with the password within 10 minutes, who types a
/// code from the app (a recovery code is not taken: one that leaked must not become ten). The
/// code is checked like a sign-in's second factor (counted against lockout and the address's
/// budget, each step usable once): a session cookie alone, perhaps stolen, cannot mint codes
/// that would outlive it.
pub async fn new_recovery_codes(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let (params, _, session_hash, user) =
        match signed_in_form(&state, &req, payload, "totp-recovery").await {
            Ok(f) => f,
            Err(resp) => return resp,
        };
    let off = || {
        error_page(
            StatusCode::BAD_REQUEST,
            "Two-step verification has changed",
            "Open the two-step verification page again.",
        )
    };
    let (st, uid) = (state.clone(), user.id.clone());
    // The enrolment the code is checked against: the new codes are for it alone (not for one
    // an operator's `user totp` put in its place meanwhile).
    let checked = match stored(web::block(move || st.store.find_totp(&uid)).await) {
        Ok(Some(r)) if r.confirmed => r.secret_sealed,
        Ok(_) => return off(),
        Err(resp) => return resp,
    };
    match second_factor(&state, &req, &user.id, &params, totp::Accept::AppOnly).await {
        Ok(SecondFactorOutcome::Success(_)) => {}
        Ok(SecondFactorOutcome::Throttled) => {
            state.record(state.audit(&req, "login.throttled").user(&user.id));
            return throttled();
        }
        Ok(SecondFactorOutcome::Failed { locked_now }) => {
            super::authorize::record_failure(
                &state,
                &req,
                "mfa.failure",
                Some(user.id.clone()),
                None,
                locked_now,
            );
            return on_page(
                &state,
                &req,
                &user.id,
                Some(CODE_FAILED),
                StatusCode::UNAUTHORIZED,
            )
            .await;
        }
        Err(resp) => return resp,
    }
    let codes = totp::new_recovery_codes();
    let hashes = totp::recovery_hashes(&codes);
    let (st, uid) = (state.clone(), user.id.clone());
    let replaced = web::block(move || {
        st.store
            .replace_recovery_codes(&uid, &checked, &session_hash, &hashes)
    })
    .await;
    match stored(replaced) {
        Ok(true) => {}
        Ok(false) => return off(),
        Err(resp) => return resp,
    }
    tracing::info!(user_id = %user.id, "recovery codes replaced");
    state.record(
        state
            .audit(&req, "mfa.recovery_codes_replaced")
            .user(&user.id),
    );
    render(
        page(StatusCode::OK),
        &RecoveryPage {
            codes: &codes,
            replaced: true,
        },
    )
}
