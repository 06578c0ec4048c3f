//! Test harness: starts the real `portcullis` binary on a free port against SQLite or a fresh
//! PostgreSQL database, runs its CLI with the same configuration, and talks HTTP to it.

#![allow(dead_code)]

pub mod pgproxy;
pub mod smtp;
pub mod upstream;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// PostgreSQL server for tests; `TEST_DATABASE_URL` overrides it.
/// The binary, with none of the developer's own `PORTCULLIS_*` settings: a test sets what it
/// means to test.
pub fn portcullis_command() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PORTCULLIS_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

pub fn pg_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Whether PostgreSQL tests run. With `REQUIRE_POSTGRES=1` (CI) an unreachable server fails the
/// tests; otherwise they are skipped with a notice.
pub fn postgres_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let required = std::env::var("REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
        match PgConnection::establish(&pg_admin_url()) {
            Ok(_) => true,
            Err(e) if required => panic!("REQUIRE_POSTGRES=1 but PostgreSQL is unreachable: {e}"),
            Err(e) => {
                eprintln!(
                    "NOTICE: PostgreSQL tests skipped (no server at {}): {e}",
                    pg_admin_url()
                );
                false
            }
        }
    })
}

/// Which database a test server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in the test's folder.
    Sqlite,
    /// A database created for the test and dropped after it.
    Postgres,
}

/// A PostgreSQL database that lives as long as this value.
pub struct PgDatabase {
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    /// Create a uniquely named database.
    pub fn create() -> Self {
        let name = format!("portcullis_test_{}", random_suffix());
        let mut admin = PgConnection::establish(&pg_admin_url()).expect("connect to PostgreSQL");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create test database");
        let mut url = url::Url::parse(&pg_admin_url()).expect("TEST_DATABASE_URL is a URL");
        url.set_path(&name);
        let url = url.to_string();
        Self { name, url }
    }

    /// The URL with host and port replaced (to go through a proxy).
    pub fn url_via(&self, port: u16) -> String {
        let mut url = url::Url::parse(&self.url).expect("database URL");
        url.set_host(Some("127.0.0.1")).expect("host");
        url.set_port(Some(port)).expect("port");
        url.to_string()
    }

    /// `host:port` of the PostgreSQL server, for a proxy in front of it.
    pub fn server_addr(&self) -> String {
        let url = url::Url::parse(&self.url).expect("database URL");
        format!(
            "{}:{}",
            url.host_str().unwrap_or("127.0.0.1"),
            url.port().unwrap_or(5432)
        )
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let dropped = PgConnection::establish(&pg_admin_url())
            .map_err(|e| e.to_string())
            .and_then(|mut admin| {
                admin
                    .batch_execute(&format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        self.name
                    ))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = dropped {
            eprintln!("note: test database {} was not dropped: {e}", self.name);
        }
    }
}

fn random_suffix() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().gen();
    format!("{n:016x}")
}

/// A free TCP port on 127.0.0.1 (the listener is closed before the server binds it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Settings of a test server before it starts.
pub struct ServerBuilder {
    backend: Backend,
    env: Vec<(String, String)>,
    pg: Option<PgDatabase>,
    db_url_override: Option<String>,
    dir: tempfile::TempDir,
}

/// A running server and its environment.
pub struct Server {
    pub backend: Backend,
    pub base: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
    child: Option<Child>,
    log_path: PathBuf,
    pub pg: Option<PgDatabase>,
}

impl ServerBuilder {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            env: Vec::new(),
            pg: (backend == Backend::Postgres).then(PgDatabase::create),
            db_url_override: None,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// An extra environment variable (config override).
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Use this database URL instead of the default for the backend.
    pub fn database_url(mut self, url: String) -> Self {
        self.db_url_override = Some(url);
        self
    }

    /// The PostgreSQL database the server will use, if any.
    pub fn pg(&self) -> Option<&PgDatabase> {
        self.pg.as_ref()
    }

    pub fn start(self) -> Server {
        let db_url = self
            .db_url_override
            .clone()
            .unwrap_or_else(|| match &self.pg {
                Some(pg) => pg.url.clone(),
                None => format!(
                    "sqlite://{}",
                    self.dir.path().join("portcullis.db").display()
                ),
            });
        let mut server = Server {
            backend: self.backend,
            base: String::new(),
            port: 0,
            log_path: self.dir.path().join("server.log"),
            env: Vec::new(),
            child: None,
            pg: self.pg,
            dir: self.dir,
        };
        // The port is picked free, then bound by the server: another process may take it in
        // between, so try again on a new port when that happens.
        for _ in 0..5 {
            let port = free_port();
            server.port = port;
            server.base = format!("http://127.0.0.1:{port}");
            server.env = vec![
                ("PORTCULLIS_ISSUER".to_owned(), server.base.clone()),
                ("PORTCULLIS_BIND".to_owned(), format!("127.0.0.1:{port}")),
                ("PORTCULLIS_DATABASE_URL".to_owned(), db_url.clone()),
                (
                    "PORTCULLIS_KEYS_DIR".to_owned(),
                    server.dir.path().join("keys").display().to_string(),
                ),
            ];
            server.env.extend(self.env.iter().cloned());
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start a server on a free port: {}", server.logs());
    }
}

impl Server {
    /// Start a server with default settings.
    pub fn start(backend: Backend) -> Self {
        ServerBuilder::new(backend).start()
    }

    fn command(&self) -> Command {
        let mut cmd = portcullis_command();
        cmd.current_dir(self.dir.path()).env("RUST_LOG", "debug");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Start the process and wait until it answers; false if its port was taken.
    fn spawn(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        // What this start writes: the log is appended to across restarts.
        let from = log.metadata().map(|m| m.len()).unwrap_or(0);
        let own_log = |path: &std::path::Path| {
            let all = std::fs::read(path).unwrap_or_default();
            String::from_utf8_lossy(all.get(from as usize..).unwrap_or_default()).into_owned()
        };
        let child = self
            .command()
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start portcullis");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // Exited first: a server another test started on the same port must not pass for
            // this one.
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                if own_log(&self.log_path).contains("in use") {
                    self.child = None;
                    return false;
                }
                panic!("server exited with {status}: {}", self.logs());
            }
            // Listening: this process holds the port, so the answer is its own.
            if own_log(&self.log_path).contains("listening") {
                if let Ok(r) = agent().get(&self.url("/healthz")).call() {
                    if r.status() == 200 {
                        return true;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "server did not start: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop and start again with the same configuration.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn(),
            "port {} was taken during the restart",
            self.port
        );
    }

    /// Stop the process.
    /// Send a signal by name: `TERM` (what an orchestrator does to stop a replica), `INT`
    /// (Ctrl-C).
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{name} {pid}");
    }

    /// Wait up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Run the CLI with the server's configuration.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run portcullis")
    }

    /// Run the CLI with its standard output going to `stdout`.
    pub fn cli_to(&self, args: &[&str], stdout: Stdio) -> Output {
        self.command()
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .output()
            .expect("run portcullis")
    }

    /// Run the CLI with `input` on its standard input.
    pub fn cli_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run portcullis");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("wait for portcullis")
    }

    /// Run the CLI and parse its JSON output; panics on failure.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Register a confidential client; returns (id, secret).
    pub fn client(&self, extra: &[&str]) -> (String, String) {
        let mut args = vec!["client", "create", "--json"];
        if !extra.contains(&"--name") {
            args.extend_from_slice(&["--name", "Test client"]);
        }
        args.extend_from_slice(extra);
        let v = self.cli_json(&args);
        (
            v["client_id"].as_str().expect("client_id").to_owned(),
            v["client_secret"].as_str().unwrap_or_default().to_owned(),
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Everything the server has logged so far.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.dir.path().join("keys")
    }

    /// POST a form, optionally with HTTP Basic credentials.
    pub fn post_form(
        &self,
        path: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Resp {
        let mut req = agent().post(&self.url(path));
        if let Some((id, secret)) = basic {
            req = req.set("Authorization", &basic_header(id, secret));
        }
        Resp::from(req.send_form(form))
    }

    /// POST a raw body with a content type.
    pub fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: &[u8],
        basic: Option<(&str, &str)>,
    ) -> Resp {
        let mut req = agent()
            .post(&self.url(path))
            .set("Content-Type", content_type);
        if let Some((id, secret)) = basic {
            req = req.set("Authorization", &basic_header(id, secret));
        }
        Resp::from(req.send_bytes(body))
    }

    pub fn get(&self, path: &str) -> Resp {
        Resp::from(agent().get(&self.url(path)).call())
    }

    /// A client_credentials token for (id, secret); panics unless 200.
    pub fn cc_token(&self, id: &str, secret: &str, scope: Option<&str>) -> String {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        let r = self.post_form("/token", &form, Some((id, secret)));
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// RFC 6749 2.3.1 Basic credentials: form-encode each part, then base64.
pub fn basic_header(id: &str, secret: &str) -> String {
    use base64::Engine;
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .redirects(0)
        .build()
}

/// A response of any status.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} (status {})", self.body, self.status))
    }

    /// Assert an RFC 6749 error response with this status and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.body);
        let v = self.json();
        assert_eq!(v["error"], code, "body: {}", self.body);
        assert!(v["error_description"].is_string(), "body: {}", self.body);
    }
}

impl From<Result<ureq::Response, ureq::Error>> for Resp {
    fn from(r: Result<ureq::Response, ureq::Error>) -> Self {
        let resp = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("transport error: {e}"),
        };
        let status = resp.status();
        let headers = resp
            .headers_names()
            .into_iter()
            .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_owned())))
            .collect();
        // Unreadable is a failure, not an empty body every `!contains` check would pass.
        let body = resp.into_string().expect("a readable response body");
        Resp {
            status,
            headers,
            body,
        }
    }
}

/// Run `test` on SQLite and, when available, on PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name($crate::common::Backend::Sqlite) } )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if $crate::common::postgres_available() {
                        super::$name($crate::common::Backend::Postgres)
                    }
                }
            )*
        }
    };
}

/// Write `contents` to `dir/name` and return the path.
pub fn write_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).expect("write file");
    p
}

/// Run `sql` on the server's own database (to age rows, say); how many rows it changed.
pub fn execute_sql(s: &Server, sql: &str) -> usize {
    use diesel::RunQueryDsl;
    let url = s
        .env
        .iter()
        .find(|(k, _)| k == "PORTCULLIS_DATABASE_URL")
        .map(|(_, v)| v.clone())
        .expect("the server's database URL");
    match url.strip_prefix("sqlite://") {
        Some(p) => {
            use diesel::connection::SimpleConnection;
            let mut c = diesel::SqliteConnection::establish(p).expect("open SQLite");
            // The server writes too (audit rows 25 ms after each event, the purge): wait for
            // its write lock instead of failing with "database is locked".
            c.batch_execute("PRAGMA busy_timeout = 10000")
                .expect("set a busy timeout");
            diesel::sql_query(sql).execute(&mut c)
        }
        None => diesel::sql_query(sql)
            .execute(&mut PgConnection::establish(&url).expect("connect to PostgreSQL")),
    }
    .expect("run SQL")
}

/// Everything SQLite holds on disk for a server: the database file and its write-ahead log.
pub fn sqlite_bytes(s: &Server) -> Vec<u8> {
    let mut bytes = Vec::new();
    for name in ["portcullis.db", "portcullis.db-wal"] {
        if let Ok(b) = std::fs::read(s.dir.path().join(name)) {
            bytes.extend(b);
        }
    }
    bytes
}
