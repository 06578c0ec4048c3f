//! "Sign in with Google" with the `openidconnect` crate: discovery from the configured issuer
//! (cached for an hour, fetched again when a signature does not verify, for key rotation, at
//! most once a minute; a failed discovery is remembered for 10 s),
//! authorization code with PKCE, `state` and `nonce`, and an RS256 ID token checked for
//! signature, `iss`, `aud`, `exp` and `iat` (60 s leeway) and the nonce.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IssuerUrl,
    Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope,
    TokenResponse,
};

use super::http::{HttpError, UpstreamHttp};
use super::{valid_subject, FederationError, Provider, Started, UpstreamIdentity, LEEWAY_SECS};
use crate::clock::UnixTime;
use crate::config::GoogleConfig;

/// How long the discovery document (and the JWKS in it) is reused.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// A signature that does not verify fetches the keys again, at most this often (so forged
/// tokens cannot make us hammer the provider).
const REFETCH_EVERY: Duration = Duration::from_secs(60);
/// A failed discovery is not retried for this long: starts fail fast while the provider is down.
const FAILURE_TTL: Duration = Duration::from_secs(10);

/// The Google (or any OpenID provider's) sign-in.
pub struct Google {
    config: GoogleConfig,
    redirect_uri: String,
    http: UpstreamHttp,
    discovered: Mutex<Option<(Instant, Arc<CoreProviderMetadata>)>>,
    /// The last forced refetch of the keys.
    refetched: Mutex<Option<Instant>>,
    /// The last failed discovery and why.
    failed: Mutex<Option<(Instant, FederationError)>>,
}

impl std::fmt::Debug for Google {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Google")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

fn upstream(what: &str) -> impl Fn(String) -> FederationError + '_ {
    move |e| FederationError::Upstream(format!("{what}: {e}"))
}

impl Google {
    /// For `config`, with our callback `redirect_uri`.
    pub fn new(config: GoogleConfig, redirect_uri: String, http: UpstreamHttp) -> Self {
        Self {
            config,
            redirect_uri,
            http,
            discovered: Mutex::new(None),
            refetched: Mutex::new(None),
            failed: Mutex::new(None),
        }
    }

    /// The provider's metadata, from the cache unless it is older than `max_age`.
    fn metadata(&self, max_age: Duration) -> Result<Arc<CoreProviderMetadata>, FederationError> {
        if let Ok(guard) = self.discovered.lock() {
            if let Some((at, m)) = guard.as_ref() {
                if at.elapsed() < max_age {
                    return Ok(m.clone());
                }
            }
        }
        if let Ok(guard) = self.failed.lock() {
            if let Some((at, e)) = guard.as_ref() {
                if at.elapsed() < FAILURE_TTL {
                    return Err(e.clone());
                }
            }
        }
        let fetched = self.discover();
        if let (Err(e), Ok(mut guard)) = (&fetched, self.failed.lock()) {
            *guard = Some((Instant::now(), e.clone()));
        }
        fetched
    }

    fn discover(&self) -> Result<Arc<CoreProviderMetadata>, FederationError> {
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| upstream("issuer")(e.to_string()))?;
        // Discovery checks that the document names this very issuer.
        let m = CoreProviderMetadata::discover(&issuer, &self.http).map_err(|e| match e {
            openidconnect::DiscoveryError::Request(HttpError::Timeout) => FederationError::Timeout,
            other => upstream("discovery")(other.to_string()),
        })?;
        let m = Arc::new(m);
        if let Ok(mut guard) = self.discovered.lock() {
            *guard = Some((Instant::now(), m.clone()));
        }
        Ok(m)
    }

    fn client(
        &self,
        m: &CoreProviderMetadata,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        FederationError,
    > {
        let redirect = RedirectUrl::new(self.redirect_uri.clone())
            .map_err(|e| upstream("redirect_uri")(e.to_string()))?;
        Ok(CoreClient::from_provider_metadata(
            m.clone(),
            ClientId::new(self.config.client_id.clone()),
            Some(ClientSecret::new(self.config.client_secret.clone())),
        )
        .set_redirect_uri(redirect))
    }

    fn may_refetch(&self) -> bool {
        let Ok(mut last) = self.refetched.lock() else {
            return false;
        };
        if last.is_some_and(|t| t.elapsed() < REFETCH_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// The authorization URL and what the callback will need.
    pub fn start(&self) -> Result<Started, FederationError> {
        let m = self.metadata(DISCOVERY_TTL)?;
        let client = self.client(&m)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        Ok(Started {
            url: url.to_string(),
            state: state.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            nonce: nonce.secret().clone(),
        })
    }

    /// Redeem `code` and verify the ID token; `now` is our clock.
    pub fn finish(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
        now: UnixTime,
    ) -> Result<UpstreamIdentity, FederationError> {
        let m = self.metadata(DISCOVERY_TTL)?;
        let client = self.client(&m)?;
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| upstream("token endpoint")(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request(&self.http)
            .map_err(token_error)?;
        let id_token = token
            .id_token()
            .ok_or_else(|| FederationError::InvalidIdToken("no id_token in the response".into()))?;
        let nonce = Nonce::new(nonce.to_owned());
        let verify = |m: &CoreProviderMetadata| -> Result<UpstreamIdentity, FederationError> {
            let client = self.client(m)?;
            // exp is checked against a clock 60 s behind ours, iat against one 60 s ahead.
            let behind = chrono::DateTime::from_timestamp(now - LEEWAY_SECS, 0)
                .unwrap_or(chrono::DateTime::UNIX_EPOCH);
            let verifier = client
                .id_token_verifier()
                .set_allowed_algs(vec![CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256])
                .set_time_fn(move || behind)
                .set_issue_time_verifier_fn(move |iat| {
                    if iat.timestamp() <= now + LEEWAY_SECS {
                        Ok(())
                    } else {
                        Err("issued in the future".into())
                    }
                });
            let claims = id_token.claims(&verifier, &nonce).map_err(|e| match e {
                ClaimsVerificationError::SignatureVerification(_) => {
                    FederationError::InvalidIdToken("signature".into())
                }
                other => FederationError::InvalidIdToken(other.to_string()),
            })?;
            // OIDC Core 3.1.3.7 step 5, which the verifier leaves out: an `azp` names us.
            if claims
                .authorized_party()
                .is_some_and(|azp| azp.as_str() != self.config.client_id)
            {
                return Err(FederationError::InvalidIdToken(
                    "azp is another client".into(),
                ));
            }
            let subject = claims.subject().as_str().to_owned();
            if !valid_subject(&subject) {
                return Err(FederationError::InvalidIdToken("unusable sub".into()));
            }
            let verified_email = match (claims.email(), claims.email_verified()) {
                (Some(e), Some(true)) => Some(e.as_str().to_owned()),
                _ => None,
            };
            Ok(UpstreamIdentity {
                provider: Provider::Google,
                subject,
                issuer: self.config.issuer.clone(),
                name: claims
                    .name()
                    .and_then(|n| n.get(None))
                    .map(|n| n.as_str().to_owned()),
                verified_email,
            })
        };
        match verify(&m) {
            // The provider may have rotated its keys since discovery: fetch them once more,
            // unless that was done within the last minute.
            Err(FederationError::InvalidIdToken(reason))
                if reason == "signature" && self.may_refetch() =>
            {
                verify(&*self.metadata(Duration::ZERO)?)
            }
            other => other,
        }
    }
}

/// A token-endpoint failure, without the response body (it may hold a token).
pub(super) fn token_error<T>(e: RequestTokenError<HttpError, T>) -> FederationError
where
    T: openidconnect::ErrorResponse + std::fmt::Display,
{
    match e {
        RequestTokenError::Request(HttpError::Timeout) => FederationError::Timeout,
        RequestTokenError::Request(other) => upstream("token endpoint")(other.to_string()),
        RequestTokenError::ServerResponse(r) => upstream("token endpoint refused")(r.to_string()),
        RequestTokenError::Parse(_, _) => {
            FederationError::Upstream("token endpoint: unreadable response".into())
        }
        RequestTokenError::Other(m) => upstream("token endpoint")(m),
    }
}
