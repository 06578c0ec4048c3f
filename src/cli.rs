//! The `portcullis` command line (DESIGN.md "Command line").
//!
//! A bad argument or a failed command prints exactly one line, `error: ...`, on stderr and exits
//! 2 (usage) or 1 (failure); nothing is changed by a command that fails.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use crate::audit::{AuditEvent, AuditFilter};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::crypto::keys::{self, KeySet, SigningAlg};
use crate::crypto::seal::Sealer;
use crate::crypto::{opaque, password};
use crate::oauth::client::{AuthMethod, Client, ClientSpec, GrantType};
use crate::oauth::scope::is_scope_token;
use crate::oauth::totp;
use crate::oauth::user::{check_password_policy, lookup_username, normalize_username, User};
use crate::store::db::DbStore;
use crate::store::{AuditStore, ClientStore, MfaStore, SessionStore, StoreError, UserStore};

/// `println!` for command output: a closed standard output (`portcullis client list | head -1`)
/// ends the command with one `error:` line and status 1, as every failure does, not with a
/// panic. What the command changed is done by then; only its report is cut short.
macro_rules! println {
    ($($arg:tt)*) => {
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            eprintln!("error: standard output: {e}");
            std::process::exit(1);
        }
    };
}

#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "An OAuth 2.0 / OpenID Connect authorization server"
)]
struct Cli {
    /// Configuration file (TOML); also PORTCULLIS_CONFIG.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server; applies pending migrations first.
    Serve,
    /// Apply pending database migrations.
    Migrate,
    /// Manage registered clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage people who sign in.
    #[command(subcommand)]
    User(UserCommand),
    /// Read the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Security events, oldest first (the newest `--limit`).
    List {
        /// Only events about this person (username or user id).
        #[arg(long, allow_hyphen_values = true)]
        user: Option<String>,
        /// Only events about this client.
        #[arg(long, allow_hyphen_values = true)]
        client: Option<String>,
        /// Only events at or after this time: Unix seconds or RFC 3339.
        #[arg(long)]
        since: Option<String>,
        /// At most this many (default 1000).
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a person.
    Create {
        /// Sign-in name (a-z 0-9 . _ - @ +, stored lower-case).
        #[arg(long, allow_hyphen_values = true)]
        username: String,
        /// Email address.
        #[arg(long)]
        email: Option<String>,
        /// Full name.
        #[arg(long)]
        name: Option<String>,
        /// Phone number, E.164 recommended (released with the `phone` scope).
        #[arg(long = "phone-number", allow_hyphen_values = true)]
        phone_number: Option<String>,
        /// Postal address as one formatted text; "\n" separates lines (the `address` scope).
        #[arg(long)]
        address: Option<String>,
        /// A role (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Read the password from standard input (one trailing newline is stripped).
        #[arg(long = "password-stdin")]
        password_stdin: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List people.
    List(JsonFlag),
    /// Show one person.
    Show(UserName),
    /// Set a password, read from standard input.
    SetPassword {
        /// Username.
        #[arg(allow_hyphen_values = true)]
        username: String,
        /// Read the password from standard input (required).
        #[arg(long = "password-stdin", required = true)]
        password_stdin: bool,
    },
    /// Refuse every sign-in until unlocked.
    Lock(UserName),
    /// Allow sign-in again, ending any lockout.
    Unlock(UserName),
    /// Delete a person with their sessions and consents.
    Delete(UserName),
    /// Add or remove a role: `user role add NAME ROLE`.
    Role {
        /// `add` or `remove`.
        #[arg(value_enum)]
        action: RoleAction,
        /// Username.
        #[arg(allow_hyphen_values = true)]
        username: String,
        /// The role.
        role: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a single-use link, valid 30 minutes, that sets a new password.
    ResetLink(UserName),
    /// Enrol TOTP (replacing any enrolment): prints the secret, the otpauth URI and ten
    /// recovery codes, shown only now.
    Totp(UserName),
}

/// What `user role` does.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RoleAction {
    /// Grant the role.
    Add,
    /// Take it away.
    Remove,
}

#[derive(Debug, Args)]
struct UserName {
    /// Username.
    #[arg(allow_hyphen_values = true)]
    username: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Register a client; its secret is printed once.
    Create(CreateClient),
    /// List clients.
    List(JsonFlag),
    /// Show one client.
    Show(ClientId),
    /// Delete a client.
    Delete(ClientId),
    /// Replace a confidential client's secret; the new one is printed once.
    RotateSecret(ClientId),
}

#[derive(Debug, Args)]
struct JsonFlag {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ClientId {
    /// The client id (may start with '-', as generated ids and kids can).
    #[arg(allow_hyphen_values = true)]
    id: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct CreateClient {
    /// Display name, shown on the consent page.
    #[arg(long)]
    name: String,
    /// Choose the client id (default: generated).
    #[arg(long = "client-id", allow_hyphen_values = true)]
    client_id: Option<String>,
    /// A public client (no secret; PKCE required).
    #[arg(long)]
    public: bool,
    /// An exact redirect URI (repeatable).
    #[arg(long = "redirect-uri")]
    redirect_uris: Vec<String>,
    /// An exact post-logout redirect URI (repeatable).
    #[arg(long = "post-logout-redirect-uri")]
    post_logout_redirect_uris: Vec<String>,
    /// A grant type (repeatable; default authorization_code with a redirect URI, else
    /// client_credentials).
    #[arg(long = "grant-type", value_enum)]
    grant_types: Vec<GrantType>,
    /// A scope the client may be granted (repeatable).
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// An RFC 8707 resource indicator the client may ask for (repeatable).
    #[arg(long = "resource")]
    resources: Vec<String>,
    /// Token endpoint authentication (default client_secret_basic; none for --public).
    #[arg(long = "auth-method", value_enum)]
    auth_method: Option<AuthMethod>,
    /// First-party client: never show the consent page.
    #[arg(long = "skip-consent")]
    skip_consent: bool,
    /// Only people holding this role may sign in to the client.
    #[arg(long = "require-role")]
    require_role: Option<String>,
    /// A browser origin allowed to call the token and other API endpoints (CORS), besides
    /// those of the redirect URIs (repeatable).
    #[arg(long = "allowed-origin")]
    allowed_origins: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// List keys with their state (active, published, retired).
    List(JsonFlag),
    /// Generate a key; it signs from the next key refresh on.
    Generate {
        /// RS256 or ES256.
        #[arg(long, value_parser = parse_alg)]
        alg: SigningAlg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Retire a key: it stops signing and leaves the JWKS when its tokens have expired.
    Retire {
        /// The key id (RFC 7638 thumbprints may start with '-').
        #[arg(allow_hyphen_values = true)]
        kid: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_alg(s: &str) -> Result<SigningAlg, String> {
    SigningAlg::parse(s).ok_or_else(|| format!("{s:?} is not RS256 or ES256"))
}

/// A command failure: the line to print and the exit code (1 failure, 2 usage).
#[derive(Debug)]
struct Failure(String, u8);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string(), 1)
    }
}

fn fail(msg: impl Into<String>) -> Failure {
    Failure(msg.into(), 1)
}

/// A bad argument or configuration value: exit 2.
fn usage(msg: impl Into<String>) -> Failure {
    Failure(msg.into(), 2)
}

/// Parse the command line, run it, and return the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                eprintln!("error: a subcommand is required (see --help)");
                return ExitCode::from(2);
            }
            // clap names missing arguments on the lines after its first: name them on this one.
            if e.kind() == ErrorKind::MissingRequiredArgument {
                use clap::error::{ContextKind, ContextValue};
                if let Some(ContextValue::Strings(missing)) = e.get(ContextKind::InvalidArg) {
                    eprintln!("error: missing required arguments: {}", missing.join(", "));
                    return ExitCode::from(2);
                }
            }
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("error: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    // Said after the command, so that a failure stays one line; the server says it in its log.
    let serving = matches!(cli.command, Command::Serve);
    let ignored = Config::ignored_env_vars();
    match run(cli) {
        Ok(()) => {
            if !serving && !ignored.is_empty() {
                eprintln!("note: ignoring {} (not settings)", ignored.join(", "));
            }
            ExitCode::SUCCESS
        }
        Err(Failure(msg, code)) => {
            let line = msg.replace('\n', " ");
            eprintln!("error: {}", line.trim_start_matches("error: "));
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let config = Config::load(cli.config.as_deref()).map_err(|e| usage(e.to_string()))?;
    match cli.command {
        Command::Serve => serve(config),
        Command::Migrate => {
            let applied = open_store(&config)?;
            println!("applied {} migration(s)", applied.1.len());
            Ok(())
        }
        Command::Client(cmd) => client(&config, cmd),
        Command::Keys(cmd) => keys_cmd(&config, cmd),
        Command::User(cmd) => user_cmd(&config, cmd),
        Command::Audit(cmd) => audit_cmd(&config, cmd),
    }
}

fn serve(config: Config) -> Result<(), Failure> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let ignored = Config::ignored_env_vars();
    if !ignored.is_empty() {
        tracing::warn!("ignoring {} (not settings)", ignored.join(", "));
    }
    actix_web::rt::System::new()
        .block_on(crate::http::serve(config))
        .map_err(|e| fail(format!("{e:#}")))
}

/// Record an operator's change in the audit log: address `cli`, the operating-system user as
/// the agent.
fn audit(
    store: &DbStore,
    event: &str,
    user_id: Option<&str>,
    client_id: Option<&str>,
    detail: Option<String>,
) -> Result<(), Failure> {
    let mut e = AuditEvent::new(event, SystemClock.now());
    e.user_id = user_id.map(str::to_owned);
    e.client_id = client_id.map(str::to_owned);
    e.detail = detail;
    e.ip = Some("cli".into());
    let operator = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    e.user_agent = Some(format!("portcullis-cli (os user {operator})"));
    // The change is made: a row that cannot be written must not hide its result (a secret
    // shown only once). Say so on stderr.
    if let Err(error) = crate::audit::record_now(store, e) {
        eprintln!("warning: audit row not written: {error}");
    }
    Ok(())
}

/// Open the database and apply pending migrations (every command may be the first one run).
fn open_store(config: &Config) -> Result<(DbStore, Vec<String>), Failure> {
    let store = DbStore::open_single(config.database()?);
    let applied = store.migrate()?;
    Ok((store, applied))
}

fn print_json(v: &Value) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// The `client show` object.
fn client_json(c: &Client) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or_else(|_| json!({}));
    if let Some(obj) = v.as_object_mut() {
        obj.insert("public".into(), c.is_public().into());
    }
    v
}

fn print_client(c: &Client) {
    println!("client_id:    {}", c.client_id);
    println!("name:         {}", c.name);
    println!("auth_method:  {}", c.auth_method.as_str());
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.join(" ")
        }
    };
    let grants: Vec<String> = c
        .grant_types
        .iter()
        .map(|g| g.as_str().to_owned())
        .collect();
    println!("grant_types:  {}", list(&grants));
    println!("scopes:       {}", list(&c.scopes));
    println!("redirect_uris: {}", list(&c.redirect_uris));
    println!(
        "post_logout_redirect_uris: {}",
        list(&c.post_logout_redirect_uris)
    );
    println!("resources:    {}", list(&c.resources));
    println!("skip_consent: {}", c.skip_consent);
    println!("allowed_origins: {}", list(&c.allowed_origins));
    println!(
        "required_role: {}",
        c.required_role.as_deref().unwrap_or("-")
    );
}

fn client(config: &Config, cmd: ClientCommand) -> Result<(), Failure> {
    let now = SystemClock.now();
    match cmd {
        ClientCommand::Create(a) => {
            let spec = ClientSpec {
                name: a.name,
                client_id: a.client_id,
                public: a.public,
                redirect_uris: a.redirect_uris,
                post_logout_redirect_uris: a.post_logout_redirect_uris,
                grant_types: a.grant_types,
                scopes: a.scopes,
                resources: a.resources,
                auth_method: a.auth_method,
                skip_consent: a.skip_consent,
                required_role: a.require_role,
                allowed_origins: a.allowed_origins,
            };
            // Validate before touching the database.
            let mut client = spec.into_client(opaque::random_id(), now).map_err(usage)?;
            let secret = (!client.is_public()).then(opaque::random_token);
            client.secret_hash = secret.as_deref().map(opaque::hash_secret);
            let (store, _) = open_store(config)?;
            match store.create_client(&client) {
                Err(StoreError::Conflict) => {
                    return Err(fail(format!("client {} already exists", client.client_id)))
                }
                other => other?,
            }
            audit(
                &store,
                "client.created",
                None,
                Some(&client.client_id),
                None,
            )?;
            if a.json {
                let mut v = client_json(&client);
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("client_secret".into(), secret.into());
                }
                print_json(&v)
            } else {
                print_client(&client);
                if let Some(s) = secret {
                    println!("client_secret: {s}");
                    println!("(the secret is shown only now; it is stored as a hash)");
                }
                Ok(())
            }
        }
        ClientCommand::List(f) => {
            let (store, _) = open_store(config)?;
            let clients = store.list_clients()?;
            if f.json {
                print_json(&Value::Array(clients.iter().map(client_json).collect()))
            } else {
                for c in &clients {
                    println!("{}\t{}\t{}", c.client_id, c.auth_method.as_str(), c.name);
                }
                Ok(())
            }
        }
        ClientCommand::Show(c) => {
            let (store, _) = open_store(config)?;
            let client = store
                .find_client(&c.id)?
                .ok_or_else(|| fail(format!("no client {}", c.id)))?;
            if c.json {
                print_json(&client_json(&client))
            } else {
                print_client(&client);
                Ok(())
            }
        }
        ClientCommand::Delete(c) => {
            let (store, _) = open_store(config)?;
            if !store.delete_client(&c.id)? {
                return Err(fail(format!("no client {}", c.id)));
            }
            audit(&store, "client.deleted", None, Some(&c.id), None)?;
            if c.json {
                print_json(&json!({"client_id": c.id, "deleted": true}))
            } else {
                println!("deleted client {}", c.id);
                Ok(())
            }
        }
        ClientCommand::RotateSecret(c) => {
            let (store, _) = open_store(config)?;
            let client = store
                .find_client(&c.id)?
                .ok_or_else(|| fail(format!("no client {}", c.id)))?;
            if client.is_public() {
                return Err(fail(format!("client {} is public and has no secret", c.id)));
            }
            let secret = opaque::random_token();
            if !store.set_client_secret(&c.id, &opaque::hash_secret(&secret))? {
                return Err(fail(format!("no client {}", c.id)));
            }
            audit(&store, "client.secret_rotated", None, Some(&c.id), None)?;
            if c.json {
                print_json(&json!({"client_id": c.id, "client_secret": secret}))
            } else {
                println!("client_id:     {}", c.id);
                println!("client_secret: {secret}");
                Ok(())
            }
        }
    }
}

fn audit_cmd(config: &Config, cmd: AuditCommand) -> Result<(), Failure> {
    let AuditCommand::List {
        user,
        client,
        since,
        limit,
        json,
    } = cmd;
    let since = match since {
        None => None,
        Some(t) => Some(match t.parse::<i64>() {
            Ok(secs) => secs,
            Err(_) => chrono::DateTime::parse_from_rfc3339(&t)
                .map(|d| d.timestamp())
                .map_err(|_| usage(format!("--since {t:?} is not Unix seconds or RFC 3339")))?,
        }),
    };
    if !(1..=100_000).contains(&limit) {
        return Err(usage("--limit must be between 1 and 100000"));
    }
    let (store, _) = open_store(config)?;
    // A username if there is one by that name, else taken as a user id (deleted users too).
    let user_id = match user {
        Some(u) => Some(
            match lookup_username(&u)
                .ok()
                .map(|name| store.find_user_by_username(&name))
                .transpose()?
                .flatten()
            {
                Some(found) => found.id,
                None => u,
            },
        ),
        None => None,
    };
    let events = store.list_audit(&AuditFilter {
        user_id,
        client_id: client,
        since,
        limit,
    })?;
    if json {
        return print_json(&serde_json::to_value(&events)?);
    }
    for e in events {
        let at = chrono::DateTime::from_timestamp(e.at, 0)
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        let mut line = format!("{at}  {}", e.event);
        for (k, v) in [
            ("user", &e.user_id),
            ("client", &e.client_id),
            ("ip", &e.ip),
            ("request", &e.request_id),
        ] {
            if let Some(v) = v {
                line.push_str(&format!("  {k}={v}"));
            }
        }
        if let Some(d) = &e.detail {
            line.push_str(&format!("  ({d})"));
        }
        println!("{line}");
    }
    Ok(())
}

/// Key changes are files first: their audit row is written when the database answers, and
/// the change stands either way.
fn key_audit(config: &Config, event: &str, detail: String) {
    if let Ok((store, _)) = open_store(config) {
        let _ = audit(&store, event, None, None, Some(detail));
    }
}

fn keys_cmd(config: &Config, cmd: KeysCommand) -> Result<(), Failure> {
    let now = SystemClock.now();
    let dir = &config.keys_dir;
    let ttl = config.tokens.max_jwt_ttl_secs();
    match cmd {
        KeysCommand::List(f) => {
            let set = if dir.exists() {
                KeySet::load_at(dir, ttl, now)?
            } else {
                return Err(fail(format!("keys_dir {} does not exist", dir.display())));
            };
            let list = set.list(now);
            if f.json {
                print_json(&serde_json::to_value(&list)?)
            } else {
                for k in list {
                    println!(
                        "{}\t{}\t{}",
                        k.kid,
                        k.alg,
                        json!(k.state).as_str().unwrap_or("")
                    );
                }
                Ok(())
            }
        }
        KeysCommand::Generate { alg, json } => {
            let kid = keys::generate(dir, alg, now)?;
            key_audit(config, "key.generated", format!("kid={kid} alg={alg}"));
            if json {
                print_json(&json!({"kid": kid, "alg": alg}))
            } else {
                println!("generated {alg} key {kid}");
                Ok(())
            }
        }
        KeysCommand::Retire { kid, json } => {
            keys::retire(dir, &kid, now)?;
            key_audit(config, "key.retired", format!("kid={kid}"));
            let set = KeySet::load_at(dir, ttl, now)?;
            let info = set
                .list(now)
                .into_iter()
                .find(|k| k.kid == kid)
                .ok_or_else(|| fail(format!("no key with kid {kid}")))?;
            if json {
                print_json(&serde_json::to_value(&info)?)
            } else {
                println!(
                    "retired {} key {kid}; it stays published until its tokens expire",
                    info.alg
                );
                Ok(())
            }
        }
    }
}

/// `--password-stdin`: all of standard input, less one trailing newline.
fn read_password(username: &str) -> Result<String, Failure> {
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)
        .map_err(|e| usage(format!("cannot read the password from stdin: {e}")))?;
    let password = input
        .strip_suffix("\r\n")
        .or_else(|| input.strip_suffix('\n'))
        .unwrap_or(&input)
        .to_owned();
    check_password_policy(&password, username).map_err(usage)?;
    password::hash_password(&password).map_err(fail)
}

fn user_json(u: &User) -> Value {
    json!({
        "id": u.id,
        "username": u.username,
        "email": u.email,
        "name": u.name,
        "phone_number": u.phone_number,
        "address": u.address,
        "roles": u.roles,
        "locked": u.locked,
        "locked_until": u.locked_until,
        "has_password": u.password_hash.is_some(),
        "created_at": u.created_at,
    })
}

fn print_user(u: &User) {
    println!("id:       {}", u.id);
    println!("username: {}", u.username);
    println!("email:    {}", u.email.as_deref().unwrap_or("-"));
    println!("name:     {}", u.name.as_deref().unwrap_or("-"));
    println!("phone:    {}", u.phone_number.as_deref().unwrap_or("-"));
    println!(
        "address:  {}",
        u.address.as_deref().unwrap_or("-").replace('\n', ", ")
    );
    println!(
        "roles:    {}",
        if u.roles.is_empty() {
            "-".into()
        } else {
            u.roles.join(" ")
        }
    );
    println!("locked:   {}", u.locked);
}

fn find_user(store: &DbStore, name: &str) -> Result<User, Failure> {
    let username = lookup_username(name).map_err(usage)?;
    store
        .find_user_by_username(&username)?
        .ok_or_else(|| fail(format!("no user {username}")))
}

fn user_cmd(config: &Config, cmd: UserCommand) -> Result<(), Failure> {
    let now = SystemClock.now();
    match cmd {
        UserCommand::Create {
            username,
            email,
            name,
            phone_number,
            address,
            roles,
            password_stdin,
            json,
        } => {
            let username = normalize_username(&username).map_err(usage)?;
            if let Some(e) = &email {
                if !e.contains('@') || e.len() > 254 || e.chars().any(char::is_whitespace) {
                    return Err(usage(format!("--email {e:?} is not an email address")));
                }
            }
            if let Some(p) = &phone_number {
                let ok = p.len() <= 32
                    && p.chars().any(|c| c.is_ascii_digit())
                    && p.chars()
                        .all(|c| c.is_ascii_digit() || " +-().".contains(c));
                if !ok {
                    return Err(usage(format!("--phone-number {p:?} is not a phone number")));
                }
            }
            if address.as_ref().is_some_and(|a| a.len() > 512) {
                return Err(usage("--address is longer than 512 characters"));
            }
            if let Some(r) = roles.iter().find(|r| !is_scope_token(r)) {
                return Err(usage(format!("--role {r:?} is not a valid role name")));
            }
            let password_hash = if password_stdin {
                Some(read_password(&username)?)
            } else {
                None
            };
            let user = User {
                id: opaque::random_id(),
                username,
                email,
                name: name.filter(|n| !n.trim().is_empty()),
                phone_number: phone_number.map(|p| p.trim().to_owned()),
                address: address
                    .map(|a| a.replace("\\n", "\n").trim().to_owned())
                    .filter(|a| !a.is_empty()),
                roles,
                password_hash,
                locked: false,
                failed_logins: 0,
                locked_until: None,
                created_at: now,
            };
            let (store, _) = open_store(config)?;
            match store.create_user(&user) {
                Err(StoreError::Conflict) => {
                    return Err(fail(format!("user {} already exists", user.username)))
                }
                other => other?,
            }
            audit(&store, "user.created", Some(&user.id), None, None)?;
            if json {
                print_json(&user_json(&user))
            } else {
                print_user(&user);
                Ok(())
            }
        }
        UserCommand::List(f) => {
            let (store, _) = open_store(config)?;
            let users = store.list_users()?;
            if f.json {
                print_json(&Value::Array(users.iter().map(user_json).collect()))
            } else {
                for u in &users {
                    println!(
                        "{}\t{}\t{}",
                        u.username,
                        u.id,
                        u.email.as_deref().unwrap_or("-")
                    );
                }
                Ok(())
            }
        }
        UserCommand::Show(u) => {
            let (store, _) = open_store(config)?;
            let user = find_user(&store, &u.username)?;
            if u.json {
                print_json(&user_json(&user))
            } else {
                print_user(&user);
                Ok(())
            }
        }
        UserCommand::SetPassword { username, .. } => {
            // A federated account signs in upstream; a password would open a second way in
            // under a name the login page refuses anyway.
            if lookup_username(&username).is_ok() && normalize_username(&username).is_err() {
                return Err(usage(format!(
                    "{} names an account that signs in through Google or GitHub: it has no password to set",
                    username.trim()
                )));
            }
            let username = normalize_username(&username).map_err(usage)?;
            let hash = read_password(&username)?;
            let (store, _) = open_store(config)?;
            let user = find_user(&store, &username)?;
            store.set_password(&user.id, &hash, SystemClock.now())?;
            audit(&store, "user.password_set", Some(&user.id), None, None)?;
            println!("password set for {}", user.username);
            Ok(())
        }
        UserCommand::Role {
            action,
            username,
            role,
            json,
        } => {
            if !is_scope_token(&role) {
                return Err(usage(format!("{role:?} is not a valid role name")));
            }
            let (store, _) = open_store(config)?;
            let user = find_user(&store, &username)?;
            let mut roles = user.roles.clone();
            match action {
                RoleAction::Add if !roles.contains(&role) => roles.push(role),
                RoleAction::Add => {}
                RoleAction::Remove => roles.retain(|r| *r != role),
            }
            store.set_roles(&user.id, &roles)?;
            audit(
                &store,
                "user.roles_changed",
                Some(&user.id),
                None,
                Some(format!("roles={}", roles.join(" "))),
            )?;
            let user = find_user(&store, &username)?;
            if json {
                print_json(&user_json(&user))
            } else {
                print_user(&user);
                Ok(())
            }
        }
        UserCommand::ResetLink(u) => {
            let (store, _) = open_store(config)?;
            let user = find_user(&store, &u.username)?;
            if user.password_hash.is_none() {
                return Err(fail(format!(
                    "{} signs in without a password here",
                    user.username
                )));
            }
            let crate::oauth::reset::NewLink {
                url: link,
                expires_at,
                ..
            } = crate::oauth::reset::create_link(&store, config.base_url(), &user.id, now, None)?
                .ok_or_else(|| fail("the link was not recorded".to_owned()))?;
            audit(
                &store,
                "password.reset_link_created",
                Some(&user.id),
                None,
                None,
            )?;
            if u.json {
                print_json(
                    &json!({"username": user.username, "link": link, "expires_at": expires_at}),
                )
            } else {
                println!("{link}");
                println!("(single use, valid 30 minutes)");
                Ok(())
            }
        }
        UserCommand::Totp(u) => {
            let (store, _) = open_store(config)?;
            let user = find_user(&store, &u.username)?;
            if user.password_hash.is_none() {
                return Err(fail(format!(
                    "{} signs in without a password here; a second factor applies to passwords",
                    user.username
                )));
            }
            let sealer = Sealer::load(&config.login.totp_encryption_key, &config.keys_dir)
                .map_err(|e| fail(e.to_string()))?;
            let secret = totp::new_secret();
            let codes = totp::new_recovery_codes();
            let uri = totp::otpauth_uri(&secret, &user.username)
                .ok_or_else(|| fail("cannot build the otpauth URI".to_owned()))?;
            store.enrol_totp(
                &user.id,
                &sealer.seal(&secret, &user.id),
                &totp::recovery_hashes(&codes),
                now,
            )?;
            // The factor is in force from here: show it before anything else can fail, or the
            // account would ask for a code nobody has.
            let b32 = totp::base32(&secret);
            if u.json {
                print_json(&json!({
                    "username": user.username,
                    "secret": b32,
                    "otpauth_uri": uri,
                    "recovery_codes": codes,
                }))?;
            } else {
                println!("secret:         {b32}");
                println!("otpauth_uri:    {uri}");
                println!("recovery codes: {}", codes.join(" "));
            }
            // Sessions that began without the code end.
            let ended = store
                .delete_user_sessions(&user.id, None, now)
                .map_err(|e| {
                    fail(format!(
                        "the second factor is enrolled (shown above), but the sessions that \
                         began without it could not be ended: {e}"
                    ))
                })?;
            audit(
                &store,
                "mfa.enrolled",
                Some(&user.id),
                None,
                Some(format!("by operator; sessions_ended={ended}")),
            )
        }
        UserCommand::Lock(u) => lock_user(config, &u, true),
        UserCommand::Unlock(u) => lock_user(config, &u, false),
        UserCommand::Delete(u) => {
            let (store, _) = open_store(config)?;
            let user = find_user(&store, &u.username)?;
            store.delete_user(&user.id)?;
            audit(
                &store,
                "user.deleted",
                Some(&user.id),
                None,
                Some(format!("username={}", user.username)),
            )?;
            if u.json {
                print_json(&json!({"username": user.username, "deleted": true}))
            } else {
                println!("deleted user {}", user.username);
                Ok(())
            }
        }
    }
}

fn lock_user(config: &Config, u: &UserName, locked: bool) -> Result<(), Failure> {
    let (store, _) = open_store(config)?;
    let user = find_user(&store, &u.username)?;
    store.set_locked(&user.id, locked)?;
    let event = if locked {
        "user.locked"
    } else {
        "user.unlocked"
    };
    audit(&store, event, Some(&user.id), None, None)?;
    let user = find_user(&store, &u.username)?;
    if u.json {
        print_json(&user_json(&user))
    } else {
        let what = if locked { "locked" } else { "unlocked" };
        println!("{what} user {}", user.username);
        Ok(())
    }
}
