//! Typed configuration: defaults, then a TOML file, then `PORTCULLIS_*` environment variables.
//!
//! Every key of DESIGN.md "Configuration" is here with its default. Unknown keys and wrong types
//! are errors that name the key; the issuer is checked to be an absolute http(s) URL without query
//! or fragment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::crypto::keys::SigningAlg;

/// The environment variable naming the config file (same as `--config`).
pub const CONFIG_ENV: &str = "PORTCULLIS_CONFIG";
const ENV_PREFIX: &str = "PORTCULLIS_";
/// The top-level keys; other `PORTCULLIS_*` variables are not ours (Kubernetes, for one, sets
/// `{SERVICE}_PORT`, `{SERVICE}_SERVICE_HOST` and more for a service of that name).
const TOP_LEVEL: [&str; 9] = [
    "issuer",
    "bind",
    "database_url",
    "keys_dir",
    "metrics_token",
    "tokens",
    "login",
    "upstream",
    "smtp",
];
/// Settings that are text however they look: figment reads `12345678` or `true` from the
/// environment as a number or a boolean, which a text field refuses (quoting the secret).
const TEXT_SETTINGS: [&str; 8] = [
    "metrics_token",
    "smtp.username",
    "smtp.password",
    "login.totp_encryption_key",
    "upstream.google.client_id",
    "upstream.google.client_secret",
    "upstream.github.client_id",
    "upstream.github.client_secret",
];

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Exact string placed in `iss`; every endpoint URL is built from it.
    pub issuer: String,
    /// Socket address the HTTP server listens on.
    pub bind: String,
    /// `sqlite://PATH` or `postgres://user:pass@host/db`.
    pub database_url: String,
    /// Folder of signing keys (PEM), shared by replicas.
    pub keys_dir: PathBuf,
    /// When set, `/metrics` answers only `Authorization: Bearer <this>` (Prometheus'
    /// `authorization` / `bearer_token` scrape setting); unset, it answers whoever reaches it.
    pub metrics_token: Option<String>,
    /// Token lifetimes and algorithms.
    pub tokens: TokenConfig,
    /// Sign-in policy.
    pub login: LoginConfig,
    /// Upstream identity providers; a present section enables the provider.
    pub upstream: UpstreamConfig,
    /// Outgoing mail for "forgot password"; absent: no such page, reset links by the CLI only.
    pub smtp: Option<SmtpConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            issuer: "http://127.0.0.1:8080".into(),
            bind: "127.0.0.1:8080".into(),
            database_url: "sqlite://portcullis.db".into(),
            keys_dir: PathBuf::from("keys"),
            metrics_token: None,
            tokens: TokenConfig::default(),
            login: LoginConfig::default(),
            upstream: UpstreamConfig::default(),
            smtp: None,
        }
    }
}

/// `[tokens]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// Access token lifetime (10 minutes).
    pub access_token_ttl_secs: u32,
    /// ID token lifetime (10 minutes).
    pub id_token_ttl_secs: u32,
    /// Refresh token lifetime (30 days).
    pub refresh_token_ttl_secs: u32,
    /// Authorization code lifetime (60 s).
    pub authorization_code_ttl_secs: u32,
    /// Algorithm of access tokens; ID tokens are RS256 unless the client asks otherwise.
    pub access_token_alg: SigningAlg,
    /// For how long after a rotation a confidential client may present the rotated refresh
    /// token once more, as a retry whose response was lost, while the token that rotation
    /// issued is still unused (30 s; 0 turns retries off, so any second use revokes the family).
    pub refresh_retry_grace_secs: u32,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            access_token_ttl_secs: 600,
            id_token_ttl_secs: 600,
            refresh_token_ttl_secs: 2_592_000,
            authorization_code_ttl_secs: 60,
            access_token_alg: SigningAlg::ES256,
            refresh_retry_grace_secs: 30,
        }
    }
}

impl TokenConfig {
    /// The longest time a JWT we signed can stay valid: how long a retired key stays published.
    pub fn max_jwt_ttl_secs(&self) -> i64 {
        i64::from(self.access_token_ttl_secs.max(self.id_token_ttl_secs))
    }
}

/// `[login]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoginConfig {
    /// Wrong passwords in a row before the account is locked (5).
    pub max_failed_attempts: u32,
    /// How long a lockout lasts (15 minutes).
    pub lockout_secs: u32,
    /// Failed sign-ins allowed from one client IP per window, whatever the account (20).
    pub ip_max_failures: u32,
    /// That window (15 minutes).
    pub ip_window_secs: u32,
    /// Take the client IP from the last `X-Forwarded-For` entry (set when a proxy you run, such
    /// as the compose file's nginx, is in front); otherwise the peer address.
    pub trust_forwarded_for: bool,
    /// How long a person may take at Google or GitHub before the sign-in must start again
    /// (10 minutes).
    pub upstream_state_ttl_secs: u32,
    /// Key that seals TOTP seeds at rest: base64 of 32 bytes. Empty: `totp.key` in `keys_dir`,
    /// created on first use.
    pub totp_encryption_key: String,
}

impl Default for LoginConfig {
    fn default() -> Self {
        Self {
            max_failed_attempts: 5,
            lockout_secs: 900,
            ip_max_failures: 20,
            ip_window_secs: 900,
            trust_forwarded_for: false,
            upstream_state_ttl_secs: 600,
            totp_encryption_key: String::new(),
        }
    }
}

/// `[smtp]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// Mail server host.
    pub host: String,
    /// Its port (587: submission with STARTTLS).
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// `starttls` (default), `tls` (implicit, port 465) or `none` (a relay on this machine).
    #[serde(default = "default_smtp_tls")]
    pub tls: String,
    /// Login, if the server wants one.
    #[serde(default)]
    pub username: String,
    /// Password for it.
    #[serde(default)]
    pub password: String,
    /// The sender, e.g. `Portcullis <no-reply@example.com>`.
    pub from: String,
}

fn default_smtp_port() -> u16 {
    587
}
fn default_smtp_tls() -> String {
    "starttls".into()
}

/// `[upstream]`
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// "Sign in with Google" (OpenID Connect).
    pub google: Option<GoogleConfig>,
    /// "Sign in with GitHub" (OAuth 2.0).
    pub github: Option<GithubConfig>,
}

/// The longest `login.ip_window_secs`: the purge forgets per-address windows after a day.
pub const MAX_IP_WINDOW_SECS: u32 = 86_400;

/// Whether `u` names this machine (`localhost`, 127.0.0.0/8, `::1`).
fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// `[upstream.google]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GoogleConfig {
    /// Client id registered at Google.
    pub client_id: String,
    /// Client secret registered at Google.
    pub client_secret: String,
    /// Issuer whose discovery document is used.
    #[serde(default = "default_google_issuer")]
    pub issuer: String,
}

fn default_google_issuer() -> String {
    "https://accounts.google.com".into()
}

/// `[upstream.github]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GithubConfig {
    /// Client id registered at GitHub.
    pub client_id: String,
    /// Client secret registered at GitHub.
    pub client_secret: String,
    /// Authorization endpoint.
    #[serde(default = "default_github_authorize")]
    pub authorize_url: String,
    /// Token endpoint.
    #[serde(default = "default_github_token")]
    pub token_url: String,
    /// REST API base.
    #[serde(default = "default_github_api")]
    pub api_url: String,
}

fn default_github_authorize() -> String {
    "https://github.com/login/oauth/authorize".into()
}
fn default_github_token() -> String {
    "https://github.com/login/oauth/access_token".into()
}
fn default_github_api() -> String {
    "https://api.github.com".into()
}

/// Which database a `database_url` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite file (path as given, relative to the working directory).
    Sqlite(PathBuf),
    /// A PostgreSQL connection string, passed to libpq as is.
    Postgres(String),
}

/// A configuration problem, one line naming the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Whether `key` (dotted, any case) lies under one of the configuration's top-level keys.
fn is_setting(key: &str) -> bool {
    let top = key.split('.').next().unwrap_or("");
    TOP_LEVEL.iter().any(|t| t.eq_ignore_ascii_case(top))
}

impl Config {
    /// The `PORTCULLIS_*` variables that name no setting (other programs', such as those
    /// Kubernetes sets for a service called portcullis): [`Config::load`] ignores them.
    pub fn ignored_env_vars() -> Vec<String> {
        std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .filter(|k| k.starts_with(ENV_PREFIX) && k != CONFIG_ENV)
            .filter(|k| !is_setting(&k[ENV_PREFIX.len()..].replace("__", ".")))
            .collect()
    }

    /// Load: defaults, then `file` (or `PORTCULLIS_CONFIG`) when given, then the environment.
    /// A named file that does not exist is an error; no file at all means defaults.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let from_env = std::env::var_os(CONFIG_ENV).map(PathBuf::from);
        let file = file.map(Path::to_path_buf).or(from_env);
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = &file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(
            Env::prefixed(ENV_PREFIX)
                .split("__")
                .filter(|k| is_setting(k.as_str()))
                .filter(|k| {
                    !TEXT_SETTINGS
                        .iter()
                        .any(|t| k.as_str().eq_ignore_ascii_case(t))
                }),
        );
        for key in TEXT_SETTINGS {
            let var = format!(
                "{ENV_PREFIX}{}",
                key.replace('.', "__").to_ascii_uppercase()
            );
            if let Ok(value) = std::env::var(&var) {
                figment = figment.merge(Serialized::default(key, value));
            }
        }
        let config: Config = figment.extract().map_err(|e| ConfigError(one_line(&e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_issuer(&self.issuer)?;
        self.bind.parse::<SocketAddr>().map_err(|_| {
            ConfigError(format!(
                "bind: {:?} is not an IP address and port",
                self.bind
            ))
        })?;
        self.database()?;
        if let Some(token) = &self.metrics_token {
            let printable = token.bytes().all(|b| b.is_ascii_graphic());
            if token.len() < 16 || !printable {
                return Err(ConfigError(
                    "metrics_token: must be at least 16 printable characters without spaces".into(),
                ));
            }
        }
        let t = &self.tokens;
        for (key, v) in [
            ("tokens.access_token_ttl_secs", t.access_token_ttl_secs),
            ("tokens.id_token_ttl_secs", t.id_token_ttl_secs),
            ("tokens.refresh_token_ttl_secs", t.refresh_token_ttl_secs),
            (
                "tokens.authorization_code_ttl_secs",
                t.authorization_code_ttl_secs,
            ),
            ("login.max_failed_attempts", self.login.max_failed_attempts),
            ("login.ip_max_failures", self.login.ip_max_failures),
            ("login.ip_window_secs", self.login.ip_window_secs),
            ("login.lockout_secs", self.login.lockout_secs),
            (
                "login.upstream_state_ttl_secs",
                self.login.upstream_state_ttl_secs,
            ),
        ] {
            if v == 0 {
                return Err(ConfigError(format!("{key}: must be greater than 0")));
            }
        }
        // The purge forgets per-address windows a day old: a longer window would be cut short.
        if self.login.ip_window_secs > MAX_IP_WINDOW_SECS {
            return Err(ConfigError(format!(
                "login.ip_window_secs: must be at most {MAX_IP_WINDOW_SECS} (a day)"
            )));
        }
        let mut credentials = Vec::new();
        if let Some(g) = &self.upstream.google {
            credentials.push(("upstream.google", &g.client_id, &g.client_secret));
        }
        if let Some(g) = &self.upstream.github {
            credentials.push(("upstream.github", &g.client_id, &g.client_secret));
        }
        for (section, id, secret) in credentials {
            // A button whose every sign-in fails upstream is worse than no button.
            if id.trim().is_empty() || secret.trim().is_empty() {
                return Err(ConfigError(format!(
                    "{section}: client_id and client_secret must not be empty"
                )));
            }
        }
        let mut urls = Vec::new();
        if let Some(g) = &self.upstream.google {
            urls.push(("upstream.google.issuer", g.issuer.as_str()));
        }
        if let Some(g) = &self.upstream.github {
            urls.push(("upstream.github.authorize_url", g.authorize_url.as_str()));
            urls.push(("upstream.github.token_url", g.token_url.as_str()));
            urls.push(("upstream.github.api_url", g.api_url.as_str()));
        }
        let key = self.login.totp_encryption_key.trim();
        if !key.is_empty() {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD.decode(key);
            if bytes.map_or(true, |b| b.len() != 32) {
                return Err(ConfigError(
                    "login.totp_encryption_key: must be 32 bytes in base64 (openssl rand -base64 32)"
                        .into(),
                ));
            }
        }
        if let Some(m) = &self.smtp {
            if m.host.trim().is_empty() {
                return Err(ConfigError("smtp.host: must not be empty".into()));
            }
            if !matches!(m.tls.as_str(), "starttls" | "tls" | "none") {
                return Err(ConfigError(format!(
                    "smtp.tls: {:?} is not starttls, tls or none",
                    m.tls
                )));
            }
            // Without TLS the credentials cross the network in the clear: only to a relay on
            // this machine.
            let loopback = matches!(m.host.trim(), "localhost" | "127.0.0.1" | "::1" | "[::1]");
            if m.tls == "none" && !m.username.is_empty() && !loopback {
                return Err(ConfigError(
                    "smtp.tls: \"none\" sends smtp.username and smtp.password in the clear; use starttls or tls, or a relay on this machine".into(),
                ));
            }
            if m.from.parse::<lettre::message::Mailbox>().is_err() {
                return Err(ConfigError(format!(
                    "smtp.from: {:?} is not a mail address",
                    m.from
                )));
            }
        }
        for (key, value) in urls {
            let Some(u) = url::Url::parse(value)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            else {
                return Err(ConfigError(format!(
                    "{key}: {value:?} is not an absolute http(s) URL"
                )));
            };
            // Over plain http the client secret, codes and tokens cross the network in the
            // clear, and anyone on the path could serve keys that forge ID tokens: only to a
            // service on this machine.
            if u.scheme() == "http" && !is_loopback(&u) {
                return Err(ConfigError(format!(
                    "{key}: {value:?} must be https (plain http only to this machine)"
                )));
            }
        }
        Ok(())
    }

    /// The parsed `database_url`.
    pub fn database(&self) -> Result<DatabaseUrl, ConfigError> {
        let url = self.database_url.as_str();
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(ConfigError(
                    "database_url: sqlite:// needs a file path".into(),
                ));
            }
            Ok(DatabaseUrl::Sqlite(PathBuf::from(path)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseUrl::Postgres(url.to_owned()))
        } else {
            Err(ConfigError(
                "database_url: must start with sqlite:// or postgres://".into(),
            ))
        }
    }

    /// `issuer` without a trailing slash, to append endpoint paths to.
    pub fn base_url(&self) -> &str {
        self.issuer.trim_end_matches('/')
    }

    /// Whether cookies must be `Secure`.
    pub fn is_https(&self) -> bool {
        self.issuer.starts_with("https://")
    }

    /// Whether the issuer is plain http on a host other than this machine: allowed (a test
    /// network, a proxy's inside name), but cookies then go without `Secure` and there is no
    /// HSTS, so `serve` warns.
    pub fn is_plain_http_off_machine(&self) -> bool {
        !self.is_https() && url::Url::parse(&self.issuer).is_ok_and(|u| !is_loopback(&u))
    }
}

/// OIDC Discovery 1.0 section 3 / RFC 8414 section 2: the issuer is an https URL (http allowed
/// here for local use) with no query or fragment.
fn validate_issuer(issuer: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| ConfigError(format!("issuer: {issuer:?} {why}"));
    let url = url::Url::parse(issuer).map_err(|_| bad("is not an absolute URL"))?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(bad("must be an http or https URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if url.query().is_some() || issuer.contains('?') {
        return Err(bad("must not have a query"));
    }
    if url.fragment().is_some() || issuer.contains('#') {
        return Err(bad("must not have a fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not contain credentials"));
    }
    // Every endpoint and page is served at the root of the origin, and discovery advertises
    // `{issuer}/token` and so on: an issuer with a path would advertise URLs that do not exist.
    if url.path() != "/" {
        return Err(bad(
            "must not have a path: Portcullis serves its endpoints at the root of its origin",
        ));
    }
    // `iss` is compared as a string, and cookies are Secure only for "https://": no other
    // spelling of the same URL (upper case, default port, missing slashes, spaces).
    let canonical = url.as_str().trim_end_matches('/');
    if issuer.trim_end_matches('/') != canonical {
        return Err(bad(&format!("must be written as {canonical:?}")));
    }
    Ok(())
}

/// Figment errors can chain; each becomes `key: problem (source)`, joined on one line. Values
/// are never repeated where they may be secret: a TOML syntax error loses the quoted source
/// line (it may hold a password), and a wrong type for a secret or id says only what was
/// expected.
fn one_line(e: &figment::Error) -> String {
    e.clone()
        .into_iter()
        .map(|e| {
            let key = e.path.join(".").to_ascii_lowercase();
            let source = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(src) => format!(" (in {src})"),
                    None => format!(" (in {})", m.name),
                })
                .unwrap_or_default();
            if TEXT_SETTINGS.contains(&key.as_str()) {
                if let figment::error::Kind::InvalidType(_, expected) = &e.kind {
                    return format!("{key}: expected {expected}, the value is not shown{source}");
                }
            }
            let kind = e
                .kind
                .to_string()
                .lines()
                // The parser's excerpt: `4 | password = "..."` and its gutter and caret lines.
                .filter(|line| {
                    !line
                        .trim_start()
                        .trim_start_matches(|c: char| c.is_ascii_digit())
                        .trim_start()
                        .starts_with('|')
                })
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ");
            if key.is_empty() {
                format!("{kind}{source}")
            } else {
                format!("{key}: {kind}{source}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_keys_and_text_settings_name_real_keys() {
        let config = Config {
            smtp: Some(SmtpConfig {
                host: "h".into(),
                port: 25,
                tls: "none".into(),
                username: String::new(),
                password: String::new(),
                from: "a@example.com".into(),
            }),
            metrics_token: Some("a-token-for-metrics".into()),
            ..Config::default()
        };
        let value = serde_json::to_value(&config).unwrap();
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut listed = TOP_LEVEL.to_vec();
        keys.sort_unstable();
        listed.sort_unstable();
        assert_eq!(keys, listed, "TOP_LEVEL must list every top-level key");
        for key in TEXT_SETTINGS {
            let (section, field) = key.rsplit_once('.').unwrap_or(("", key));
            let mut at = &value;
            for part in section.split('.').filter(|p| !p.is_empty()) {
                at = &at[part];
            }
            // Upstream sections are absent by default: their struct's fields are checked by name.
            if at.is_null() {
                assert!(key.starts_with("upstream."), "{key}");
                continue;
            }
            assert!(at[field].is_string(), "{key} is a text setting");
        }
    }

    #[test]
    fn upstream_urls_are_https_unless_on_this_machine() {
        let with = |token_url: &str| Config {
            upstream: UpstreamConfig {
                google: None,
                github: Some(GithubConfig {
                    client_id: "id".into(),
                    client_secret: "secret".into(),
                    authorize_url: default_github_authorize(),
                    token_url: token_url.into(),
                    api_url: default_github_api(),
                }),
            },
            ..Config::default()
        };
        for ok in [
            "https://github.com/login/oauth/access_token",
            "http://127.0.0.1:9000/token",
            "http://localhost:9000/token",
            "http://[::1]:9000/token",
        ] {
            assert!(with(ok).validate().is_ok(), "{ok}");
        }
        for bad in [
            "http://github.com/login/oauth/access_token",
            "http://10.0.0.5/token",
            "ftp://github.com/token",
        ] {
            assert!(with(bad).validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn upstream_credentials_lockout_and_windows_must_be_usable() {
        let github = |id: &str, secret: &str| Config {
            upstream: UpstreamConfig {
                google: None,
                github: Some(GithubConfig {
                    client_id: id.into(),
                    client_secret: secret.into(),
                    authorize_url: default_github_authorize(),
                    token_url: default_github_token(),
                    api_url: default_github_api(),
                }),
            },
            ..Config::default()
        };
        assert!(github("id", "secret").validate().is_ok());
        for (id, secret) in [("", "secret"), ("id", " "), ("", "")] {
            let e = github(id, secret).validate().unwrap_err().to_string();
            assert!(e.contains("upstream.github"), "{e}");
        }
        let mut c = Config::default();
        c.login.lockout_secs = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("lockout_secs"));
        let mut c = Config::default();
        c.login.ip_window_secs = MAX_IP_WINDOW_SECS;
        assert!(c.validate().is_ok());
        c.login.ip_window_secs = MAX_IP_WINDOW_SECS + 1;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("ip_window_secs"));
    }

    #[test]
    fn plain_http_issuers_off_this_machine_are_told_apart() {
        let at = |issuer: &str| Config {
            issuer: issuer.into(),
            ..Config::default()
        };
        assert!(!at("http://127.0.0.1:8080").is_plain_http_off_machine());
        assert!(!at("http://localhost:8080").is_plain_http_off_machine());
        assert!(!at("https://id.example.com").is_plain_http_off_machine());
        assert!(at("http://id.example.com").is_plain_http_off_machine());
        assert!(at("http://portcullis:8080").is_plain_http_off_machine());
    }

    #[test]
    fn issuer_rules() {
        for ok in ["http://127.0.0.1:8080", "https://id.example.com/"] {
            assert!(validate_issuer(ok).is_ok(), "{ok}");
        }
        for bad in [
            "id.example.com",
            "https://id.example.com/?a=b",
            "https://id.example.com/#x",
            "ftp://id.example.com",
            "https://u:p@id.example.com",
            "https://id.example.com/tenant",
            "https://id.example.com/tenant/",
            "HTTPS://id.example.com",
            "https:id.example.com",
            "https://ID.example.com",
            " https://id.example.com",
            "https://id.example.com:443",
        ] {
            assert!(validate_issuer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn database_urls() {
        let mut c = Config::default();
        assert_eq!(
            c.database().unwrap(),
            DatabaseUrl::Sqlite(PathBuf::from("portcullis.db"))
        );
        c.database_url = "mysql://x".into();
        assert!(c.database().is_err());
        c.database_url = "postgres://postgres@127.0.0.1/test".into();
        assert!(matches!(c.database().unwrap(), DatabaseUrl::Postgres(_)));
    }
}
