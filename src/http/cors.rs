//! CORS (actix-cors) for the endpoints browser apps call: token, userinfo, revocation,
//! introspection, JWKS and discovery. An origin is allowed when some client registered it,
//! through a redirect URI or `--allowed-origin`; the set is re-read every 5 s, so a new client
//! is allowed within that time. The authorization endpoint and the pages send no CORS headers.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use actix_cors::Cors;
use actix_web::http::{header, Method};
use actix_web::HttpMessage;

use super::middleware::RequestId;
use crate::store::{ClientStore, StoreResult};

/// Whether a request may act for `client` from where it comes: no `Origin` (not a browser), or
/// one of the client's own origins. The middleware admits the origins of all clients; this
/// narrows the token, introspection and revocation endpoints to the authenticated client's.
///
/// The origin must also have been in `all` before the request arrived, so that the middleware,
/// which answered from `all` before the handler ran, sent the CORS headers: the client may be
/// newer than the set (up to 5 s), and a request the browser will not let its page read must
/// change nothing, or the page's retry would find its code spent or its refresh token rotated,
/// and be taken for a replay.
pub fn origin_allowed(
    req: &actix_web::HttpRequest,
    client: &crate::oauth::client::Client,
    all: &CorsOrigins,
) -> bool {
    match req.headers().get(header::ORIGIN).map(|o| o.to_str()) {
        None => true,
        Some(Ok(origin)) => {
            let arrived = req.extensions().get::<RequestId>().map(|r| r.1);
            client.cors_origins().any(|o| o == origin)
                && arrived.is_some_and(|t| all.admitted_before(origin, t))
        }
        Some(Err(_)) => false,
    }
}

fn foreign_origin() -> crate::oauth::error::OAuthError {
    crate::oauth::error::OAuthError::unauthorized_client(
        "requests from this origin are not allowed for this client",
    )
}

/// [`origin_allowed`] as an error.
pub fn check_origin(
    req: &actix_web::HttpRequest,
    client: &crate::oauth::client::Client,
    all: &CorsOrigins,
) -> Result<(), crate::oauth::error::OAuthError> {
    if origin_allowed(req, client, all) {
        Ok(())
    } else {
        Err(foreign_origin())
    }
}

/// The origins all clients allow, shared by the workers, each with when it was first seen.
#[derive(Debug, Clone, Default)]
pub struct CorsOrigins(Arc<RwLock<HashMap<String, Instant>>>);

impl CorsOrigins {
    /// Re-read every client's origins.
    pub fn refresh(&self, store: &(impl ClientStore + ?Sized)) -> StoreResult<()> {
        let clients = store.list_clients()?;
        let now = Instant::now();
        if let Ok(mut set) = self.0.write() {
            let mut next = HashMap::new();
            for origin in clients.iter().flat_map(|c| c.cors_origins()) {
                let seen = set.get(&origin).copied().unwrap_or(now);
                next.insert(origin, seen);
            }
            *set = next;
        }
        Ok(())
    }

    fn allows(&self, origin: &[u8]) -> bool {
        let Ok(origin) = std::str::from_utf8(origin) else {
            return false;
        };
        self.0.read().is_ok_and(|set| set.contains_key(origin))
    }

    /// Whether `origin` was allowed already at `t` (and still is).
    fn admitted_before(&self, origin: &str, t: Instant) -> bool {
        self.0
            .read()
            .is_ok_and(|set| set.get(origin).is_some_and(|seen| *seen <= t))
    }

    /// The middleware for one API resource allowing `methods`. An origin that is not allowed
    /// gets no CORS headers (the browser then refuses the response), and a request without
    /// `Origin` is served as usual.
    pub fn middleware(&self, methods: &[Method]) -> Cors {
        let origins = self.clone();
        Cors::default()
            .allowed_origin_fn(move |origin, _| origins.allows(origin.as_bytes()))
            .allowed_methods(methods.to_vec())
            .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
            .expose_headers([header::WWW_AUTHENTICATE])
            .max_age(600)
            .block_on_origin_mismatch(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::client::{AuthMethod, Client};

    #[test]
    fn an_origin_the_middleware_did_not_admit_acts_for_no_client() {
        let mut client = Client::sample("app", AuthMethod::None, None);
        client.allowed_origins = vec!["https://app.example".into()];
        let from = |origin: Option<&str>| {
            let mut r = actix_web::test::TestRequest::default();
            if let Some(o) = origin {
                r = r.insert_header((header::ORIGIN, o));
            }
            r.to_http_request()
        };
        let arrived = Instant::now();
        let at = |origin: &str| {
            let r = from(Some(origin));
            r.extensions_mut().insert(RequestId("test".into(), arrived));
            r
        };
        let all = CorsOrigins::default();
        // Not a browser: no origin to check.
        assert!(origin_allowed(&from(None), &client, &all));
        // Registered a moment ago, not yet in the set the middleware answers from: the browser
        // gets no CORS headers, so the request must not act.
        assert!(!origin_allowed(&at("https://app.example"), &client, &all));
        // Added after the request arrived, while it was being handled: the middleware had
        // already answered without CORS headers.
        let later = arrived + std::time::Duration::from_millis(1);
        all.0
            .write()
            .unwrap()
            .insert("https://app.example".into(), later);
        assert!(!origin_allowed(&at("https://app.example"), &client, &all));
        // In the set before the request arrived.
        all.0
            .write()
            .unwrap()
            .insert("https://app.example".into(), arrived);
        assert!(origin_allowed(&at("https://app.example"), &client, &all));
        // A request that did not pass the observing middleware is not trusted with it.
        assert!(!origin_allowed(
            &from(Some("https://app.example")),
            &client,
            &all
        ));
        // Another client's origin, admitted by the middleware, is still not this client's.
        all.0
            .write()
            .unwrap()
            .insert("https://other.example".into(), arrived);
        assert!(!origin_allowed(&at("https://other.example"), &client, &all));
    }
}
