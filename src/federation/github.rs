//! "Sign in with GitHub" with the `oauth2` crate: the web flow with `state` and PKCE, the code
//! exchanged at the token URL, then `GET {api_url}/user` and `{api_url}/user/emails`; only the
//! primary email, and only if GitHub has verified it, counts.

use oauth2::basic::BasicClient;
use oauth2::http::{header, Method, Request};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse, TokenUrl,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::http::UpstreamHttp;
use super::{valid_subject, FederationError, Provider, Started, UpstreamIdentity};
use crate::config::GithubConfig;

/// The GitHub sign-in.
pub struct Github {
    config: GithubConfig,
    redirect_uri: String,
    http: UpstreamHttp,
}

impl std::fmt::Debug for Github {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Github")
            .field("authorize_url", &self.config.authorize_url)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct GithubUser {
    id: u64,
    login: String,
    name: Option<String>,
}

#[derive(Deserialize)]
struct GithubEmail {
    email: String,
    primary: bool,
    verified: bool,
}

fn bad(what: &str) -> impl Fn(String) -> FederationError + '_ {
    move |e| FederationError::Upstream(format!("{what}: {e}"))
}

impl Github {
    /// For `config`, with our callback `redirect_uri`.
    pub fn new(config: GithubConfig, redirect_uri: String, http: UpstreamHttp) -> Self {
        Self {
            config,
            redirect_uri,
            http,
        }
    }

    fn client(
        &self,
    ) -> Result<
        BasicClient<
            oauth2::EndpointSet,
            oauth2::EndpointNotSet,
            oauth2::EndpointNotSet,
            oauth2::EndpointNotSet,
            oauth2::EndpointSet,
        >,
        FederationError,
    > {
        let auth = AuthUrl::new(self.config.authorize_url.clone())
            .map_err(|e| bad("authorize_url")(e.to_string()))?;
        let token = TokenUrl::new(self.config.token_url.clone())
            .map_err(|e| bad("token_url")(e.to_string()))?;
        let redirect = RedirectUrl::new(self.redirect_uri.clone())
            .map_err(|e| bad("redirect_uri")(e.to_string()))?;
        Ok(
            BasicClient::new(ClientId::new(self.config.client_id.clone()))
                .set_client_secret(ClientSecret::new(self.config.client_secret.clone()))
                .set_auth_uri(auth)
                .set_token_uri(token)
                .set_redirect_uri(redirect)
                // GitHub documents the credentials as form fields.
                .set_auth_type(AuthType::RequestBody),
        )
    }

    /// The authorization URL and what the callback will need.
    pub fn start(&self) -> Result<Started, FederationError> {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state) = self
            .client()?
            .authorize_url(CsrfToken::new_random)
            .add_scope(Scope::new("read:user".into()))
            .add_scope(Scope::new("user:email".into()))
            .set_pkce_challenge(challenge)
            .url();
        Ok(Started {
            url: url.to_string(),
            state: state.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            nonce: String::new(),
        })
    }

    /// Redeem `code`, then ask the API who it is.
    pub fn finish(
        &self,
        code: &str,
        pkce_verifier: &str,
    ) -> Result<UpstreamIdentity, FederationError> {
        let token = self
            .client()?
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request(&self.http)
            .map_err(super::google::token_error)?;
        let access_token = token.access_token().secret();
        let user: GithubUser = self.api(access_token, "/user")?;
        let emails: Vec<GithubEmail> = self.api(access_token, "/user/emails")?;
        let subject = user.id.to_string();
        if !valid_subject(&subject) {
            return Err(FederationError::Upstream("unusable user id".into()));
        }
        let verified_email = emails
            .into_iter()
            .find(|e| e.primary && e.verified)
            .map(|e| e.email);
        Ok(UpstreamIdentity {
            provider: Provider::Github,
            subject,
            issuer: self.config.api_url.clone(),
            name: user
                .name
                .filter(|n| !n.trim().is_empty())
                .or(Some(user.login)),
            verified_email,
        })
    }

    /// `GET {api_url}{path}` with the access token, parsed as JSON.
    fn api<T: DeserializeOwned>(&self, token: &str, path: &str) -> Result<T, FederationError> {
        let url = format!("{}{path}", self.config.api_url.trim_end_matches('/'));
        let request = Request::builder()
            .method(Method::GET)
            .uri(&url)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .body(Vec::new())
            .map_err(|e| bad("api request")(e.to_string()))?;
        let response = self.http.send(request)?;
        if !response.status().is_success() {
            return Err(FederationError::Upstream(format!(
                "GET {path}: HTTP {}",
                response.status().as_u16()
            )));
        }
        serde_json::from_slice(response.body())
            .map_err(|_| FederationError::Upstream(format!("GET {path}: unreadable response")))
    }
}
