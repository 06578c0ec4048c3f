//! CORS (actix-cors) for the endpoints browser apps call: token, userinfo, revocation,
//! introspection, JWKS and discovery. An origin is allowed when some client registered it,
//! through a redirect URI or `--allowed-origin`; the set is re-read every 5 s, so a new client
//! is allowed within that time. The authorization endpoint and the pages send no CORS headers.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use actix_cors::Cors;
use actix_web::http::{header, Method};

use crate::store::{ClientStore, StoreResult};

/// Whether a request may act for `client` from where it comes: no `Origin` (not a browser), or
/// one of the client's own origins. The middleware admits the origins of all clients; this
/// narrows the token, introspection and revocation endpoints to the authenticated client's.
pub fn origin_allowed(req: &actix_web::HttpRequest, client: &crate::oauth::client::Client) -> bool {
    match req.headers().get(header::ORIGIN).map(|o| o.to_str()) {
        None => true,
        Some(Ok(origin)) => client.cors_origins().any(|o| o == origin),
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
) -> Result<(), crate::oauth::error::OAuthError> {
    if origin_allowed(req, client) {
        Ok(())
    } else {
        Err(foreign_origin())
    }
}

/// The origins all clients allow, shared by the workers.
#[derive(Debug, Clone, Default)]
pub struct CorsOrigins(Arc<RwLock<HashSet<String>>>);

impl CorsOrigins {
    /// Re-read every client's origins.
    pub fn refresh(&self, store: &(impl ClientStore + ?Sized)) -> StoreResult<()> {
        let origins: HashSet<String> = store
            .list_clients()?
            .iter()
            .flat_map(|c| c.cors_origins().collect::<Vec<_>>())
            .collect();
        if let Ok(mut set) = self.0.write() {
            *set = origins;
        }
        Ok(())
    }

    fn allows(&self, origin: &[u8]) -> bool {
        let Ok(origin) = std::str::from_utf8(origin) else {
            return false;
        };
        self.0.read().is_ok_and(|set| set.contains(origin))
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
