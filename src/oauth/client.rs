//! Registered clients and the rules for registering them.

use serde::{Deserialize, Serialize};

use super::scope::is_scope_token;
use crate::clock::UnixTime;

/// RFC 7591 `token_endpoint_auth_method` values we support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[clap(rename_all = "snake_case")]
pub enum AuthMethod {
    /// RFC 6749 2.3.1, HTTP Basic.
    ClientSecretBasic,
    /// RFC 6749 2.3.1, in the form body.
    ClientSecretPost,
    /// A public client: no secret.
    None,
}

impl AuthMethod {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::None => "none",
        }
    }

    /// Parse a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "client_secret_basic" => Some(AuthMethod::ClientSecretBasic),
            "client_secret_post" => Some(AuthMethod::ClientSecretPost),
            "none" => Some(AuthMethod::None),
            _ => None,
        }
    }
}

/// Grant types a client can be registered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[clap(rename_all = "snake_case")]
pub enum GrantType {
    /// RFC 6749 4.1 with PKCE.
    AuthorizationCode,
    /// RFC 6749 4.4.
    ClientCredentials,
    /// RFC 6749 6.
    RefreshToken,
}

impl GrantType {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::ClientCredentials => "client_credentials",
            GrantType::RefreshToken => "refresh_token",
        }
    }
}

/// A registered client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// Identifier.
    pub client_id: String,
    /// Shown to people on the consent page.
    pub name: String,
    /// SHA-256 of the secret (hex); `None` for public clients.
    #[serde(skip)]
    pub secret_hash: Option<String>,
    /// How it authenticates at the token endpoint.
    pub auth_method: AuthMethod,
    /// Exact redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Exact post-logout redirect URIs.
    pub post_logout_redirect_uris: Vec<String>,
    /// Grants it may use.
    pub grant_types: Vec<GrantType>,
    /// Scopes it may be granted.
    pub scopes: Vec<String>,
    /// RFC 8707 resource indicators it may ask for (access token `aud`).
    pub resources: Vec<String>,
    /// First-party: no consent page.
    pub skip_consent: bool,
    /// Registration time.
    pub created_at: UnixTime,
    /// Only people holding this role may sign in to it.
    pub required_role: Option<String>,
    /// Browser origins allowed besides those of the redirect URIs.
    pub allowed_origins: Vec<String>,
}

impl Client {
    /// A public client has no secret.
    pub fn is_public(&self) -> bool {
        self.auth_method == AuthMethod::None
    }

    /// The browser origins this client's apps run on: those of its http(s) redirect URIs and
    /// the ones registered with `--allowed-origin`.
    pub fn cors_origins(&self) -> impl Iterator<Item = String> + '_ {
        self.redirect_uris
            .iter()
            .filter_map(|u| url::Url::parse(u).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .map(|u| u.origin().ascii_serialization())
            .chain(self.allowed_origins.iter().cloned())
    }

    /// Whether `roles` let a person use this client.
    pub fn admits(&self, roles: &[String]) -> bool {
        self.required_role
            .as_ref()
            .is_none_or(|r| roles.iter().any(|have| have == r))
    }

    /// Whether it is registered for `grant`.
    pub fn allows_grant(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }

    /// A client_credentials client for unit tests and the fuzz targets.
    #[doc(hidden)]
    pub fn sample(id: &str, auth_method: AuthMethod, secret: Option<&str>) -> Self {
        Client {
            client_id: id.into(),
            name: id.into(),
            secret_hash: secret.map(crate::crypto::opaque::hash_secret),
            auth_method,
            redirect_uris: vec![],
            post_logout_redirect_uris: vec![],
            grant_types: vec![GrantType::ClientCredentials],
            scopes: vec![],
            resources: vec![],
            skip_consent: false,
            required_role: None,
            allowed_origins: Vec::new(),
            created_at: 0,
        }
    }
}

/// What the operator asks for in `client create`.
#[derive(Debug, Clone, Default)]
pub struct ClientSpec {
    /// Name (required, non-empty).
    pub name: String,
    /// Chosen id, or generated.
    pub client_id: Option<String>,
    /// `--public`.
    pub public: bool,
    /// Exact redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Exact post-logout redirect URIs.
    pub post_logout_redirect_uris: Vec<String>,
    /// Grants; empty means the default (see [`ClientSpec::into_client`]).
    pub grant_types: Vec<GrantType>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Resource indicators.
    pub resources: Vec<String>,
    /// `--auth-method`; default `client_secret_basic`, or `none` for public clients.
    pub auth_method: Option<AuthMethod>,
    /// `--skip-consent`.
    pub skip_consent: bool,
    /// `--require-role`.
    pub required_role: Option<String>,
    /// `--allowed-origin`.
    pub allowed_origins: Vec<String>,
}

/// An origin as browsers send it: `scheme://host[:port]`, http(s), nothing more.
fn check_origin(o: &str) -> Result<(), String> {
    let ok = url::Url::parse(o).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host().is_some()
            && u.origin().ascii_serialization() == o
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--allowed-origin {o:?} must be an origin such as https://app.example.com"
        ))
    }
}

/// A client id must be 1 to 128 URL-unreserved characters (RFC 3986 2.3), so that it is safe in
/// URLs, HTTP Basic and logs.
pub fn valid_client_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// RFC 9700 2.1 / RFC 6749 3.1.2: absolute, no fragment; https, or http on a loopback host
/// (RFC 8252 7.3). Returns why not.
pub fn check_redirect_uri(uri: &str) -> Result<(), String> {
    // The URL parser drops tabs and newlines and trims controls, so such a URI would parse;
    // stored as typed, it could not be sent back in a Location header.
    if uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "{uri:?} must not contain spaces or control characters"
        ));
    }
    let url = url::Url::parse(uri).map_err(|_| format!("{uri:?} is not an absolute URI"))?;
    if url.fragment().is_some() || uri.contains('#') {
        return Err(format!("{uri:?} must not contain a fragment"));
    }
    match url.scheme() {
        "https" if url.host_str().is_some() => Ok(()),
        "http" if matches!(url.host_str(), Some("127.0.0.1" | "[::1]" | "localhost")) => Ok(()),
        "http" => Err(format!("{uri:?}: http is allowed only for loopback hosts")),
        _ => Err(format!(
            "{uri:?} must use https (or http on a loopback host)"
        )),
    }
}

impl ClientSpec {
    /// Check every rule and build the client (without a secret). Errors are one line.
    pub fn into_client(self, generated_id: String, now: UnixTime) -> Result<Client, String> {
        let name = self.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 200 {
            return Err("--name must be 1 to 200 characters".into());
        }
        if name.chars().any(char::is_control) {
            return Err("--name must not contain control characters".into());
        }
        let client_id = self.client_id.unwrap_or(generated_id);
        if !valid_client_id(&client_id) {
            return Err("--client-id must be 1 to 128 characters of A-Z a-z 0-9 - . _ ~".into());
        }
        let auth_method = match (self.public, self.auth_method) {
            (true, None | Some(AuthMethod::None)) => AuthMethod::None,
            (true, Some(m)) => {
                return Err(format!("a --public client cannot use {}", m.as_str()));
            }
            (false, Some(AuthMethod::None)) => {
                return Err("--auth-method none needs --public".into());
            }
            (false, m) => m.unwrap_or(AuthMethod::ClientSecretBasic),
        };
        for uri in self
            .redirect_uris
            .iter()
            .chain(&self.post_logout_redirect_uris)
        {
            check_redirect_uri(uri)?;
        }
        let mut grant_types = dedup(self.grant_types);
        if grant_types.is_empty() {
            grant_types.push(if self.redirect_uris.is_empty() {
                GrantType::ClientCredentials
            } else {
                GrantType::AuthorizationCode
            });
        }
        if grant_types.contains(&GrantType::AuthorizationCode) && self.redirect_uris.is_empty() {
            return Err("authorization_code needs at least one --redirect-uri".into());
        }
        if auth_method == AuthMethod::None && grant_types.contains(&GrantType::ClientCredentials) {
            // RFC 6749 4.4: only confidential clients.
            return Err("a --public client cannot use client_credentials".into());
        }
        for s in &self.scopes {
            if !is_scope_token(s) {
                return Err(format!("--scope {s:?} is not a valid scope token"));
            }
        }
        if let Some(r) = &self.required_role {
            if !is_scope_token(r) {
                return Err(format!("--require-role {r:?} is not a valid role name"));
            }
        }
        for o in &self.allowed_origins {
            check_origin(o)?;
        }
        for r in &self.resources {
            match url::Url::parse(r) {
                Ok(u) if u.fragment().is_none() => {}
                _ => {
                    return Err(format!(
                        "--resource {r:?} must be an absolute URI without a fragment"
                    ))
                }
            }
        }
        Ok(Client {
            client_id,
            name,
            secret_hash: None,
            auth_method,
            redirect_uris: dedup(self.redirect_uris),
            post_logout_redirect_uris: dedup(self.post_logout_redirect_uris),
            grant_types,
            scopes: dedup(self.scopes),
            resources: dedup(self.resources),
            skip_consent: self.skip_consent,
            created_at: now,
            required_role: self.required_role,
            allowed_origins: dedup(self.allowed_origins),
        })
    }
}

fn dedup<T: PartialEq>(items: Vec<T>) -> Vec<T> {
    let mut out = Vec::with_capacity(items.len());
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ClientSpec {
        ClientSpec {
            name: "App".into(),
            ..Default::default()
        }
    }

    #[test]
    fn redirect_uri_rules() {
        for ok in [
            "https://app.example.com/cb",
            "http://127.0.0.1:9000/cb",
            "http://localhost/cb",
            "http://[::1]:8/cb",
        ] {
            assert!(check_redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://app.example.com/cb",
            "https://app.example.com/cb#frag",
            "/relative",
            "javascript:alert(1)",
            "https://app.example.com/cb#",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_and_conflicts() {
        let c = spec().into_client("gen".into(), 5).unwrap();
        assert_eq!(c.client_id, "gen");
        assert_eq!(c.auth_method, AuthMethod::ClientSecretBasic);
        assert_eq!(c.grant_types, vec![GrantType::ClientCredentials]);

        let public_cc = ClientSpec {
            public: true,
            grant_types: vec![GrantType::ClientCredentials],
            ..spec()
        };
        assert!(public_cc.into_client("g".into(), 0).is_err());

        let code_without_uri = ClientSpec {
            grant_types: vec![GrantType::AuthorizationCode],
            ..spec()
        };
        assert!(code_without_uri.into_client("g".into(), 0).is_err());

        let bad_id = ClientSpec {
            client_id: Some("a b".into()),
            ..spec()
        };
        assert!(bad_id.into_client("g".into(), 0).is_err());

        let none_not_public = ClientSpec {
            auth_method: Some(AuthMethod::None),
            ..spec()
        };
        assert!(none_not_public.into_client("g".into(), 0).is_err());
    }
}
