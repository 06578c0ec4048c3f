//! The HTTP layer: actix-web handlers that translate HTTP to protocol calls and back.

mod authorize;
pub mod cors;
mod discovery;
pub mod error;
mod federation;
mod form;
mod hashing;
mod logout;
mod mfa;
mod middleware;
mod ops;
mod pages;
mod reset;
mod token;
mod tokens_admin;

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

use crate::audit::{AuditEvent, Auditor};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::crypto::ring::{KeyRing, LoadedKeys};
use crate::crypto::seal::Sealer;
use crate::federation::Upstreams;
use crate::metrics::Metrics;
use crate::oauth::client::Client;
use crate::oauth::client_auth::Credentials;
use crate::oauth::discovery::{metadata, paths};
use crate::oauth::error::OAuthError;
use crate::oauth::issue::Issuer;
use crate::store::cache::ClientCache;
use crate::store::db::DbStore;
use crate::store::Store;
use error::ApiError;

/// How long a client may be served from the in-process cache.
const CLIENT_CACHE_TTL: Duration = Duration::from_secs(5);
/// How often the key folder is checked for changes.
const KEY_REFRESH: Duration = Duration::from_secs(5);
/// How long in-flight requests may run after SIGTERM or SIGINT.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);
/// How long queued audit rows may take to be written at shutdown.
const AUDIT_DRAIN: Duration = Duration::from_secs(5);
/// How often expired rows are purged, and how many per statement.
const PURGE_EVERY: Duration = Duration::from_secs(60);
const PURGE_BATCH: i64 = 1_000;
const PURGE_ROUNDS: usize = 50;

/// Shared state of every worker.
pub struct AppState {
    /// Configuration.
    pub config: Config,
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Cached clients.
    pub clients: ClientCache,
    /// Signing keys.
    pub keys: KeyRing,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The discovery document, rendered once.
    pub discovery: Vec<u8>,
    /// Configured upstream identity providers.
    pub upstreams: Upstreams,
    /// Seals TOTP seeds at rest.
    pub sealer: Sealer,
    /// Origins allowed by CORS (refreshed every 5 s).
    pub cors_origins: cors::CorsOrigins,
    /// The audit log's writer.
    pub auditor: Auditor,
    /// Outgoing mail, when `[smtp]` is configured.
    pub mailer: Option<crate::mail::Mailer>,
    /// Bounds the password hashes in flight.
    pub hashing: hashing::HashGate,
}

impl AppState {
    /// State for `config` over `store` and `keys`.
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        keys: KeyRing,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let discovery = serde_json::to_vec(&metadata(&config.issuer))?;
        let upstreams = Upstreams::from_config(&config);
        let sealer = Sealer::load(&config.login.totp_encryption_key, &config.keys_dir)?;
        let auditor = Auditor::start(store.clone())?;
        let mailer = match &config.smtp {
            Some(m) => Some(crate::mail::Mailer::new(m).map_err(anyhow::Error::msg)?),
            None => None,
        };
        Ok(Self {
            config,
            store,
            clients: ClientCache::new(CLIENT_CACHE_TTL),
            keys,
            clock,
            metrics: Metrics::new()?,
            discovery,
            upstreams,
            sealer,
            cors_origins: cors::CorsOrigins::default(),
            auditor,
            mailer,
            hashing: hashing::HashGate::default(),
        })
    }

    /// An audit event about `req`: time, client address, user agent and request id filled in.
    pub fn audit(&self, req: &HttpRequest, event: &str) -> AuditEvent {
        let mut e = AuditEvent::new(event, self.clock.now());
        e.ip = Some(authorize::client_ip(
            req,
            self.config.login.trust_forwarded_for,
        ));
        e.user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(256).collect());
        e.request_id = actix_web::HttpMessage::extensions(req)
            .get::<middleware::RequestId>()
            .map(|r| r.0.clone());
        e
    }

    /// Record `event`.
    pub fn record(&self, event: AuditEvent) {
        self.auditor.record(event);
    }

    /// Token issuance context over `keys` at the current time.
    pub fn issuer<'a>(&'a self, keys: &'a LoadedKeys) -> Issuer<'a> {
        Issuer {
            issuer: &self.config.issuer,
            keys: &keys.set,
            tokens: &self.config.tokens,
            now: self.clock.now(),
        }
    }
}

/// Authenticate the client that presented `creds`: from the cache when it is there and the
/// credentials match, otherwise from the database (a rotated secret is seen at once).
pub(crate) async fn authenticate_client(
    state: &web::Data<AppState>,
    creds: &Credentials,
) -> Result<Arc<Client>, ApiError> {
    if let Some(cached) = state.clients.cached(creds.client_id()) {
        if creds.authenticate(Some(&cached)).is_ok() {
            return Ok(cached);
        }
    }
    let st = state.clone();
    let id = creds.client_id().to_owned();
    let fresh = web::block(move || st.clients.refresh(&*st.store, &id)).await??;
    creds.authenticate(fresh.as_deref())?;
    fresh.ok_or_else(|| OAuthError::invalid_client("client authentication failed").into())
}

fn post_only<F, Args>(path: &'static str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::post().to(handler))
        .default_service(web::to(|| method_not_allowed(&[Method::POST])))
}

/// A page's form target: POST only, and another method gets a page, not JSON.
fn post_page<F, Args>(path: &'static str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::post().to(handler))
        .default_service(web::to(|| page_method_not_allowed(&[Method::POST])))
}

/// Register every route on `cfg`; the API endpoints browser apps call get CORS for `origins`.
pub fn routes(cfg: &mut web::ServiceConfig, origins: &cors::CorsOrigins) {
    let post = || origins.middleware(&[Method::POST]);
    let get = || origins.middleware(&[Method::GET]);
    // The busiest endpoints first, each a single static path: the router tries resources in
    // order, and a resource with several paths is matched with a regular expression.
    cfg.service(post_only(paths::TOKEN, token::token).wrap(post()));
    for path in [
        paths::JWKS,
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let handler = if path == paths::JWKS {
            web::get().to(discovery::jwks)
        } else {
            web::get().to(discovery::metadata)
        };
        cfg.service(
            web::resource(path)
                .route(handler)
                .default_service(web::to(|| method_not_allowed(&[Method::GET])))
                .wrap(get()),
        );
    }
    cfg.service(post_only(paths::INTROSPECT, tokens_admin::introspect).wrap(post()))
        .service(post_only(paths::REVOKE, tokens_admin::revoke).wrap(post()))
        .service(
            web::resource(paths::AUTHORIZE)
                .route(web::get().to(authorize::authorize))
                .route(web::post().to(authorize::authorize))
                .default_service(web::to(|| {
                    page_method_not_allowed(&[Method::GET, Method::POST])
                })),
        )
        .service(post_page(paths::LOGIN, authorize::login))
        .service(post_page(paths::CONSENT, authorize::consent))
        .service(post_page("/login/link", federation::link))
        .service(post_page("/login/totp", mfa::login_totp))
        .service(
            web::resource(crate::oauth::reset::RESET_PATH)
                .route(web::get().to(reset::reset_form))
                .route(web::post().to(reset::reset_submit))
                .default_service(web::to(|| {
                    page_method_not_allowed(&[Method::GET, Method::POST])
                })),
        )
        .service(
            web::resource("/password/forgot")
                .route(web::get().to(reset::forgot_form))
                .route(web::post().to(reset::forgot_submit))
                .default_service(web::to(|| {
                    page_method_not_allowed(&[Method::GET, Method::POST])
                })),
        )
        .service(
            web::resource("/account/totp")
                .route(web::get().to(mfa::enrol_start))
                .route(web::post().to(mfa::enrol_confirm))
                .default_service(web::to(|| {
                    page_method_not_allowed(&[Method::GET, Method::POST])
                })),
        )
        .service(post_page(
            "/account/totp/recovery-codes",
            mfa::new_recovery_codes,
        ))
        .service(post_page("/login/{provider}", federation::start))
        .service(
            web::resource("/login/{provider}/callback")
                .route(web::get().to(federation::callback))
                .default_service(web::to(|| page_method_not_allowed(&[Method::GET]))),
        )
        .service(
            web::resource(paths::END_SESSION)
                .route(web::get().to(logout::end_session_endpoint))
                .route(web::post().to(logout::end_session_endpoint))
                .default_service(web::to(|| {
                    page_method_not_allowed(&[Method::GET, Method::POST])
                })),
        )
        .service(post_page(paths::LOGOUT_CONFIRM, logout::confirm))
        .service(
            web::resource(paths::USERINFO)
                .route(web::get().to(authorize::userinfo))
                .route(web::post().to(authorize::userinfo))
                .default_service(web::to(|| method_not_allowed(&[Method::GET, Method::POST])))
                .wrap(origins.middleware(&[Method::GET, Method::POST])),
        )
        .route("/static/portcullis.css", web::get().to(pages::stylesheet))
        .route("/healthz", web::get().to(ops::healthz))
        .route("/readyz", web::get().to(ops::readyz))
        .route("/metrics", web::get().to(ops::metrics));
}

async fn method_not_allowed(allowed: &[Method]) -> HttpResponse {
    let allow: Vec<&str> = allowed.iter().map(Method::as_str).collect();
    HttpResponse::build(StatusCode::METHOD_NOT_ALLOWED)
        .insert_header((header::ALLOW, allow.join(", ")))
        .json(OAuthError::invalid_request("method not allowed"))
}

/// A browser endpoint asked with a method it does not take: a readable page, with `Allow`.
async fn page_method_not_allowed(allowed: &[Method]) -> HttpResponse {
    let allow: Vec<&str> = allowed.iter().map(Method::as_str).collect();
    let mut resp = pages::error_page(
        StatusCode::METHOD_NOT_ALLOWED,
        "This page cannot be opened that way",
        "This address is where a sign-in form sends its answer; it is not a page to open on its own.",
    );
    if let Ok(v) = header::HeaderValue::from_str(&allow.join(", ")) {
        resp.headers_mut().insert(header::ALLOW, v);
    }
    resp
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({
        "error": "not_found",
        "error_description": "no such endpoint"
    }))
}

/// Security headers on every response; pages that need more set their own CSP. With an https
/// issuer, HSTS (a year; subdomains are not ours to speak for), so that a first visit to the
/// login page cannot be downgraded to plain http.
fn security_headers(https: bool) -> DefaultHeaders {
    let headers = DefaultHeaders::new()
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::REFERRER_POLICY, "no-referrer"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ));
    if https {
        headers.add((header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"))
    } else {
        headers
    }
}

/// Open the database (running migrations), the keys, and serve until stopped.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = DbStore::open(config.database()?);
    let st = store.clone();
    let applied = web::block(move || st.migrate()).await??;
    if !applied.is_empty() {
        tracing::info!(migrations = ?applied, "applied migrations");
    }
    let (dir, ttl, now) = (
        config.keys_dir.clone(),
        config.tokens.max_jwt_ttl_secs(),
        clock.now(),
    );
    // Generating the first RSA key takes a moment: keep it off the async thread.
    let keys = web::block(move || KeyRing::open(&dir, ttl, now)).await??;
    let bind = config.bind.clone();
    let state = web::Data::new(AppState::new(config, Arc::new(store), keys, clock)?);
    let st = state.clone();
    if let Err(error) = web::block(move || st.cors_origins.refresh(&*st.store)).await? {
        tracing::warn!(%error, "could not read the clients' CORS origins yet");
    }
    spawn_housekeeping(state.clone().into_inner());

    let app_state = state.clone();
    let server = HttpServer::new(move || {
        let origins = app_state.cors_origins.clone();
        App::new()
            .app_data(app_state.clone())
            .wrap(security_headers(app_state.config.is_https()))
            .wrap(actix_web::middleware::from_fn(middleware::observe))
            .configure(|cfg| routes(cfg, &origins))
            .default_service(web::to(not_found))
    })
    // After SIGTERM or SIGINT, in-flight requests may finish for up to this long (an upstream
    // call takes at most 10 s).
    .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
    .disable_signals()
    .bind(&bind)?;
    for addr in server.addrs() {
        tracing::info!(%addr, issuer = %state.config.issuer, "listening");
    }
    if state.config.is_plain_http_off_machine() {
        tracing::warn!(
            issuer = %state.config.issuer,
            "the issuer is plain http on another host: cookies go without Secure, no HSTS; use https outside a test network"
        );
    }
    // Listening for signals before the server runs: one arriving in between is not missed.
    let signals = Signals::listen()?;
    let server = server.run();
    actix_web::rt::spawn(stop_on_signals(signals, server.handle(), state.clone()));
    server.await?;
    // The audit rows still queued are written before the process ends.
    let st = state.clone();
    let drained = web::block(move || st.auditor.drain(AUDIT_DRAIN)).await?;
    if !drained {
        tracing::warn!("stopped with audit rows still queued (they are in the log)");
    }
    tracing::info!("stopped");
    Ok(())
}

/// SIGTERM and SIGINT, listened for.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn listen() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The name of the next signal received.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// SIGTERM or SIGINT (Ctrl-C): stop accepting and let the requests in flight finish; a second
/// signal ends the process at once with status 1, after a second's chance to write the queued
/// audit rows. (actix-server's own handling stops at once on SIGINT.)
async fn stop_on_signals(
    mut signals: Signals,
    handle: actix_web::dev::ServerHandle,
    state: web::Data<AppState>,
) {
    let first = signals.next().await;
    tracing::info!(signal = first, "stopping: finishing requests in flight");
    actix_web::rt::spawn(async move { handle.stop(true).await });
    let second = signals.next().await;
    tracing::warn!(
        signal = second,
        "second signal: stopping now, requests in flight are cut"
    );
    // The server's own stop cannot be hurried once graceful; end the process instead.
    let drained = web::block(move || state.auditor.drain(Duration::from_secs(1))).await;
    if !matches!(drained, Ok(true)) {
        tracing::warn!("stopped with audit rows still queued (they are in the log)");
    }
    std::process::exit(1);
}

/// Background threads: the keys folder and the CORS origins are re-read every [`KEY_REFRESH`],
/// and expired rows purged every [`PURGE_EVERY`] (bounded work per tick).
fn spawn_housekeeping(state: Arc<AppState>) {
    // Each on a thread of its own, so that a slow database (a long purge) delays neither a new
    // key's publication nor a new client's origins past their stated 5 s.
    let st = state.clone();
    every("keys", KEY_REFRESH, KEY_REFRESH, move || {
        if let Err(error) = st.keys.refresh(st.clock.now()) {
            tracing::warn!(%error, "could not reload keys; keeping the loaded ones");
        }
    });
    let st = state.clone();
    every("cors", KEY_REFRESH, KEY_REFRESH, move || {
        if let Err(error) = st.cors_origins.refresh(&*st.store) {
            tracing::warn!(%error, "could not reload CORS origins; keeping the loaded ones");
        }
    });
    // The first purge soon after start, so that a replica restarted often still purges.
    every("purge", KEY_REFRESH, PURGE_EVERY, move || {
        let now = state.clock.now();
        // Batches until one comes back short, at most PURGE_ROUNDS per tick.
        for _ in 0..PURGE_ROUNDS {
            match state.store.purge_expired(now, PURGE_BATCH) {
                Ok(n) if n < PURGE_BATCH as usize => break,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "purge failed");
                    break;
                }
            }
        }
    });
}

/// Run `task` after `first`, then every `period`, on a thread named `name`, for the life of
/// the process.
fn every(name: &str, first: Duration, period: Duration, mut task: impl FnMut() + Send + 'static) {
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            std::thread::sleep(first);
            loop {
                task();
                std::thread::sleep(period);
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, thread = name, "could not start a background thread");
    }
}
