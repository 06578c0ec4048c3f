//! Hosted pages: rendering, page headers, cookies and CSRF tokens.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use askama::Template;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::crypto::opaque;

/// Pages may load our stylesheet and nothing else, and may not be framed.
const PAGE_CSP: &str =
    "default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'";

/// The stylesheet, compiled in.
const CSS: &str = include_str!("../../static/portcullis.css");

/// The error page.
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    /// Heading.
    pub title: &'a str,
    /// What happened, in plain words.
    pub message: &'a str,
    /// Where "Back to sign in" leads, when we know the request to go back to.
    pub back: Option<&'a str>,
    /// Something went wrong (a hint to start again is shown); false for a plain notice.
    pub failed: bool,
}

/// A response builder with the page headers.
pub fn page(status: StatusCode) -> HttpResponseBuilder {
    let mut b = HttpResponse::build(status);
    b.insert_header((header::CONTENT_SECURITY_POLICY, PAGE_CSP))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("text/html; charset=utf-8");
    b
}

/// Render `t` with `status`; a template failure becomes a plain error page.
pub fn render(mut builder: HttpResponseBuilder, t: &impl Template) -> HttpResponse {
    match t.render() {
        Ok(html) => builder.body(html),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            page(StatusCode::INTERNAL_SERVER_ERROR).body("Something went wrong.")
        }
    }
}

/// An error page.
pub fn error_page(status: StatusCode, title: &str, message: &str) -> HttpResponse {
    render(
        page(status),
        &ErrorPage {
            title,
            message,
            back: None,
            failed: true,
        },
    )
}

/// A page that tells something (a change done, a mail sent): the error page's look, no hint.
pub fn notice_page(title: &str, message: &str) -> HttpResponse {
    render(
        page(StatusCode::OK),
        &ErrorPage {
            title,
            message,
            back: None,
            failed: false,
        },
    )
}

/// An error page with a link back to the login page of the request at `back`.
pub fn error_page_back(status: StatusCode, title: &str, message: &str, back: &str) -> HttpResponse {
    render(
        page(status),
        &ErrorPage {
            title,
            message,
            back: Some(back),
            failed: true,
        },
    )
}

/// `GET /static/portcullis.css`.
pub async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(CSS)
}

/// Cookie names: `__Host-` prefixed when the issuer is https (the prefix requires `Secure`).
pub fn cookie_name(config: &Config, base: &str) -> String {
    if config.is_https() {
        format!("__Host-portcullis_{base}")
    } else {
        format!("portcullis_{base}")
    }
}

/// A `HttpOnly`, `SameSite=Lax`, host-only cookie for the whole site.
pub fn cookie(config: &Config, base: &str, value: String, max_age_secs: i64) -> Cookie<'static> {
    Cookie::build(cookie_name(config, base), value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(config.is_https())
        .max_age(actix_web::cookie::time::Duration::seconds(max_age_secs))
        .finish()
}

/// The value of our cookie `base`, if the browser sent it.
pub fn read_cookie(req: &HttpRequest, config: &Config, base: &str) -> Option<String> {
    req.cookie(&cookie_name(config, base))
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 64)
}

/// CSRF: a random per-browser secret in a cookie; each form carries a token derived from it and
/// the form's purpose, so a token is bound to this browser and useful for one kind of form only.
pub struct Csrf {
    secret: String,
    /// Whether the cookie must be (re)set on the response.
    pub is_new: bool,
}

impl Csrf {
    /// The browser's CSRF secret, or a new one.
    pub fn for_request(req: &HttpRequest, config: &Config) -> Self {
        match read_cookie(req, config, "csrf") {
            Some(secret) => Self {
                secret,
                is_new: false,
            },
            None => Self {
                secret: opaque::random_token(),
                is_new: true,
            },
        }
    }

    /// A value that identifies this browser to the server (derived from the secret, so the
    /// cookie itself is never stored); `None` for a browser that had no CSRF cookie.
    pub fn binding(&self) -> Option<String> {
        (!self.is_new).then(|| opaque::hash_secret(&self.token("browser-binding")))
    }

    /// The token for a form with `purpose`.
    pub fn token(&self, purpose: &str) -> String {
        let mut h = Sha256::new();
        h.update(b"portcullis-csrf\0");
        h.update(purpose.as_bytes());
        h.update(b"\0");
        h.update(self.secret.as_bytes());
        B64.encode(h.finalize())
    }

    /// Whether `presented` is this browser's token for `purpose` (constant time). A browser
    /// without the cookie never passes.
    pub fn check(&self, purpose: &str, presented: Option<&str>) -> bool {
        !self.is_new
            && presented.is_some_and(|p| self.token(purpose).as_bytes().ct_eq(p.as_bytes()).into())
    }

    /// The cookie to set when it is new (a year: it only binds forms to this browser).
    pub fn cookie(&self, config: &Config) -> Option<Cookie<'static>> {
        self.is_new
            .then(|| cookie(config, "csrf", self.secret.clone(), 365 * 86_400))
    }
}
