//! The HTTP client for calls to upstream providers: 10 s for the whole call, no redirects
//! followed (a token endpoint that redirects is an error, not a hop), a 1 MiB cap on bodies.

use std::sync::Arc;
use std::time::Duration;

use oauth2::{HttpRequest, HttpResponse, SyncHttpClient};

/// Every outbound call ends within this.
pub const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BODY: u64 = 1 << 20;

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
