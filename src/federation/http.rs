//! The HTTP client for calls to upstream providers: 10 s for the whole call (and for all the
//! calls of one sign-in, see [`within`]), no redirects followed (a token endpoint that
//! redirects is an error, not a hop), a 1 MiB cap on bodies.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oauth2::{HttpRequest, HttpResponse, SyncHttpClient};

/// Every outbound call ends within this.
pub const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BODY: u64 = 1 << 20;

thread_local! {
    /// The end of the sign-in this thread is finishing, if any.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Run `f` (on this thread) with every upstream call it makes ending by `deadline`: the calls of
/// one sign-in (a token, then GitHub's user and emails, or Google's keys fetched again) share
/// one budget, so a slow provider cannot stretch a callback past the shutdown grace.
pub fn within<T>(deadline: Instant, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Instant>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEADLINE.set(self.0);
        }
    }
    let _restore = Restore(DEADLINE.replace(Some(deadline)));
    f()
}

/// Why an upstream call failed before any response.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No answer within [`TIMEOUT`].
    #[error("no answer within {} s", TIMEOUT.as_secs())]
    Timeout,
    /// Connection, TLS or protocol failure.
    #[error("{0}")]
    Transport(String),
}

/// A blocking HTTP client shared by the Google and GitHub flows (used on the blocking pool).
#[derive(Clone)]
pub struct UpstreamHttp {
    agent: ureq3::Agent,
}

impl std::fmt::Debug for UpstreamHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamHttp")
    }
}

impl Default for UpstreamHttp {
    fn default() -> Self {
        Self::new()
    }
}

impl UpstreamHttp {
    /// A client with the timeout and rules above; TLS by rustls with aws-lc-rs.
    pub fn new() -> Self {
        let tls = ureq3::tls::TlsConfig::builder()
            .unversioned_rustls_crypto_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .build();
        let agent = ureq3::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build()
            .new_agent();
        Self { agent }
    }

    /// Send `request`; any HTTP status is a response, only transport failures are errors.
    pub fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let timeout = match DEADLINE.get() {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(HttpError::Timeout);
                }
                left.min(TIMEOUT)
            }
            None => TIMEOUT,
        };
        let request = self
            .agent
            .configure_request(request)
            .timeout_global(Some(timeout))
            .build();
        let response = self.agent.run(request).map_err(|e| match e {
            ureq3::Error::Timeout(_) => HttpError::Timeout,
            ureq3::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => HttpError::Timeout,
            other => HttpError::Transport(other.to_string()),
        })?;
        let (parts, body) = response.into_parts();
        let bytes = body
            .into_with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| match e {
                ureq3::Error::Timeout(_) => HttpError::Timeout,
                ureq3::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                    HttpError::Timeout
                }
                other => HttpError::Transport(other.to_string()),
            })?;
        Ok(HttpResponse::from_parts(parts, bytes))
    }
}

impl SyncHttpClient for UpstreamHttp {
    type Error = HttpError;

    fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        self.send(request)
    }
}
