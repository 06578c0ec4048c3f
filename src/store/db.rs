//! The diesel store: one implementation over SQLite and PostgreSQL through `MultiConnection`,
//! with an r2d2 pool and migrations embedded in the binary.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{self, ManageConnection, PooledConnection, R2D2Connection};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

mod audit;
mod federation;
mod mfa;
mod prepared;
mod reset;

use prepared::{fixed_sql, Bind, Prepared};

use super::schema::{
    authorization_codes, clients, consents, login_ip_failures, password_resets, pending_links,
    pending_mfa, recovery_codes, refresh_tokens, revoked_tokens, sessions, upstream_logins,
    user_identities, user_totp, users,
};
use super::{
    ClientStore, CodeRecord, CodeStore, ConsentStore, Maintenance, NextRefresh, RefreshRecord,
    RefreshStore, RevocationStore, Session, SessionStore, StoreError, StoreResult, UserStore,
};
use crate::clock::UnixTime;
use crate::config::DatabaseUrl;
use crate::oauth::client::{AuthMethod, Client};
use crate::oauth::user::User;

/// SQLite migrations; `migrations/postgres` has the same names and reaches the same schema.
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
/// PostgreSQL migrations.
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// A connection to either database.
#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    /// PostgreSQL.
    Postgresql(diesel::PgConnection),
    /// SQLite.
    Sqlite(diesel::SqliteConnection),
}

/// Opens connections of the configured kind; SQLite ones get WAL and a busy timeout.
#[derive(Debug, Clone)]
pub struct Manager {
    url: DatabaseUrl,
}

/// A pooled connection is checked (a round trip) when it is taken from the pool only if it was
/// last known to work longer ago than this: under load each connection is checked a few times a
/// second instead of before every statement, and one that died is still found out soon.
const RECHECK_AFTER: Duration = Duration::from_millis(250);

/// A pooled connection and when it last answered.
pub struct Tracked {
    conn: AnyConnection,
    checked: Instant,
}

impl ManageConnection for Manager {
    type Connection = Tracked;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<Tracked, r2d2::Error> {
        let conn = self.open()?;
        Ok(Tracked {
            conn,
            checked: Instant::now(),
        })
    }

    fn is_valid(&self, t: &mut Tracked) -> Result<(), r2d2::Error> {
        if t.checked.elapsed() < RECHECK_AFTER {
            return Ok(());
        }
        t.conn.ping().map_err(r2d2::Error::QueryError)?;
        t.checked = Instant::now();
        Ok(())
    }

    fn has_broken(&self, t: &mut Tracked) -> bool {
        // A connection given back while its thread unwinds may be inside a transaction.
        std::thread::panicking() || t.conn.is_broken()
    }
}

impl Manager {
    fn open(&self) -> Result<AnyConnection, r2d2::Error> {
        match &self.url {
            DatabaseUrl::Sqlite(path) => {
                let path = path.to_string_lossy();
                let mut conn = diesel::SqliteConnection::establish(&path)
                    .map_err(r2d2::Error::ConnectionError)?;
                // WAL lets readers run beside the writer; busy_timeout makes writers queue.
                conn.batch_execute(
                    "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
                     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                )
                .map_err(r2d2::Error::QueryError)?;
                Ok(AnyConnection::Sqlite(conn))
            }
            DatabaseUrl::Postgres(url) => diesel::PgConnection::establish(url)
                .map(AnyConnection::Postgresql)
                .map_err(r2d2::Error::ConnectionError),
        }
    }
}

/// A connection taken from the pool, used as the [`AnyConnection`] it holds.
struct Conn(PooledConnection<Manager>);

impl Deref for Conn {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.0.conn
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.0.conn
    }
}

/// Delete at most `$batch` rows of `$table` matching `$filter`, by primary key `$key`: select
/// the keys, then delete them, in one transaction. On PostgreSQL the select locks the rows and
/// skips those a request holds: the purge never waits on a row lock, so it is never one side of
/// a deadlock with a logout or a revocation updating the same expired rows in another order
/// (which would cost that request a 503). SQLite has one writer at a time and no row locks.
macro_rules! purge {
    ($conn:ident, $table:ident, $key:ident, $filter:expr, $batch:expr) => {{
        let select = $table::table
            .select($table::$key)
            .filter($filter)
            .limit($batch);
        $conn
            .transaction(|c| -> QueryResult<usize> {
                let keys: Vec<String> = match c {
                    AnyConnection::Postgresql(pg) => select.for_update().skip_locked().load(pg)?,
                    AnyConnection::Sqlite(lite) => select.load(lite)?,
                };
                if keys.is_empty() {
                    return Ok(0);
                }
                diesel::delete($table::table.filter($table::$key.eq_any(&keys))).execute(c)
            })
            .map_err(db_err)?
    }};
}

/// Logs pool errors through tracing (r2d2 would use `log`).
#[derive(Debug)]
struct PoolErrors;

impl r2d2::HandleError<r2d2::Error> for PoolErrors {
    fn handle_error(&self, error: r2d2::Error) {
        tracing::warn!(%error, "database connection failed");
    }
}

/// The diesel-backed store.
#[derive(Clone)]
pub struct DbStore {
    pool: r2d2::Pool<Manager>,
    is_sqlite: bool,
    /// Where the code purge's last scan stopped (expiry, code hash): see `purge_codes`.
    code_scan: Arc<Mutex<(i64, String)>>,
}

impl std::fmt::Debug for DbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbStore")
            .field("sqlite", &self.is_sqlite)
            .finish_non_exhaustive()
    }
}

fn db_err(e: DieselError) -> StoreError {
    match e {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => StoreError::Conflict,
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => {
            StoreError::Unavailable("connection closed".into())
        }
        other => StoreError::Database(other.to_string()),
    }
}

impl DbStore {
    /// A pool for the server. Connections are opened lazily, so a database that is down now is
    /// not an error until it is used.
    pub fn open(url: DatabaseUrl) -> Self {
        // SQLite has one writer at a time. With several connections, a writer that finds the
        // file locked sleeps in SQLite's busy handler (1, 2, 5, 10 ... ms) however soon the lock
        // is free; one connection makes requests queue in the pool instead and wake at once.
        // SQLite's statements take microseconds, so the queue moves fast.
        let size = if matches!(url, DatabaseUrl::Sqlite(_)) {
            1
        } else {
            16
        };
        Self::with_pool_size(url, size, 1)
    }

    /// One connection and no idle ones kept warm: for short-lived commands, which must not exit
    /// while the pool's thread is opening a connection in the background.
    pub fn open_single(url: DatabaseUrl) -> Self {
        Self::with_pool_size(url, 1, 0)
    }

    fn with_pool_size(url: DatabaseUrl, max_size: u32, min_idle: u32) -> Self {
        let is_sqlite = matches!(url, DatabaseUrl::Sqlite(_));
        let pool = r2d2::Pool::builder()
            .max_size(max_size)
            .min_idle(Some(min_idle))
            .connection_timeout(Duration::from_secs(3))
            .error_handler(Box::new(PoolErrors))
            .build_unchecked(Manager { url });
        Self {
            pool,
            is_sqlite,
            code_scan: Arc::new(Mutex::new(CODE_SCAN_START)),
        }
    }

    fn conn(&self) -> StoreResult<Conn> {
        self.pool
            .get()
            .map(Conn)
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// Apply pending migrations; returns the versions applied. On PostgreSQL an advisory lock
    /// keeps replicas starting together from racing.
    pub fn migrate(&self) -> StoreResult<Vec<String>> {
        let mut conn = self.conn()?;
        let applied = match &mut *conn {
            AnyConnection::Sqlite(c) => c
                .run_pending_migrations(SQLITE_MIGRATIONS)
                .map(|v| v.iter().map(ToString::to_string).collect::<Vec<_>>()),
            AnyConnection::Postgresql(c) => {
                const LOCK: &str = "SELECT pg_advisory_lock(7356434)";
                c.batch_execute(LOCK).map_err(db_err)?;
                let result = c
                    .run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map(|v| v.iter().map(ToString::to_string).collect::<Vec<_>>());
                c.batch_execute("SELECT pg_advisory_unlock(7356434)")
                    .map_err(db_err)?;
                result
            }
        };
        applied.map_err(|e| StoreError::Database(format!("migration failed: {e}")))
    }
}

type ClientRow = (
    String,
    String,
    Option<String>,
    String,
    String,
    String,
    String,
    String,
    String,
    bool,
    i64,
    Option<String>,
    String,
);

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn from_json<T: serde::de::DeserializeOwned>(column: &str, s: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Database(format!("clients.{column}: {e}")))
}

fn row_to_client(r: ClientRow) -> StoreResult<Client> {
    Ok(Client {
        client_id: r.0,
        name: r.1,
        secret_hash: r.2,
        auth_method: AuthMethod::parse(&r.3)
            .ok_or_else(|| StoreError::Database(format!("clients.auth_method: {:?}", r.3)))?,
        redirect_uris: from_json("redirect_uris", &r.4)?,
        post_logout_redirect_uris: from_json("post_logout_redirect_uris", &r.5)?,
        grant_types: from_json("grant_types", &r.6)?,
        scopes: from_json("scopes", &r.7)?,
        resources: from_json("resources", &r.8)?,
        skip_consent: r.9,
        created_at: r.10,
        required_role: r.11,
        allowed_origins: from_json("allowed_origins", &r.12)?,
    })
}

impl ClientStore for DbStore {
    fn find_client(&self, client_id: &str) -> StoreResult<Option<Client>> {
        let row = clients::table
            .find(client_id)
            .first::<ClientRow>(&mut *self.conn()?)
            .optional()
            .map_err(db_err)?;
        row.map(row_to_client).transpose()
    }

    fn create_client(&self, c: &Client) -> StoreResult<()> {
        use clients::dsl as t;
        diesel::insert_into(clients::table)
            .values((
                t::client_id.eq(&c.client_id),
                t::name.eq(&c.name),
                t::secret_hash.eq(&c.secret_hash),
                t::auth_method.eq(c.auth_method.as_str()),
                t::redirect_uris.eq(to_json(&c.redirect_uris)),
                t::post_logout_redirect_uris.eq(to_json(&c.post_logout_redirect_uris)),
                t::grant_types.eq(to_json(&c.grant_types)),
                t::scopes.eq(to_json(&c.scopes)),
                t::resources.eq(to_json(&c.resources)),
                t::skip_consent.eq(c.skip_consent),
                t::created_at.eq(c.created_at),
                t::required_role.eq(&c.required_role),
                t::allowed_origins.eq(to_json(&c.allowed_origins)),
            ))
            .execute(&mut *self.conn()?)
            .map_err(db_err)?;
        Ok(())
    }

    fn list_clients(&self) -> StoreResult<Vec<Client>> {
        clients::table
            .order(clients::client_id)
            .load::<ClientRow>(&mut *self.conn()?)
            .map_err(db_err)?
            .into_iter()
            .map(row_to_client)
            .collect()
    }

    fn delete_client(&self, client_id: &str) -> StoreResult<bool> {
        // Its grants go with it, so a client registered later under the same id inherits none.
        let mut conn = self.conn()?;
        conn.transaction(|c| {
            diesel::delete(refresh_tokens::table.filter(refresh_tokens::client_id.eq(client_id)))
                .execute(c)?;
            diesel::delete(consents::table.filter(consents::client_id.eq(client_id))).execute(c)?;
            diesel::delete(clients::table.find(client_id)).execute(c)
        })
        .map(|n| n > 0)
        .map_err(db_err)
    }

    fn set_client_secret(&self, client_id: &str, secret_hash: &str) -> StoreResult<bool> {
        let n = diesel::update(clients::table.find(client_id))
            .set(clients::secret_hash.eq(Some(secret_hash)))
            .execute(&mut *self.conn()?)
            .map_err(db_err)?;
        Ok(n > 0)
    }
}

impl RevocationStore for DbStore {
    fn revoke_jti(&self, jti: &str, expires_at: UnixTime) -> StoreResult<()> {
        let result = diesel::insert_into(revoked_tokens::table)
            .values((
                revoked_tokens::jti.eq(jti),
                revoked_tokens::expires_at.eq(expires_at),
            ))
            .execute(&mut *self.conn()?);
        match result.map_err(db_err) {
            Ok(_) | Err(StoreError::Conflict) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn is_jti_revoked(&self, jti: &str) -> StoreResult<bool> {
        let found = revoked_tokens::table
            .find(jti)
            .select(revoked_tokens::jti)
            .first::<String>(&mut *self.conn()?)
            .optional()
            .map_err(db_err)?;
        Ok(found.is_some())
    }
}

impl Maintenance for DbStore {
    fn ping(&self) -> StoreResult<()> {
        self.conn()?
            .ping()
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    fn purge_expired(&self, now: UnixTime, batch: i64) -> StoreResult<usize> {
        // Bounded batches keep each statement (and its locks) short.
        let mut conn = self.conn()?;
        let mut n = purge!(
            conn,
            revoked_tokens,
            jti,
            revoked_tokens::expires_at.lt(now - super::REVOCATION_SKEW_SECS),
            batch
        );
        n += purge!(conn, sessions, id_hash, sessions::expires_at.lt(now), batch);
        n += self.purge_codes(&mut conn, now, batch)?;
        // A rotated token stays until its own expiry, so that its reuse is recognised, and while
        // the access token issued with it lives, so that ending its family can deny-list that.
        let refresh_cutoff = refresh_tokens::expires_at.lt(now).and(
            refresh_tokens::access_exp
                .is_null()
                .or(refresh_tokens::access_exp.lt(now)),
        );
        n += purge!(conn, refresh_tokens, token_hash, refresh_cutoff, batch);
        let window_cutoff = login_ip_failures::window_start.lt(now - IP_WINDOW_RETENTION_SECS);
        n += purge!(conn, login_ip_failures, ip, window_cutoff, batch);
        // A used upstream state is kept until its expiry, so a replay is recognised as one.
        let state_cutoff = upstream_logins::expires_at.lt(now);
        n += purge!(conn, upstream_logins, state_hash, state_cutoff, batch);
        let link_cutoff = pending_links::expires_at.lt(now);
        n += purge!(conn, pending_links, link_hash, link_cutoff, batch);
        let mfa_cutoff = pending_mfa::expires_at.lt(now);
        n += purge!(conn, pending_mfa, id_hash, mfa_cutoff, batch);
        let reset_cutoff = password_resets::expires_at.lt(now);
        n += purge!(conn, password_resets, token_hash, reset_cutoff, batch);
        Ok(n)
    }
}

/// The next `$3` codes past their retention in (expiry, hash) order after ($4, $5), and
/// whether each may go: its access token has expired (`tokens.access_token_ttl_secs` may exceed
/// the retention) and its refresh-token family, if any, has nothing live left. With a tail for
/// PostgreSQL's row locks.
macro_rules! scan_codes {
    ($tail:literal) => {
        concat!(
            "SELECT c.code_hash, c.expires_at, \
             CASE WHEN (c.access_exp IS NULL OR c.access_exp < $2) AND NOT EXISTS ( \
               SELECT 1 FROM refresh_tokens r \
               WHERE r.family_id = c.refresh_family AND NOT r.revoked AND r.expires_at >= $2) \
             THEN 1 ELSE 0 END AS purgeable \
             FROM authorization_codes c \
             WHERE c.expires_at < $1 AND c.expires_at >= $4 \
               AND (c.expires_at > $4 OR c.code_hash > $5) \
             ORDER BY c.expires_at, c.code_hash LIMIT $3",
            $tail
        )
    };
}

fixed_sql!(
    /// Codes for the purge to look at (see [`scan_codes`]).
    ScanCodes,
    scan_codes!("")
);

fixed_sql!(
    /// [`ScanCodes`] on PostgreSQL: locked, skipping rows a request holds.
    ScanCodesSkippingLocked,
    scan_codes!(" FOR UPDATE OF c SKIP LOCKED")
);

/// A scanned code (raw SQL results).
#[derive(diesel::QueryableByName)]
struct ScannedCode {
    #[diesel(sql_type = diesel::sql_types::Text)]
    code_hash: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    expires_at: i64,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    purgeable: i32,
}

/// Where a code scan starts from the beginning.
const CODE_SCAN_START: (i64, String) = (i64::MIN, String::new());

impl DbStore {
    /// Delete codes past their retention that nothing needs any more: until `batch` are
    /// deleted, the scan reaches the end, or [`CODE_SCANS_PER_RUN`] scans of `batch` codes were
    /// made. Codes are kept while what they issued may live, so that a replay or a logout can
    /// still revoke it: a day (CODE_RETENTION_SECS), and longer while the access token or the
    /// refresh-token family lives. Those kept rows stay in the expired range for as long as
    /// their family (30 days offline), so each run goes on from where the last stopped (per
    /// process) instead of walking all of them again; on SQLite that walk would hold the only
    /// connection.
    fn purge_codes(
        &self,
        conn: &mut AnyConnection,
        now: UnixTime,
        batch: i64,
    ) -> StoreResult<usize> {
        let mut deleted = 0;
        for _ in 0..CODE_SCANS_PER_RUN {
            let after = self
                .code_scan
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let (n, next) = scan_codes_once(conn, now, batch, &after)?;
            deleted += n;
            let wrapped = next == CODE_SCAN_START;
            *self
                .code_scan
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = next;
            // A full batch deleted: the caller's loop comes back for more.
            if wrapped || deleted >= usize::try_from(batch).unwrap_or(usize::MAX) {
                break;
            }
        }
        Ok(deleted)
    }
}

/// How many scans of `batch` codes one purge run may make (each its own transaction).
const CODE_SCANS_PER_RUN: usize = 50;

/// One scan of at most `batch` codes after `after`, deleting those that may go; how many it
/// deleted, and where the next scan starts (from the beginning after a short scan).
fn scan_codes_once(
    conn: &mut AnyConnection,
    now: UnixTime,
    batch: i64,
    after: &(i64, String),
) -> StoreResult<(usize, (i64, String))> {
    let binds = || {
        vec![
            Bind::BigInt(now - CODE_RETENTION_SECS),
            Bind::BigInt(now),
            Bind::BigInt(batch),
            Bind::BigInt(after.0),
            Bind::Text(&after.1),
        ]
    };
    conn.transaction(|c| -> QueryResult<(usize, (i64, String))> {
        // As in `purge!`: on PostgreSQL rows a request holds are skipped.
        let scanned = if matches!(c, AnyConnection::Postgresql(_)) {
            Prepared::<ScanCodesSkippingLocked>::fixed(binds()).load::<ScannedCode>(c)?
        } else {
            Prepared::<ScanCodes>::fixed(binds()).load::<ScannedCode>(c)?
        };
        let next = match scanned.last() {
            Some(last) if scanned.len() as i64 >= batch => {
                (last.expires_at, last.code_hash.clone())
            }
            _ => CODE_SCAN_START,
        };
        let codes: Vec<&str> = scanned
            .iter()
            .filter(|s| s.purgeable == 1)
            .map(|s| s.code_hash.as_str())
            .collect();
        if codes.is_empty() {
            return Ok((0, next));
        }
        let n = diesel::delete(
            authorization_codes::table.filter(authorization_codes::code_hash.eq_any(&codes)),
        )
        .execute(c)?;
        Ok((n, next))
    })
    .map_err(db_err)
}

/// How long a used or expired code row is kept, to recognise a replay (one day).
const CODE_RETENTION_SECS: i64 = 86_400;
/// Per-IP failure windows older than this are gone (the longest window config allows).
const IP_WINDOW_RETENTION_SECS: i64 = crate::config::MAX_IP_WINDOW_SECS as i64;

type UserRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    bool,
    i32,
    Option<i64>,
    i64,
    Option<String>,
    Option<String>,
);

fn row_to_user(r: UserRow) -> StoreResult<User> {
    Ok(User {
        id: r.0,
        username: r.1,
        email: r.2,
        name: r.3,
        phone_number: r.10,
        address: r.11,
        roles: serde_json::from_str(&r.4)
            .map_err(|e| StoreError::Database(format!("users.roles: {e}")))?,
        password_hash: r.5,
        locked: r.6,
        failed_logins: r.7,
        locked_until: r.8,
        created_at: r.9,
    })
}

/// Insert `u` (also used inside the federation transaction).
fn insert_user(c: &mut AnyConnection, u: &User) -> QueryResult<usize> {
    use users::dsl as t;
    diesel::insert_into(users::table)
        .values((
            t::id.eq(&u.id),
            t::username.eq(&u.username),
            t::email.eq(&u.email),
            t::name.eq(&u.name),
            t::phone_number.eq(&u.phone_number),
            t::address.eq(&u.address),
            t::roles.eq(to_json(&u.roles)),
            t::password_hash.eq(&u.password_hash),
            t::locked.eq(u.locked),
            t::failed_logins.eq(u.failed_logins),
            t::locked_until.eq(u.locked_until),
            t::created_at.eq(u.created_at),
        ))
        .execute(c)
}

impl UserStore for DbStore {
    fn create_user(&self, u: &User) -> StoreResult<()> {
        insert_user(&mut *self.conn()?, u).map_err(db_err)?;
        Ok(())
    }

    fn find_user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        users::table
            .filter(users::username.eq(username))
            .first::<UserRow>(&mut *self.conn()?)
            .optional()
            .map_err(db_err)?
            .map(row_to_user)
            .transpose()
    }

    fn find_user(&self, id: &str) -> StoreResult<Option<User>> {
        users::table
            .find(id)
            .first::<UserRow>(&mut *self.conn()?)
            .optional()
            .map_err(db_err)?
            .map(row_to_user)
            .transpose()
    }

    fn list_users(&self) -> StoreResult<Vec<User>> {
        users::table
            .order(users::username)
            .load::<UserRow>(&mut *self.conn()?)
            .map_err(db_err)?
            .into_iter()
            .map(row_to_user)
            .collect()
    }

    fn delete_user(&self, id: &str) -> StoreResult<bool> {
        let mut conn = self.conn()?;
        conn.transaction(|c| {
            // The user's row first, as every transaction takes it (then sessions, codes,
            // refresh tokens), so that one racing this waits instead of deadlocking.
            let deleted = diesel::delete(users::table.find(id)).execute(c)?;
            diesel::delete(sessions::table.filter(sessions::user_id.eq(id))).execute(c)?;
            diesel::delete(consents::table.filter(consents::user_id.eq(id))).execute(c)?;
            diesel::delete(user_identities::table.filter(user_identities::user_id.eq(id)))
                .execute(c)?;
            diesel::delete(pending_links::table.filter(pending_links::user_id.eq(id)))
                .execute(c)?;
            diesel::delete(user_totp::table.find(id)).execute(c)?;
            diesel::delete(recovery_codes::table.filter(recovery_codes::user_id.eq(id)))
                .execute(c)?;
            diesel::delete(pending_mfa::table.filter(pending_mfa::user_id.eq(id))).execute(c)?;
            diesel::delete(password_resets::table.filter(password_resets::user_id.eq(id)))
                .execute(c)?;
            diesel::delete(refresh_tokens::table.filter(refresh_tokens::user_id.eq(id)))
                .execute(c)?;
            Ok(deleted)
        })
        .map(|n| n > 0)
        .map_err(db_err)
    }

    fn set_password(&self, id: &str, hash: &str, now: UnixTime) -> StoreResult<bool> {
        self.conn()?
            .transaction(|c| reset::replace_password_in(c, id, hash, now))
            .map_err(db_err)
    }

    fn set_roles(&self, id: &str, roles: &[String]) -> StoreResult<bool> {
        diesel::update(users::table.find(id))
            .set(users::roles.eq(to_json(&roles)))
            .execute(&mut *self.conn()?)
            .map(|n| n > 0)
            .map_err(db_err)
    }

    fn set_locked(&self, id: &str, locked: bool) -> StoreResult<bool> {
        let target = users::table.find(id);
        let n = if locked {
            diesel::update(target)
                .set(users::locked.eq(true))
                .execute(&mut *self.conn()?)
        } else {
            diesel::update(target)
                .set((
                    users::locked.eq(false),
                    users::failed_logins.eq(0),
                    users::locked_until.eq(None::<i64>),
                ))
                .execute(&mut *self.conn()?)
        };
        n.map(|n| n > 0).map_err(db_err)
    }

    fn reserve_login(&self, id: &str, now: UnixTime, max: u32) -> StoreResult<bool> {
        let max = i32::try_from(max).unwrap_or(i32::MAX);
        let n = diesel::update(
            users::table
                .find(id)
                .filter(users::locked.eq(false))
                .filter(
                    users::locked_until
                        .is_null()
                        .or(users::locked_until.le(now)),
                )
                .filter(users::failed_logins.lt(max)),
        )
        .set(users::failed_logins.eq(users::failed_logins + 1))
        .execute(&mut *self.conn()?)
        .map_err(db_err)?;
        Ok(n == 1)
    }

    fn finish_login(
        &self,
        id: &str,
        ok: bool,
        now: UnixTime,
        max: u32,
        lockout_secs: u32,
    ) -> StoreResult<bool> {
        let mut conn = self.conn()?;
        if ok {
            let n = diesel::update(
                users::table
                    .find(id)
                    .filter(users::locked.eq(false))
                    .filter(
                        users::locked_until
                            .is_null()
                            .or(users::locked_until.le(now)),
                    ),
            )
            .set((
                users::failed_logins.eq(0),
                users::locked_until.eq(None::<i64>),
            ))
            .execute(&mut *conn)
            .map_err(db_err)?;
            return Ok(n == 1);
        }
        let max = i32::try_from(max).unwrap_or(i32::MAX);
        diesel::update(users::table.find(id).filter(users::failed_logins.ge(max)))
            .set((
                users::failed_logins.eq(0),
                users::locked_until.eq(Some(now + i64::from(lockout_secs))),
            ))
            .execute(&mut *conn)
            .map_err(db_err)?;
        Ok(false)
    }

    fn release_login(&self, id: &str, now: UnixTime) -> StoreResult<bool> {
        diesel::update(
            users::table
                .find(id)
                .filter(users::locked.eq(false))
                .filter(
                    users::locked_until
                        .is_null()
                        .or(users::locked_until.le(now)),
                )
                .filter(users::failed_logins.gt(0)),
        )
        .set(users::failed_logins.eq(users::failed_logins - 1))
        .execute(&mut *self.conn()?)
        .map(|n| n == 1)
        .map_err(db_err)
    }

    fn reserve_ip(&self, ip: &str, now: UnixTime, window_secs: i64, max: i32) -> StoreResult<bool> {
        use login_ip_failures::dsl as t;
        let mut conn = self.conn()?;
        // A few rounds: another request (or replica) may start or fill the window between our
        // statements; only a full live window refuses the attempt.
        for _ in 0..4 {
            let n = diesel::update(
                t::login_ip_failures
                    .find(ip)
                    .filter(t::window_start.gt(now - window_secs))
                    .filter(t::failures.lt(max)),
            )
            .set(t::failures.eq(t::failures + 1))
            .execute(&mut *conn)
            .map_err(db_err)?;
            if n == 1 {
                return Ok(true);
            }
            let live = t::login_ip_failures
                .find(ip)
                .filter(t::window_start.gt(now - window_secs))
                .select(t::failures)
                .first::<i32>(&mut *conn)
                .optional()
                .map_err(db_err)?;
            match live {
                Some(failures) if failures >= max => return Ok(false),
                // Started by a concurrent attempt after our UPDATE looked: count this one there.
                Some(_) => continue,
                None => {}
            }
            // No window, or a stale one: start a new window with this attempt. Only a stale
            // row is removed: one a concurrent attempt just started stays, and the insert
            // then conflicts with it.
            let started = conn.transaction(|c| {
                diesel::delete(
                    t::login_ip_failures
                        .find(ip)
                        .filter(t::window_start.le(now - window_secs)),
                )
                .execute(c)?;
                diesel::insert_into(t::login_ip_failures)
                    .values((t::ip.eq(ip), t::window_start.eq(now), t::failures.eq(1)))
                    .execute(c)
            });
            match started.map_err(db_err) {
                Ok(_) => return Ok(true),
                // Another attempt started it at the same moment: count this one there.
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        // Still contended after several rounds: refuse rather than count nowhere.
        Ok(false)
    }

    fn release_ip(&self, ip: &str) -> StoreResult<()> {
        use login_ip_failures::dsl as t;
        diesel::update(t::login_ip_failures.find(ip).filter(t::failures.gt(0)))
            .set(t::failures.eq(t::failures - 1))
            .execute(&mut *self.conn()?)
            .map(|_| ())
            .map_err(db_err)
    }
}

impl SessionStore for DbStore {
    fn create_session(
        &self,
        id_hash: &str,
        s: &Session,
        now: UnixTime,
        password: Option<&str>,
        replaces: Option<&str>,
    ) -> StoreResult<bool> {
        let row = (
            sessions::id_hash.eq(id_hash),
            sessions::user_id.eq(&s.user_id),
            sessions::auth_time.eq(s.auth_time),
            sessions::amr.eq(to_json(&s.amr)),
            sessions::last_seen.eq(now),
            sessions::expires_at.eq(s.expires_at),
        );
        let mut conn = self.conn()?;
        // One transaction: a failure half-way leaves the old session with its tokens.
        conn.transaction(|c| {
            if let Some(verified) = password {
                if !hold_password_in(c, &s.user_id, verified)? {
                    return Ok(false);
                }
            }
            if !s.amr.iter().any(|m| m == "otp") {
                // Under a hold on the user's row (the password's, or this one): a second factor
                // turned on since the sign-in was checked (its confirmation holds the row too)
                // admits no session without a code, whatever the first factor.
                if password.is_none() {
                    hold_user_in(c, &s.user_id)?;
                }
                if totp_confirmed_in(c, &s.user_id)? {
                    return Ok(false);
                }
            }
            diesel::insert_into(sessions::table)
                .values(row)
                .execute(c)?;
            let Some(old) = replaces else {
                return Ok(true);
            };
            let owner: Option<String> = sessions::table
                .find(old)
                .select(sessions::user_id)
                .first(c)
                .optional()?;
            if owner.as_deref() == Some(s.user_id.as_str()) {
                // The session row before its tokens, as everywhere.
                diesel::delete(sessions::table.find(old)).execute(c)?;
                move_session_families_in(c, old, id_hash)?;
            } else {
                end_session_in(c, old, now)?;
            }
            Ok(true)
        })
        .map_err(db_err)
    }

    fn find_session(
        &self,
        id_hash: &str,
        now: UnixTime,
        idle_secs: i64,
    ) -> StoreResult<Option<Session>> {
        let mut conn = self.conn()?;
        let row = sessions::table
            .find(id_hash)
            .filter(sessions::expires_at.gt(now))
            .filter(sessions::last_seen.gt(now - idle_secs))
            .select((
                sessions::user_id,
                sessions::auth_time,
                sessions::amr,
                sessions::expires_at,
                sessions::last_seen,
            ))
            .first::<(String, i64, String, i64, i64)>(&mut *conn)
            .optional()
            .map_err(db_err)?;
        let Some((user_id, auth_time, amr, expires_at, last_seen)) = row else {
            return Ok(None);
        };
        // Touch at most once a minute: idle expiry needs no finer clock, and reads stay reads.
        if now - last_seen >= 60 {
            diesel::update(sessions::table.find(id_hash))
                .set(sessions::last_seen.eq(now))
                .execute(&mut *conn)
                .map_err(db_err)?;
        }
        Ok(Some(Session {
            user_id,
            auth_time,
            amr: from_json("sessions.amr", &amr)?,
            expires_at,
        }))
    }

    fn session_owner(&self, id_hash: &str) -> StoreResult<Option<(String, UnixTime)>> {
        sessions::table
            .find(id_hash)
            .select((sessions::user_id, sessions::auth_time))
            .first(&mut *self.conn()?)
            .optional()
            .map_err(db_err)
    }

    fn delete_user_sessions(
        &self,
        user_id: &str,
        keep: Option<&str>,
        now: UnixTime,
    ) -> StoreResult<usize> {
        let hashes: Vec<String> = sessions::table
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::id_hash.ne(keep.unwrap_or("")))
            .select(sessions::id_hash)
            .load(&mut *self.conn()?)
            .map_err(db_err)?;
        for hash in &hashes {
            self.end_session(hash, now)?;
        }
        Ok(hashes.len())
    }
}

type CodeRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<String>,
);

impl CodeStore for DbStore {
    fn save_code(&self, c: &CodeRecord) -> StoreResult<bool> {
        use authorization_codes::dsl as t;
        let mut conn = self.conn()?;
        conn.transaction(|conn| {
            // The session row, held: a logout, a password change or a new sign-in deletes it
            // before spending the session's codes, so it either waits for this code (then
            // spends it) or has already ended the session (then no code is written). Without
            // it, a code from a session read before the end landed after it and lived on.
            let held = diesel::update(sessions::table.find(&c.session_hash))
                .set(sessions::id_hash.eq(sessions::id_hash))
                .execute(conn)?;
            if held == 0 {
                return Ok(false);
            }
            diesel::insert_into(authorization_codes::table)
                .values((
                    t::code_hash.eq(&c.code_hash),
                    t::client_id.eq(&c.client_id),
                    t::redirect_uri.eq(&c.redirect_uri),
                    t::user_id.eq(&c.user_id),
                    t::session_hash.eq(&c.session_hash),
                    t::scope.eq(&c.scope),
                    t::nonce.eq(&c.nonce),
                    t::code_challenge.eq(&c.code_challenge),
                    t::auth_time.eq(c.auth_time),
                    t::amr.eq(to_json(&c.amr)),
                    t::expires_at.eq(c.expires_at),
                ))
                .execute(conn)?;
            Ok(true)
        })
        .map_err(db_err)
    }

    fn find_code(&self, code_hash: &str) -> StoreResult<Option<CodeRecord>> {
        let row = authorization_codes::table
            .find(code_hash)
            .first::<CodeRow>(&mut *self.conn()?)
            .optional()
            .map_err(db_err)?;
        row.map(|r| {
            Ok(CodeRecord {
                code_hash: r.0,
                client_id: r.1,
                redirect_uri: r.2,
                user_id: r.3,
                session_hash: r.4,
                scope: r.5,
                nonce: r.6,
                code_challenge: r.7,
                auth_time: r.8,
                amr: from_json("authorization_codes.amr", &r.9)?,
                expires_at: r.10,
                consumed_at: r.11,
                access_jti: r.12,
                access_exp: r.13,
                refresh_family: r.14,
            })
        })
        .transpose()
    }

    fn consume_code(
        &self,
        code_hash: &str,
        now: UnixTime,
        jti: &str,
        jti_exp: UnixTime,
        refresh: Option<&RefreshRecord>,
    ) -> StoreResult<bool> {
        use authorization_codes::dsl as t;
        let mut conn = self.conn()?;
        conn.transaction(|c| {
            // One statement: of N concurrent redemptions exactly one updates the row.
            let n = diesel::update(
                authorization_codes::table
                    .find(code_hash)
                    .filter(t::consumed_at.is_null()),
            )
            .set((
                t::consumed_at.eq(Some(now)),
                t::access_jti.eq(Some(jti)),
                t::access_exp.eq(Some(jti_exp)),
                t::refresh_family.eq(refresh.map(|r| r.family_id.as_str())),
            ))
            .execute(c)?;
            if n == 1 {
                if let Some(r) = refresh {
                    // The code's session as of now: a sign-in again in the same browser may have
                    // moved it since the code was read, and the family belongs where it went.
                    let session_hash: String = authorization_codes::table
                        .find(code_hash)
                        .select(t::session_hash)
                        .first(c)?;
                    insert_refresh(
                        c,
                        &RefreshRecord {
                            session_hash,
                            ..r.clone()
                        },
                    )?;
                }
            }
            Ok(n == 1)
        })
        .map_err(db_err)
    }
}

fn insert_refresh(c: &mut AnyConnection, r: &RefreshRecord) -> QueryResult<usize> {
    use refresh_tokens::dsl as t;
    diesel::insert_into(refresh_tokens::table)
        .values((
            t::token_hash.eq(&r.token_hash),
            t::family_id.eq(&r.family_id),
            t::client_id.eq(&r.client_id),
            t::user_id.eq(&r.user_id),
            t::session_hash.eq(&r.session_hash),
            t::scope.eq(&r.scope),
            t::offline.eq(r.offline),
            t::auth_time.eq(r.auth_time),
            t::amr.eq(to_json(&r.amr)),
            t::issued_at.eq(r.issued_at),
            t::expires_at.eq(r.expires_at),
            t::used_at.eq(r.used_at),
            t::revoked.eq(r.revoked),
            t::access_jti.eq(&r.access_jti),
            t::access_exp.eq(r.access_exp),
        ))
        .execute(c)
}

fixed_sql!(
    /// Deny-list the unexpired access tokens of a family's refresh tokens.
    RevokeFamilyAccess,
    "INSERT INTO revoked_tokens (jti, expires_at) \
     SELECT access_jti, access_exp FROM refresh_tokens \
     WHERE family_id = $1 AND access_jti IS NOT NULL AND access_exp > $2 \
     ON CONFLICT (jti) DO NOTHING"
);

/// Revoke a family's tokens and the live access tokens issued from it (inside a transaction).
fn revoke_family_in(c: &mut AnyConnection, family_id: &str, now: UnixTime) -> QueryResult<()> {
    // On PostgreSQL a rotation committing meanwhile can add a token this UPDATE's snapshot does
    // not see (it waits on the old row, then re-checks only that row). Repeat until nothing is
    // left: revoked tokens cannot rotate, so each round can add at most what was in flight.
    for _ in 0..16 {
        let n = diesel::update(
            refresh_tokens::table
                .filter(refresh_tokens::family_id.eq(family_id))
                .filter(refresh_tokens::revoked.eq(false)),
        )
        .set(refresh_tokens::revoked.eq(true))
        .execute(c)?;
        if n == 0 {
            break;
        }
    }
    // One statement both databases accept (numbered parameters, ON CONFLICT DO NOTHING), so
    // that two replicas revoking the same family at once do not fail each other.
    Prepared::<RevokeFamilyAccess>::fixed(vec![Bind::Text(family_id), Bind::BigInt(now)])
        .execute(c)?;
    Ok(())
}

/// A refresh-token row read by name (raw SQL results).
#[derive(diesel::QueryableByName)]
#[diesel(table_name = refresh_tokens)]
struct RefreshByName {
    token_hash: String,
    family_id: String,
    client_id: String,
    user_id: String,
    session_hash: String,
    scope: String,
    offline: bool,
    auth_time: i64,
    amr: String,
    issued_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
    revoked: bool,
    access_jti: Option<String>,
    access_exp: Option<i64>,
}

/// A user row read by name.
#[derive(diesel::QueryableByName)]
#[diesel(table_name = users)]
struct UserByName {
    id: String,
    username: String,
    email: Option<String>,
    name: Option<String>,
    roles: String,
    password_hash: Option<String>,
    locked: bool,
    failed_logins: i32,
    locked_until: Option<i64>,
    created_at: i64,
    phone_number: Option<String>,
    address: Option<String>,
}

#[derive(diesel::QueryableByName)]
struct RotatedByName {
    #[diesel(embed)]
    token: RefreshByName,
    #[diesel(embed)]
    user: UserByName,
}

fn refresh_from_row(r: RefreshRow) -> StoreResult<RefreshRecord> {
    Ok(RefreshRecord {
        token_hash: r.0,
        family_id: r.1,
        client_id: r.2,
        user_id: r.3,
        session_hash: r.4,
        scope: r.5,
        offline: r.6,
        auth_time: r.7,
        amr: from_json("refresh_tokens.amr", &r.8)?,
        issued_at: r.9,
        expires_at: r.10,
        used_at: r.11,
        revoked: r.12,
        access_jti: r.13,
        access_exp: r.14,
    })
}

impl RotatedByName {
    fn into_grant(self) -> StoreResult<(RefreshRecord, User)> {
        let (t, u) = (self.token, self.user);
        let token = refresh_from_row((
            t.token_hash,
            t.family_id,
            t.client_id,
            t.user_id,
            t.session_hash,
            t.scope,
            t.offline,
            t.auth_time,
            t.amr,
            t.issued_at,
            t.expires_at,
            t.used_at,
            t.revoked,
            t.access_jti,
            t.access_exp,
        ))?;
        let user = row_to_user((
            u.id,
            u.username,
            u.email,
            u.name,
            u.roles,
            u.password_hash,
            u.locked,
            u.failed_logins,
            u.locked_until,
            u.created_at,
            u.phone_number,
            u.address,
        ))?;
        Ok((token, user))
    }
}

fixed_sql!(
    /// The refresh rotation on PostgreSQL (see [`rotate_pg`]).
    RotatePg,
    "WITH old AS ( \
       UPDATE refresh_tokens r SET used_at = $2, replaced_by = $4 \
       WHERE r.token_hash = $1 AND r.client_id = $3 AND r.used_at IS NULL \
         AND NOT r.revoked AND r.expires_at > $2 \
         AND EXISTS (SELECT 1 FROM users u WHERE u.id = r.user_id AND NOT u.locked) \
       RETURNING r.token_hash, r.family_id, r.client_id, r.user_id, r.session_hash, \
         r.scope, r.offline, r.auth_time, r.amr, r.issued_at, r.expires_at, r.used_at, \
         r.revoked, r.access_jti, r.access_exp), \
     ins AS ( \
       INSERT INTO refresh_tokens (token_hash, family_id, client_id, user_id, session_hash, \
         scope, offline, auth_time, amr, issued_at, expires_at, used_at, revoked, \
         access_jti, access_exp) \
       SELECT $4, family_id, client_id, user_id, session_hash, scope, offline, auth_time, \
         amr, $5, CASE WHEN offline THEN $6 ELSE LEAST($6, auth_time + $9) END, NULL, \
         false, $7, $8 FROM old) \
     SELECT old.*, u.id, u.username, u.email, u.name, u.roles, u.password_hash, u.locked, \
       u.failed_logins, u.locked_until, u.created_at, u.phone_number, u.address \
     FROM old JOIN users u ON u.id = old.user_id"
);

/// PostgreSQL's rotation in one statement (one round trip): mark the token used if it is
/// current, insert the next one of its family from the same row, return the grant and the user.
/// The columns are named (no `r.*` or `u.*`): the statement is prepared once per connection, and
/// PostgreSQL refuses a kept statement whose result columns a later migration would change.
/// The UPDATE's row lock serialises concurrent rotations; each re-checks `used_at IS NULL` and
/// only the winner's INSERT and SELECT see a row.
fn rotate_pg(
    c: &mut diesel::PgConnection,
    old_hash: &str,
    client_id: &str,
    now: UnixTime,
    next: &NextRefresh,
) -> QueryResult<Option<RotatedByName>> {
    Prepared::<RotatePg>::fixed(vec![
        Bind::Text(old_hash),
        Bind::BigInt(now),
        Bind::Text(client_id),
        Bind::Text(&next.token_hash),
        Bind::BigInt(next.issued_at),
        Bind::BigInt(next.expires_at),
        Bind::Text(&next.access_jti),
        Bind::BigInt(next.access_exp),
        Bind::BigInt(next.online_lifetime_secs),
    ])
    .get_result::<RotatedByName>(c)
    .optional()
}

/// The columns of [`RefreshRow`], in its order.
type RefreshColumns = (
    refresh_tokens::token_hash,
    refresh_tokens::family_id,
    refresh_tokens::client_id,
    refresh_tokens::user_id,
    refresh_tokens::session_hash,
    refresh_tokens::scope,
    refresh_tokens::offline,
    refresh_tokens::auth_time,
    refresh_tokens::amr,
    refresh_tokens::issued_at,
    refresh_tokens::expires_at,
    refresh_tokens::used_at,
    refresh_tokens::revoked,
    refresh_tokens::access_jti,
    refresh_tokens::access_exp,
);
const REFRESH_COLUMNS: RefreshColumns = (
    refresh_tokens::token_hash,
    refresh_tokens::family_id,
    refresh_tokens::client_id,
    refresh_tokens::user_id,
    refresh_tokens::session_hash,
    refresh_tokens::scope,
    refresh_tokens::offline,
    refresh_tokens::auth_time,
    refresh_tokens::amr,
    refresh_tokens::issued_at,
    refresh_tokens::expires_at,
    refresh_tokens::used_at,
    refresh_tokens::revoked,
    refresh_tokens::access_jti,
    refresh_tokens::access_exp,
);

/// Store `next` as the following token of `row`'s family, inheriting its grant.
fn insert_successor(
    c: &mut AnyConnection,
    row: &RefreshRow,
    next: &NextRefresh,
) -> QueryResult<()> {
    use refresh_tokens::dsl as t;
    diesel::insert_into(refresh_tokens::table)
        .values((
            t::token_hash.eq(&next.token_hash),
            t::family_id.eq(&row.1),
            t::client_id.eq(&row.2),
            t::user_id.eq(&row.3),
            t::session_hash.eq(&row.4),
            t::scope.eq(&row.5),
            t::offline.eq(row.6),
            t::auth_time.eq(row.7),
            t::amr.eq(&row.8),
            t::issued_at.eq(next.issued_at),
            t::expires_at.eq(if row.6 {
                next.expires_at
            } else {
                next.expires_at.min(row.7 + next.online_lifetime_secs)
            }),
            t::used_at.eq(None::<i64>),
            t::revoked.eq(false),
            t::access_jti.eq(Some(&next.access_jti)),
            t::access_exp.eq(Some(next.access_exp)),
        ))
        .execute(c)?;
    Ok(())
}

type RefreshRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    bool,
    i64,
    String,
    i64,
    i64,
    Option<i64>,
    bool,
    Option<String>,
    Option<i64>,
);

impl RefreshStore for DbStore {
    fn find_refresh(&self, token_hash: &str) -> StoreResult<Option<(RefreshRecord, Option<User>)>> {
        let row = refresh_tokens::table
            .left_join(users::table.on(users::id.eq(refresh_tokens::user_id)))
            .filter(refresh_tokens::token_hash.eq(token_hash))
            .select((REFRESH_COLUMNS, users::all_columns.nullable()))
            .first::<(RefreshRow, Option<UserRow>)>(&mut *self.conn()?)
            .optional()
            .map_err(db_err)?;
        let Some((r, user)) = row else {
            return Ok(None);
        };
        let record = refresh_from_row(r)?;
        Ok(Some((record, user.map(row_to_user).transpose()?)))
    }

    fn rotate_refresh(
        &self,
        old_hash: &str,
        client_id: &str,
        now: UnixTime,
        next: &NextRefresh,
    ) -> StoreResult<Option<(RefreshRecord, User)>> {
        use refresh_tokens::dsl as t;
        let mut conn = self.conn()?;
        if let AnyConnection::Postgresql(pg) = &mut *conn {
            return rotate_pg(pg, old_hash, client_id, now, next)
                .map_err(db_err)?
                .map(RotatedByName::into_grant)
                .transpose();
        }
        // SQLite: the write lock taken by the UPDATE serialises concurrent rotations.
        let rotated = conn.transaction(|c| {
            let active_user = users::table
                .filter(users::id.eq(t::user_id))
                .filter(users::locked.eq(false));
            let n = diesel::update(
                refresh_tokens::table
                    .find(old_hash)
                    .filter(t::client_id.eq(client_id))
                    .filter(t::used_at.is_null())
                    .filter(t::revoked.eq(false))
                    .filter(t::expires_at.gt(now))
                    .filter(diesel::dsl::exists(active_user)),
            )
            .set((
                t::used_at.eq(Some(now)),
                t::replaced_by.eq(Some(&next.token_hash)),
            ))
            .execute(c)?;
            if n == 0 {
                return Ok(None);
            }
            let (row, user) = refresh_tokens::table
                .inner_join(users::table.on(users::id.eq(t::user_id)))
                .filter(t::token_hash.eq(old_hash))
                .select((REFRESH_COLUMNS, users::all_columns))
                .first::<(RefreshRow, UserRow)>(c)?;
            insert_successor(c, &row, next)?;
            Ok(Some((row, user)))
        });
        match rotated.map_err(db_err)? {
            Some((row, user)) => Ok(Some((refresh_from_row(row)?, row_to_user(user)?))),
            None => Ok(None),
        }
    }

    fn rerotate_refresh(
        &self,
        old_hash: &str,
        client_id: &str,
        now: UnixTime,
        used_since: UnixTime,
        next: &NextRefresh,
    ) -> StoreResult<Option<(RefreshRecord, User)>> {
        use refresh_tokens::dsl as t;
        let mut conn = self.conn()?;
        let rotated = conn.transaction(|c| {
            use diesel::sql_types::{BigInt, Text};
            // Write first (so SQLite takes its write lock before reading anything), and lock one
            // row only, the successor: the point where concurrent retries, a use of the
            // successor and a revocation of the family are decided. Only a successor never used
            // is retired, so a second retry of the same rotation finds nothing: reuse.
            let retired = diesel::sql_query(
                "UPDATE refresh_tokens SET used_at = $1 \
                 WHERE used_at IS NULL AND NOT revoked AND token_hash = ( \
                   SELECT o.replaced_by FROM refresh_tokens o \
                   WHERE o.token_hash = $2 AND o.client_id = $3 AND o.used_at > $4 \
                     AND NOT o.revoked AND o.expires_at > $1 \
                     AND EXISTS (SELECT 1 FROM users u WHERE u.id = o.user_id AND NOT u.locked))",
            )
            .bind::<BigInt, _>(now)
            .bind::<Text, _>(old_hash)
            .bind::<Text, _>(client_id)
            .bind::<BigInt, _>(used_since)
            .execute(c)?;
            if retired == 0 {
                return Ok(None);
            }
            let (row, user, successor) = refresh_tokens::table
                .inner_join(users::table.on(users::id.eq(t::user_id)))
                .filter(t::token_hash.eq(old_hash))
                .select((REFRESH_COLUMNS, users::all_columns, t::replaced_by))
                .first::<(RefreshRow, UserRow, Option<String>)>(c)?;
            // The access token issued with the retired token goes with it.
            diesel::sql_query(
                "INSERT INTO revoked_tokens (jti, expires_at) \
                 SELECT access_jti, access_exp FROM refresh_tokens \
                 WHERE token_hash = $1 AND access_jti IS NOT NULL AND access_exp > $2 \
                 ON CONFLICT (jti) DO NOTHING",
            )
            .bind::<Text, _>(successor.unwrap_or_default())
            .bind::<BigInt, _>(now)
            .execute(c)?;
            insert_successor(c, &row, next)?;
            Ok(Some((row, user)))
        });
        match rotated.map_err(db_err)? {
            Some((row, user)) => Ok(Some((refresh_from_row(row)?, row_to_user(user)?))),
            None => Ok(None),
        }
    }

    fn revoke_family(&self, family_id: &str, now: UnixTime) -> StoreResult<()> {
        let mut conn = self.conn()?;
        conn.transaction(|c| revoke_family_in(c, family_id, now))
            .map_err(db_err)
    }

    fn end_session(&self, session_hash: &str, now: UnixTime) -> StoreResult<usize> {
        let mut conn = self.conn()?;
        conn.transaction(|c| end_session_in(c, session_hash, now))
            .map_err(db_err)
    }
}

/// Whether `user_id` has a confirmed second factor.
fn totp_confirmed_in(c: &mut AnyConnection, user_id: &str) -> QueryResult<bool> {
    Ok(user_totp::table
        .find(user_id)
        .select(user_totp::confirmed)
        .first::<bool>(c)
        .optional()?
        == Some(true))
}

/// Hold `user_id`'s row for the rest of the transaction (a no-op UPDATE: the row lock on
/// PostgreSQL, the write lock on SQLite); whether the user exists.
pub(super) fn hold_user_in(c: &mut AnyConnection, user_id: &str) -> QueryResult<bool> {
    let held = diesel::update(users::table.find(user_id))
        .set(users::id.eq(users::id))
        .execute(c)?;
    Ok(held == 1)
}

/// Whether `user_id`'s password is still `verified` (the hash a sign-in just checked); if so,
/// a no-op UPDATE holds the user's row (PostgreSQL) or the write lock (SQLite) until the
/// caller's transaction commits. A password reset's UPDATE then either waits for what the
/// caller writes, and its DELETEs see it, or commits first, and this finds the hash changed.
pub(super) fn hold_password_in(
    c: &mut AnyConnection,
    user_id: &str,
    verified: &str,
) -> QueryResult<bool> {
    let held = diesel::update(
        users::table
            .find(user_id)
            .filter(users::password_hash.eq(verified)),
    )
    .set(users::id.eq(users::id))
    .execute(c)?;
    Ok(held == 1)
}

/// End a session: revoke the families issued in it without `offline_access`, spend its
/// unredeemed codes, delete its row; how many families.
fn end_session_in(c: &mut AnyConnection, session_hash: &str, now: UnixTime) -> QueryResult<usize> {
    // Rows in the order every transaction takes them (users, sessions, codes, refresh tokens),
    // so that a password reset running at the same time waits instead of deadlocking.
    diesel::delete(sessions::table.find(session_hash)).execute(c)?;
    // A code issued in the session and not yet redeemed would start a family after it. Spent
    // before the families are listed: the UPDATE waits for a redemption in flight, and the
    // listing (a new snapshot under READ COMMITTED) includes the family it started.
    diesel::update(
        authorization_codes::table
            .filter(authorization_codes::session_hash.eq(session_hash))
            .filter(authorization_codes::consumed_at.is_null()),
    )
    .set(authorization_codes::consumed_at.eq(Some(now)))
    .execute(c)?;
    let families: Vec<String> = refresh_tokens::table
        .filter(refresh_tokens::session_hash.eq(session_hash))
        .filter(refresh_tokens::offline.eq(false))
        .filter(refresh_tokens::revoked.eq(false))
        .select(refresh_tokens::family_id)
        .distinct()
        .load(c)?;
    for f in &families {
        revoke_family_in(c, f, now)?;
    }
    Prepared::<RevokeSessionCodeAccess>::fixed(vec![Bind::Text(session_hash), Bind::BigInt(now)])
        .execute(c)?;
    Ok(families.len())
}

fixed_sql!(
    /// Deny-list the live access tokens that codes of a session issued without a refresh token
    /// (a client without the refresh grant): no family reaches them. Those of families are
    /// revoked with their family, or survive with an offline one.
    RevokeSessionCodeAccess,
    "INSERT INTO revoked_tokens (jti, expires_at) \
     SELECT access_jti, access_exp FROM authorization_codes \
     WHERE session_hash = $1 AND refresh_family IS NULL \
     AND access_jti IS NOT NULL AND access_exp > $2 \
     ON CONFLICT (jti) DO NOTHING"
);

/// The same person signed in again in the same browser: the families and unredeemed codes of
/// the old session belong to the new one (so that its logout ends them).
fn move_session_families_in(
    c: &mut AnyConnection,
    old_hash: &str,
    new_hash: &str,
) -> QueryResult<()> {
    // Codes follow too: those not yet redeemed, so the families they start belong to the
    // session that is signed in; redeemed ones, so that a logout still deny-lists the access
    // tokens they issued without a family.
    diesel::update(
        authorization_codes::table.filter(authorization_codes::session_hash.eq(old_hash)),
    )
    .set(authorization_codes::session_hash.eq(new_hash))
    .execute(c)?;
    // As in `revoke_family_in`: a rotation committing while this waits adds a token its
    // snapshot does not see; repeat until none is left behind.
    for _ in 0..16 {
        let moved =
            diesel::update(refresh_tokens::table.filter(refresh_tokens::session_hash.eq(old_hash)))
                .set(refresh_tokens::session_hash.eq(new_hash))
                .execute(c)?;
        if moved == 0 {
            break;
        }
    }
    Ok(())
}

impl ConsentStore for DbStore {
    fn granted_scopes(&self, user_id: &str, client_id: &str) -> StoreResult<Option<Vec<String>>> {
        let scope = consents::table
            .find((user_id, client_id))
            .select(consents::scope)
            .first::<String>(&mut *self.conn()?)
            .optional()
            .map_err(db_err)?;
        Ok(scope.map(|s| {
            s.split(' ')
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect()
        }))
    }

    fn save_consent(
        &self,
        user_id: &str,
        client_id: &str,
        scopes: &[String],
        now: UnixTime,
    ) -> StoreResult<()> {
        let mut conn = self.conn()?;
        let scope = scopes.join(" ");
        let update = |c: &mut AnyConnection| {
            diesel::update(consents::table.find((user_id, client_id)))
                .set((consents::scope.eq(&scope), consents::granted_at.eq(now)))
                .execute(c)
        };
        // An upsert both databases understand: update, else insert; if a concurrent request
        // inserted first, update its row.
        if update(&mut conn).map_err(db_err)? > 0 {
            return Ok(());
        }
        let inserted = diesel::insert_into(consents::table)
            .values((
                consents::user_id.eq(user_id),
                consents::client_id.eq(client_id),
                consents::scope.eq(&scope),
                consents::granted_at.eq(now),
            ))
            .execute(&mut *conn)
            .map_err(db_err);
        match inserted {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict) => update(&mut conn).map(|_| ()).map_err(db_err),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_removes_only_expired_rows_in_bounded_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = DbStore::open_single(DatabaseUrl::Sqlite(dir.path().join("t.db")));
        store.migrate().unwrap();
        for (jti, exp) in [
            ("a", 10),
            ("b", 20),
            ("c", 30),
            ("skew", 90),
            ("live", 1_000),
        ] {
            store.revoke_jti(jti, exp).unwrap();
        }
        assert_eq!(store.purge_expired(100, 2).unwrap(), 2);
        assert_eq!(store.purge_expired(100, 2).unwrap(), 1);
        assert_eq!(store.purge_expired(100, 2).unwrap(), 0);
        assert!(store.is_jti_revoked("live").unwrap());
        assert!(!store.is_jti_revoked("a").unwrap());
        // Expired 10 s ago: a replica whose clock is behind may still accept the token.
        assert!(store.is_jti_revoked("skew").unwrap());
        assert_eq!(
            store
                .purge_expired(90 + crate::store::REVOCATION_SKEW_SECS + 1, 2)
                .unwrap(),
            1
        );
        assert!(!store.is_jti_revoked("skew").unwrap());
    }

    fn refresh(hash: &str, family: &str, session: &str, offline: bool, jti: &str) -> RefreshRecord {
        RefreshRecord {
            token_hash: hash.into(),
            family_id: family.into(),
            client_id: "c".into(),
            user_id: "u".into(),
            session_hash: session.into(),
            scope: "openid".into(),
            offline,
            auth_time: 1,
            amr: vec!["pwd".into()],
            issued_at: 10,
            expires_at: 1_000,
            used_at: None,
            revoked: false,
            access_jti: Some(jti.into()),
            access_exp: Some(600),
        }
    }

    fn next(hash: &str, jti: &str) -> NextRefresh {
        NextRefresh {
            token_hash: hash.into(),
            issued_at: 20,
            expires_at: 1_000,
            online_lifetime_secs: 500,
            access_jti: jti.into(),
            access_exp: 600,
        }
    }

    fn user(id: &str) -> User {
        User {
            id: id.into(),
            username: id.into(),
            email: None,
            name: None,
            phone_number: None,
            address: None,
            roles: vec![],
            password_hash: None,
            locked: false,
            failed_logins: 0,
            locked_until: None,
            created_at: 1,
        }
    }

    /// Run `test` against a PostgreSQL database made for it (dropped afterwards, also when the
    /// test fails); skipped with a notice when there is no server, unless `REQUIRE_POSTGRES=1`.
    fn with_postgres(test: impl FnOnce(&str) + std::panic::UnwindSafe) {
        let admin = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let required = std::env::var("REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
        let mut a = match diesel::PgConnection::establish(&admin) {
            Ok(c) => c,
            Err(e) if required => panic!("REQUIRE_POSTGRES=1 but PostgreSQL is unreachable: {e}"),
            Err(e) => {
                eprintln!("NOTICE: PostgreSQL unit test skipped (no server at {admin}): {e}");
                return;
            }
        };
        let name = format!("portcullis_unit_{}", crate::crypto::opaque::random_id())
            .to_lowercase()
            .replace('-', "_");
        a.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
        let outcome = std::panic::catch_unwind(|| test(&url));
        a.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .unwrap();
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    /// Run `test` on a fresh, migrated SQLite store.
    fn on_sqlite(test: impl FnOnce(&DbStore)) {
        let dir = tempfile::tempdir().unwrap();
        let store = DbStore::open_single(DatabaseUrl::Sqlite(dir.path().join("t.db")));
        store.migrate().unwrap();
        test(&store);
    }

    /// Wait until a session of the database at `url` waits for a lock (the racer of a race
    /// test has run into the lock the test holds), for at most 20 s: a race test whose racer
    /// came late would run in order and prove nothing.
    fn wait_until_blocked(url: &str) {
        wait_until_waiting(url, 1);
    }

    /// Wait until `n` sessions of the database at `url` wait for a lock, for at most 20 s.
    fn wait_until_waiting(url: &str, n: i64) {
        let mut conn = diesel::PgConnection::establish(url).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let waiting: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                "(SELECT count(*) FROM pg_stat_activity \
                  WHERE datname = current_database() AND wait_event_type = 'Lock')",
            ))
            .get_result(&mut conn)
            .unwrap();
            if waiting >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the racer never waited for the lock"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Run `test` on a fresh, migrated PostgreSQL store (see [`with_postgres`]).
    fn on_postgres(test: impl FnOnce(&DbStore) + std::panic::UnwindSafe) {
        with_postgres(|url| {
            let store = DbStore::open_single(DatabaseUrl::Postgres(url.into()));
            store.migrate().unwrap();
            test(&store);
        });
    }

    /// An unredeemed code of user `u` in session `s`, expiring at 70.
    fn code(hash: &str) -> CodeRecord {
        CodeRecord {
            code_hash: hash.into(),
            client_id: "c".into(),
            redirect_uri: "https://app.example/cb".into(),
            user_id: "u".into(),
            session_hash: "s".into(),
            scope: "openid".into(),
            nonce: None,
            code_challenge: None,
            auth_time: 1,
            amr: vec!["pwd".into()],
            expires_at: 70,
            consumed_at: None,
            access_jti: None,
            access_exp: None,
            refresh_family: None,
        }
    }

    /// The second of two first sign-ins of one identity gets the first one's user, and knows
    /// it did not create it.
    fn a_second_first_sign_in_creates_nothing(store: &DbStore) {
        use crate::store::FederationStore;
        let first = store
            .create_federated_user(&user("g1"), "google", "sub-1", "https://issuer")
            .unwrap();
        assert!(first.created);
        let second = store
            .create_federated_user(&user("g2"), "google", "sub-1", "https://issuer")
            .unwrap();
        assert!(!second.created);
        assert_eq!(second.user.id, "g1");
        assert!(store.find_user("g2").unwrap().is_none());
    }

    #[test]
    fn a_second_first_sign_in_creates_nothing_on_sqlite() {
        on_sqlite(a_second_first_sign_in_creates_nothing);
    }

    #[test]
    fn a_second_first_sign_in_creates_nothing_on_postgres() {
        on_postgres(a_second_first_sign_in_creates_nothing);
    }

    /// A password sign-in checked before a second factor was turned on opens no session
    /// without a code once it is on; with the code it does.
    fn no_password_only_session_once_the_factor_is_on(store: &DbStore) {
        use crate::store::MfaStore;
        store
            .create_user(&User {
                password_hash: Some("pw".into()),
                ..user("u")
            })
            .unwrap();
        assert!(store.begin_totp("u", "begun", 10).unwrap());
        assert!(
            !store.confirm_totp("u", "other", "sealed", 1, &[]).unwrap(),
            "not the seed begun"
        );
        assert!(store.confirm_totp("u", "begun", "sealed", 1, &[]).unwrap());
        assert_eq!(
            store.find_totp("u").unwrap().unwrap().secret_sealed,
            "sealed"
        );
        let mut s = Session {
            user_id: "u".into(),
            auth_time: 20,
            amr: vec!["pwd".into()],
            expires_at: 50_000,
        };
        assert!(!store.create_session("p", &s, 20, Some("pw"), None).unwrap());
        // A linked identity's sign-in (no password) neither.
        s.amr = vec!["fed".into()];
        assert!(!store.create_session("p", &s, 20, None, None).unwrap());
        s.amr = vec!["pwd".into(), "otp".into()];
        assert!(store.create_session("p", &s, 20, Some("pw"), None).unwrap());
    }

    #[test]
    fn no_password_only_session_once_the_factor_is_on_on_sqlite() {
        on_sqlite(no_password_only_session_once_the_factor_is_on);
    }

    #[test]
    fn no_password_only_session_once_the_factor_is_on_on_postgres() {
        on_postgres(no_password_only_session_once_the_factor_is_on);
    }

    /// Session "s" of user "u", which `code()` names.
    fn open_session_s(store: &DbStore) {
        let s = Session {
            user_id: "u".into(),
            auth_time: 1,
            amr: vec!["pwd".into()],
            expires_at: 50_000,
        };
        assert!(store.create_session("s", &s, 1, None, None).unwrap());
    }

    /// A code is written only while its session lives: one issued from a session read before
    /// a logout or a password change, and written after it, is not written at all.
    fn no_code_outlives_its_session(store: &DbStore) {
        store.create_user(&user("u")).unwrap();
        open_session_s(store);
        store.end_session("s", 2).unwrap();
        assert!(!store.save_code(&code("after-logout")).unwrap());
        open_session_s(store);
        assert!(store.set_password("u", "new-hash", 3).unwrap());
        assert!(!store.save_code(&code("after-reset")).unwrap());
        for c in ["after-logout", "after-reset"] {
            assert!(store.find_code(c).unwrap().is_none(), "{c} was written");
        }
    }

    #[test]
    fn no_code_outlives_its_session_on_sqlite() {
        on_sqlite(no_code_outlives_its_session);
    }

    #[test]
    fn no_code_outlives_its_session_on_postgres() {
        on_postgres(no_code_outlives_its_session);
    }

    /// A logout that comes while a code is being written waits for it, then spends it: the
    /// code's transaction holds the session row (here it is held up at its INSERT by a test
    /// transaction writing the same code hash, then let go).
    #[test]
    fn a_logout_racing_a_code_being_written_spends_it_on_postgres() {
        with_postgres(|url| {
            let store = DbStore::open_single(DatabaseUrl::Postgres(url.into()));
            store.migrate().unwrap();
            store.create_user(&user("u")).unwrap();
            open_session_s(&store);
            let mut blocker = diesel::PgConnection::establish(url).unwrap();
            blocker
                .batch_execute(
                    "BEGIN; INSERT INTO authorization_codes (code_hash, client_id, redirect_uri, \
                     user_id, session_hash, scope, auth_time, amr, expires_at) VALUES ('k', 'c', \
                     'https://app.example/cb', 'u', 'other', 'openid', 1, '[]', 70)",
                )
                .unwrap();
            let writer = std::thread::spawn({
                let store = DbStore::open_single(DatabaseUrl::Postgres(url.into()));
                move || store.save_code(&code("k")).unwrap()
            });
            wait_until_waiting(url, 1);
            let logout = std::thread::spawn({
                let store = store.clone();
                move || store.end_session("s", 20).unwrap()
            });
            // The logout waits for the session row the code's transaction holds.
            wait_until_waiting(url, 2);
            blocker.batch_execute("ROLLBACK").unwrap();
            assert!(writer.join().unwrap(), "the code was written");
            logout.join().unwrap();
            assert!(
                !store.consume_code("k", 21, "j", 600, None).unwrap(),
                "the code outlived the logout"
            );
        });
    }

    /// New recovery codes are for the enrolment whose code was checked, and only while the
    /// session that asked lives: an operator's re-enrolment in between (which ends sessions)
    /// keeps its own codes.
    fn recovery_codes_are_replaced_only_for_the_checked_enrolment(store: &DbStore) {
        use crate::store::MfaStore;
        store.create_user(&user("u")).unwrap();
        open_session_s(store);
        store.enrol_totp("u", "seed-1", &["h1".into()], 1).unwrap();
        assert!(store
            .replace_recovery_codes("u", "seed-1", "s", &["h2".into()])
            .unwrap());
        assert!(
            !store.use_recovery_code("u", "h1", 5).unwrap(),
            "old set gone"
        );
        store.enrol_totp("u", "seed-2", &["h3".into()], 2).unwrap();
        assert!(
            !store
                .replace_recovery_codes("u", "seed-1", "s", &["h4".into()])
                .unwrap(),
            "checked against a seed since replaced"
        );
        assert!(
            store.use_recovery_code("u", "h3", 6).unwrap(),
            "the operator's codes stand"
        );
        store.end_session("s", 7).unwrap();
        assert!(
            !store
                .replace_recovery_codes("u", "seed-2", "s", &["h5".into()])
                .unwrap(),
            "the session ended"
        );
    }

    #[test]
    fn recovery_codes_are_replaced_only_for_the_checked_enrolment_on_sqlite() {
        on_sqlite(recovery_codes_are_replaced_only_for_the_checked_enrolment);
    }

    #[test]
    fn recovery_codes_are_replaced_only_for_the_checked_enrolment_on_postgres() {
        on_postgres(recovery_codes_are_replaced_only_for_the_checked_enrolment);
    }

    /// The code purge looks at `batch` codes a run and goes on from there: codes kept for a
    /// live family do not make every run walk all of them, and those behind them still go.
    fn the_code_purge_goes_on_where_it_stopped(store: &DbStore) {
        store.create_user(&user("u")).unwrap();
        open_session_s(store);
        // Codes whose families live, expiring first (more than one run scans at batch 2);
        // then one that nothing needs.
        let kept: Vec<String> = (0..2 * CODE_SCANS_PER_RUN + 1)
            .map(|i| format!("kept-{i:03}"))
            .collect();
        for hash in &kept {
            let hash = hash.as_str();
            let mut c = code(hash);
            c.expires_at = 60;
            assert!(store.save_code(&c).unwrap());
            let mut first = refresh(&format!("rt-{hash}"), hash, "s", true, hash);
            first.expires_at = 500_000;
            assert!(store
                .consume_code(hash, 50, hash, 600, Some(&first))
                .unwrap());
        }
        let mut gone = code("gone");
        gone.expires_at = 70;
        assert!(store.save_code(&gone).unwrap());
        let later = 70 + CODE_RETENTION_SECS + 1;
        store.purge_expired(later, 2).unwrap();
        assert!(
            store.find_code("gone").unwrap().is_some(),
            "the first run looked at 50 scans of two kept codes only"
        );
        store.purge_expired(later, 2).unwrap();
        assert!(
            store.find_code("gone").unwrap().is_none(),
            "the next run went on from there"
        );
        // Round again from the start: the kept ones stay.
        for _ in 0..3 {
            store.purge_expired(later, 2).unwrap();
        }
        for hash in &kept {
            assert!(store.find_code(hash).unwrap().is_some(), "{hash}");
        }
    }

    #[test]
    fn the_code_purge_goes_on_where_it_stopped_on_sqlite() {
        on_sqlite(the_code_purge_goes_on_where_it_stopped);
    }

    #[test]
    fn the_code_purge_goes_on_where_it_stopped_on_postgres() {
        on_postgres(the_code_purge_goes_on_where_it_stopped);
    }

    /// The purge skips rows a request holds instead of waiting for them (so it is never one
    /// side of a deadlock); what it skipped goes at its next run.
    #[test]
    fn the_purge_skips_rows_a_request_holds_on_postgres() {
        with_postgres(|url| {
            let store = DbStore::open_single(DatabaseUrl::Postgres(url.into()));
            store.migrate().unwrap();
            store.create_user(&user("u")).unwrap();
            open_session_s(&store);
            for hash in ["held", "free"] {
                let mut r = refresh(hash, "fam", "s", true, &format!("j-{hash}"));
                r.expires_at = 100;
                r.access_exp = Some(100);
                insert_refresh(&mut store.conn().unwrap(), &r).unwrap();
                assert!(store.save_code(&code(hash)).unwrap());
            }
            let later = 70 + CODE_RETENTION_SECS + 1;
            let mut request = diesel::PgConnection::establish(url).unwrap();
            request
                .batch_execute(
                    "BEGIN; \
                     SELECT 1 FROM refresh_tokens WHERE token_hash = 'held' FOR UPDATE; \
                     SELECT 1 FROM authorization_codes WHERE code_hash = 'held' FOR UPDATE",
                )
                .unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let purger = store.clone();
            std::thread::spawn(move || {
                let _ = tx.send(purger.purge_expired(later, 100));
            });
            rx.recv_timeout(Duration::from_secs(10))
                .expect("the purge waited for rows a request holds")
                .unwrap();
            assert!(store.find_refresh("held").unwrap().is_some());
            assert!(store.find_code("held").unwrap().is_some());
            assert!(store.find_refresh("free").unwrap().is_none());
            assert!(store.find_code("free").unwrap().is_none());
            request.batch_execute("COMMIT").unwrap();
            store.purge_expired(later, 100).unwrap();
            assert!(store.find_refresh("held").unwrap().is_none());
            assert!(store.find_code("held").unwrap().is_none());
        });
    }

    /// The lookups people's requests make by session and by user (a logout's codes, a password
    /// change's codes and refresh tokens) that must not scan a whole table.
    const REQUEST_LOOKUPS: [(&str, &str); 3] = [
        ("authorization_codes", "session_hash"),
        ("authorization_codes", "user_id"),
        ("refresh_tokens", "user_id"),
    ];

    #[derive(diesel::QueryableByName)]
    struct SqlitePlanLine {
        #[diesel(sql_type = diesel::sql_types::Text)]
        detail: String,
    }

    #[test]
    fn request_lookups_use_an_index_on_sqlite() {
        on_sqlite(|store| {
            let mut conn = store.conn().unwrap();
            for (table, column) in REQUEST_LOOKUPS {
                let plan: Vec<String> = diesel::sql_query(format!(
                    "EXPLAIN QUERY PLAN SELECT * FROM {table} WHERE {column} = 'x'"
                ))
                .load::<SqlitePlanLine>(&mut *conn)
                .unwrap()
                .into_iter()
                .map(|l| l.detail)
                .collect();
                assert!(
                    plan.iter().any(|l| l.contains("USING INDEX"))
                        && !plan.iter().any(|l| l.starts_with("SCAN")),
                    "{table}.{column}: {plan:?}"
                );
            }
        });
    }

    #[derive(diesel::QueryableByName)]
    struct PgPlanLine {
        #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
        line: String,
    }

    #[test]
    fn request_lookups_use_an_index_on_postgres() {
        with_postgres(|url| {
            let store = DbStore::open_single(DatabaseUrl::Postgres(url.into()));
            store.migrate().unwrap();
            let mut c = diesel::PgConnection::establish(url).unwrap();
            // The planner would scan a small table anyway; forbidding scans shows whether it
            // has anything else.
            c.batch_execute("SET enable_seqscan = off").unwrap();
            for (table, column) in REQUEST_LOOKUPS {
                let plan: Vec<String> = diesel::sql_query(format!(
                    "EXPLAIN SELECT * FROM {table} WHERE {column} = 'x'"
                ))
                .load::<PgPlanLine>(&mut c)
                .unwrap()
                .into_iter()
                .map(|l| l.line)
                .collect();
                assert!(
                    !plan.iter().any(|l| l.contains("Seq Scan")),
                    "{table}.{column}: {plan:?}"
                );
            }
        });
    }

    /// The purge keeps what a replay or a family's end still needs: a used code while its
    /// refresh family lives, a refresh row while the access token issued with it lives.
    fn purge_keeps_what_replays_and_revocation_need(store: &DbStore) {
        store.create_user(&user("u")).unwrap();
        open_session_s(store);
        // A code whose family lives until 200,000, and one that started no family.
        assert!(store.save_code(&code("with-family")).unwrap());
        let mut first = refresh("fam-1", "fam", "s", true, "fj");
        first.expires_at = 200_000;
        assert!(store
            .consume_code("with-family", 60, "fj", 600, Some(&first))
            .unwrap());
        assert!(store.save_code(&code("alone")).unwrap());
        assert!(store.consume_code("alone", 60, "aj", 600, None).unwrap());
        let day_later = 70 + CODE_RETENTION_SECS + 1;
        // An access token that lives longer than the retention (a TTL over a day).
        assert!(store.save_code(&code("long-lived")).unwrap());
        let long_exp = day_later + 5_000;
        assert!(store
            .consume_code("long-lived", 60, "lj", long_exp, None)
            .unwrap());
        store.purge_expired(day_later, 100).unwrap();
        assert!(
            store.find_code("alone").unwrap().is_none(),
            "nothing left to revoke"
        );
        assert!(
            store.find_code("long-lived").unwrap().is_some(),
            "its access token lives: a logout must still deny-list it"
        );
        store.end_session("s", day_later).unwrap();
        assert!(store.is_jti_revoked("lj").unwrap());
        store.purge_expired(long_exp + 1, 100).unwrap();
        assert!(store.find_code("long-lived").unwrap().is_none());
        assert!(
            store.find_code("with-family").unwrap().is_some(),
            "its family is live: a replay must still find it"
        );
        store.revoke_family("fam", day_later).unwrap();
        store.purge_expired(day_later + 1, 100).unwrap();
        assert!(
            store.find_code("with-family").unwrap().is_none(),
            "family over"
        );

        // An online refresh row whose access token outlives it (issued near the session's end).
        let mut late = refresh("late", "late-fam", "s9", false, "late-jti");
        late.expires_at = 1_000;
        late.access_exp = Some(1_500);
        insert_refresh(&mut store.conn().unwrap(), &late).unwrap();
        store.purge_expired(1_200, 100).unwrap();
        assert!(store.find_refresh("late").unwrap().is_some());
        store.end_session("s9", 1_200).unwrap();
        assert!(
            store.is_jti_revoked("late-jti").unwrap(),
            "logout still reaches it"
        );
        store.purge_expired(1_600, 100).unwrap();
        assert!(store.find_refresh("late").unwrap().is_none());
    }

    #[test]
    fn purge_keeps_what_replays_and_revocation_need_on_sqlite() {
        on_sqlite(purge_keeps_what_replays_and_revocation_need);
    }

    #[test]
    fn purge_keeps_what_replays_and_revocation_need_on_postgres() {
        on_postgres(purge_keeps_what_replays_and_revocation_need);
    }

    /// A session after a password opens only while that password is still the account's.
    fn sessions_open_only_under_the_verified_password(store: &DbStore) {
        store
            .create_user(&User {
                password_hash: Some("h1".into()),
                ..user("u")
            })
            .unwrap();
        let s = Session {
            user_id: "u".into(),
            auth_time: 10,
            amr: vec!["pwd".into()],
            expires_at: 1_000,
        };
        assert!(store
            .create_session("s1", &s, 10, Some("h1"), None)
            .unwrap());
        assert!(store.find_session("s1", 11, 100).unwrap().is_some());
        store.set_password("u", "h2", 12).unwrap();
        assert!(!store
            .create_session("s2", &s, 12, Some("h1"), None)
            .unwrap());
        assert!(store.find_session("s2", 13, 100).unwrap().is_none());
        assert!(store
            .create_session("s3", &s, 12, Some("h2"), None)
            .unwrap());
        // No password involved (an upstream sign-in): no check.
        assert!(store.create_session("s4", &s, 12, None, None).unwrap());
        let gone = Session {
            user_id: "nobody".into(),
            ..s
        };
        assert!(!store
            .create_session("s5", &gone, 12, Some("h2"), None)
            .unwrap());

        // A second-factor step after a password is recorded under the same condition.
        use crate::store::{MfaStore, PendingMfa};
        let pending = |id: &str| PendingMfa {
            id_hash: id.into(),
            user_id: "u".into(),
            first_factor: "pwd".into(),
            browser_hash: "b".into(),
            expires_at: 300,
        };
        assert!(!store.save_pending_mfa(&pending("p1"), Some("h1")).unwrap());
        assert!(store.find_pending_mfa("p1", 13).unwrap().is_none());
        assert!(store.save_pending_mfa(&pending("p2"), Some("h2")).unwrap());
        assert!(store.find_pending_mfa("p2", 13).unwrap().is_some());
        assert!(store.save_pending_mfa(&pending("p3"), None).unwrap());
    }

    /// Signing in again in the same browser: the old session's tokens follow the same person,
    /// end with someone else's session, and all of it happens in one transaction. `refuse_delete`
    /// makes deleting session `s3` fail (a trigger), to stop the swap at its last step.
    fn a_new_session_replaces_the_old_one_in_one_step(store: &DbStore, refuse_delete: &str) {
        store
            .create_user(&User {
                password_hash: Some("h1".into()),
                ..user("u")
            })
            .unwrap();
        store.create_user(&user("v")).unwrap();
        let of = |who: &str| Session {
            user_id: who.into(),
            auth_time: 10,
            amr: vec!["pwd".into()],
            expires_at: 1_000,
        };
        let session_of_code = |c: &str| store.find_code(c).unwrap().unwrap().session_hash;
        let refresh_row = |t: &str| store.find_refresh(t).unwrap().unwrap().0;
        assert!(store
            .create_session("s1", &of("u"), 10, None, None)
            .unwrap());
        assert!(store
            .save_code(&CodeRecord {
                session_hash: "s1".into(),
                ..code("c1")
            })
            .unwrap());
        insert_refresh(
            &mut store.conn().unwrap(),
            &refresh("r1", "f1", "s1", false, "j1"),
        )
        .unwrap();

        // The same person again: code and family move, the old session is gone.
        assert!(store
            .create_session("s2", &of("u"), 11, Some("h1"), Some("s1"))
            .unwrap());
        assert!(store.session_owner("s1").unwrap().is_none());
        assert_eq!(session_of_code("c1"), "s2");
        assert_eq!(refresh_row("r1").session_hash, "s2");
        assert!(!refresh_row("r1").revoked);

        // A password that is no longer the account's: nothing changes.
        assert!(!store
            .create_session("s9", &of("u"), 12, Some("stale"), Some("s2"))
            .unwrap());
        assert!(store.session_owner("s9").unwrap().is_none());
        assert_eq!(store.session_owner("s2").unwrap().unwrap().0, "u");
        assert_eq!(refresh_row("r1").session_hash, "s2");

        // Someone else in the same browser: the old session's tokens end with it.
        assert!(store
            .create_session("s3", &of("v"), 13, None, Some("s2"))
            .unwrap());
        assert!(store.session_owner("s2").unwrap().is_none());
        assert!(refresh_row("r1").revoked);
        assert!(store.is_jti_revoked("j1").unwrap());
        assert!(store
            .find_code("c1")
            .unwrap()
            .unwrap()
            .consumed_at
            .is_some());

        // A failure at the last step (deleting the old session) leaves everything as it was.
        insert_refresh(
            &mut store.conn().unwrap(),
            &RefreshRecord {
                user_id: "v".into(),
                ..refresh("r3", "f3", "s3", false, "j3")
            },
        )
        .unwrap();
        store.conn().unwrap().batch_execute(refuse_delete).unwrap();
        assert!(store
            .create_session("s4", &of("v"), 14, None, Some("s3"))
            .is_err());
        assert!(store.session_owner("s4").unwrap().is_none());
        assert_eq!(store.session_owner("s3").unwrap().unwrap().0, "v");
        assert_eq!(refresh_row("r3").session_hash, "s3");
    }

    #[test]
    fn a_new_session_replaces_the_old_one_in_one_step_on_sqlite() {
        on_sqlite(|store| {
            a_new_session_replaces_the_old_one_in_one_step(
                store,
                "CREATE TRIGGER keep_s3 BEFORE DELETE ON sessions WHEN old.id_hash = 's3'
                 BEGIN SELECT RAISE(ABORT, 'kept'); END;",
            )
        });
    }

    #[test]
    fn a_new_session_replaces_the_old_one_in_one_step_on_postgres() {
        on_postgres(|store| {
            a_new_session_replaces_the_old_one_in_one_step(
                store,
                "CREATE FUNCTION keep_s3() RETURNS trigger LANGUAGE plpgsql AS
                   $$ BEGIN RAISE EXCEPTION 'kept'; END $$;
                 CREATE TRIGGER keep_s3 BEFORE DELETE ON sessions FOR EACH ROW
                   WHEN (old.id_hash = 's3') EXECUTE FUNCTION keep_s3();",
            )
        });
    }

    #[test]
    fn sessions_open_only_under_the_verified_password_on_sqlite() {
        on_sqlite(sessions_open_only_under_the_verified_password);
    }

    #[test]
    fn sessions_open_only_under_the_verified_password_on_postgres() {
        on_postgres(sessions_open_only_under_the_verified_password);
    }

    /// Linking an upstream identity holds only under the password the linking page checked.
    fn links_only_under_the_checked_password(store: &DbStore) {
        use crate::store::FederationStore;
        store
            .create_user(&User {
                password_hash: Some("h1".into()),
                ..user("u")
            })
            .unwrap();
        let link = |subject: &str, password: &str| {
            store
                .link_identity(
                    "google",
                    subject,
                    "https://accounts.google.com",
                    "u",
                    password,
                    5,
                )
                .unwrap()
        };
        assert!(!link("1", "h0"), "the password changed since the check");
        assert!(link("1", "h1"));
        assert!(!link("1", "h1"), "already linked");
        assert!(store.find_identity("google", "1").unwrap().is_some());
        assert!(store.find_identity("google", "2").unwrap().is_none());
    }

    #[test]
    fn links_only_under_the_checked_password_on_sqlite() {
        on_sqlite(links_only_under_the_checked_password);
    }

    #[test]
    fn links_only_under_the_checked_password_on_postgres() {
        on_postgres(links_only_under_the_checked_password);
    }

    /// A password reset commits while a sign-in with the old password opens its session: the
    /// session waits for the reset and is refused, rather than slipping past its DELETE.
    #[test]
    fn a_reset_racing_a_sign_in_leaves_no_session_on_postgres() {
        with_postgres(|url| {
            let store = DbStore::open_single(DatabaseUrl::Postgres(url.into()));
            store.migrate().unwrap();
            store
                .create_user(&User {
                    password_hash: Some("old".into()),
                    ..user("u")
                })
                .unwrap();
            let mut reset = diesel::PgConnection::establish(url).unwrap();
            reset
                .batch_execute(
                    "BEGIN; UPDATE users SET password_hash = 'new' WHERE id = 'u'; \
                     DELETE FROM sessions WHERE user_id = 'u'",
                )
                .unwrap();
            let racer = std::thread::spawn({
                let store = store.clone();
                move || {
                    let s = Session {
                        user_id: "u".into(),
                        auth_time: 10,
                        amr: vec!["pwd".into()],
                        expires_at: 1_000,
                    };
                    store
                        .create_session("late", &s, 10, Some("old"), None)
                        .unwrap()
                }
            });
            wait_until_blocked(url);
            reset.batch_execute("COMMIT").unwrap();
            assert!(!racer.join().unwrap(), "the old password opened a session");
            assert!(store.find_session("late", 11, 100).unwrap().is_none());
        });
    }

    /// A logout on one replica while another redeems a code issued in that session: the
    /// logout waits for the redemption and revokes the family it started (or spends the code
    /// first), rather than listing the session's families before that one exists.
    #[test]
    fn a_logout_racing_a_code_redemption_ends_the_new_family_on_postgres() {
        with_postgres(|url| {
            let store = DbStore::open_single(DatabaseUrl::Postgres(url.into()));
            store.migrate().unwrap();
            store.create_user(&user("u")).unwrap();
            open_session_s(&store);
            assert!(store.save_code(&code("k")).unwrap());
            let mut redeemer = diesel::PgConnection::establish(url).unwrap();
            redeemer
                .batch_execute(
                    "BEGIN; UPDATE authorization_codes SET consumed_at = 60, access_jti = 'j1', \
                     access_exp = 600, refresh_family = 'fam' \
                     WHERE code_hash = 'k' AND consumed_at IS NULL; \
                     INSERT INTO refresh_tokens (token_hash, family_id, client_id, user_id, \
                     session_hash, scope, offline, auth_time, amr, issued_at, expires_at, \
                     revoked, access_jti, access_exp) VALUES ('r1', 'fam', 'c', 'u', 's', \
                     'openid', false, 1, '[\"pwd\"]', 60, 1000, false, 'j1', 600)",
                )
                .unwrap();
            let logout = std::thread::spawn({
                let store = store.clone();
                move || store.end_session("s", 100).unwrap()
            });
            wait_until_blocked(url);
            redeemer.batch_execute("COMMIT").unwrap();
            assert_eq!(logout.join().unwrap(), 1, "the new family was missed");
            assert!(store.find_refresh("r1").unwrap().unwrap().0.revoked);
            assert!(store.is_jti_revoked("j1").unwrap());
        });
    }

    /// `user set-password` (users row, then the person's links) while the person submits a
    /// reset link: both take the users row first, so one waits for the other instead of
    /// deadlocking; the link, spent by the new password, then changes nothing.
    #[test]
    fn set_password_and_a_reset_do_not_deadlock_on_postgres() {
        use crate::store::ResetStore;
        with_postgres(|url| {
            let store = DbStore::open_single(DatabaseUrl::Postgres(url.into()));
            store.migrate().unwrap();
            store.create_user(&user("u")).unwrap();
            assert!(store.create_reset("link", "u", 1_000, 2_800, None).unwrap());
            let mut operator = diesel::PgConnection::establish(url).unwrap();
            operator
                .batch_execute("BEGIN; UPDATE users SET password_hash = 'op' WHERE id = 'u'")
                .unwrap();
            let person = std::thread::spawn({
                let store = store.clone();
                move || store.complete_reset("link", "mine", 1_001).unwrap()
            });
            wait_until_blocked(url);
            operator
                .batch_execute(
                    "UPDATE password_resets SET used_at = 1001 \
                     WHERE user_id = 'u' AND used_at IS NULL; COMMIT",
                )
                .expect("no deadlock");
            assert_eq!(person.join().unwrap(), None, "the link was spent");
            let hash = store.find_user("u").unwrap().unwrap().password_hash;
            assert_eq!(hash.as_deref(), Some("op"));
        });
    }

    /// A logout while a reset of the same person runs (the reset holds the user's row and the
    /// session's, then wants the codes and refresh tokens): the logout takes the session row
    /// first too, so it waits instead of deadlocking.
    #[test]
    fn a_logout_and_a_reset_do_not_deadlock_on_postgres() {
        with_postgres(|url| {
            let store = DbStore::open_single(DatabaseUrl::Postgres(url.into()));
            store.migrate().unwrap();
            store.create_user(&user("u")).unwrap();
            let s = Session {
                user_id: "u".into(),
                auth_time: 1,
                amr: vec!["pwd".into()],
                expires_at: 1_000,
            };
            assert!(store.create_session("s", &s, 1, None, None).unwrap());
            assert!(store.save_code(&code("c")).unwrap());
            insert_refresh(
                &mut store.conn().unwrap(),
                &refresh("r", "f", "s", false, "j"),
            )
            .unwrap();
            let mut reset = diesel::PgConnection::establish(url).unwrap();
            reset
                .batch_execute(
                    "BEGIN; UPDATE users SET password_hash = 'new' WHERE id = 'u'; \
                     DELETE FROM sessions WHERE user_id = 'u'",
                )
                .unwrap();
            let logout = std::thread::spawn({
                let store = store.clone();
                move || store.end_session("s", 50)
            });
            wait_until_blocked(url);
            reset
                .batch_execute(
                    "UPDATE authorization_codes SET consumed_at = 50 \
                     WHERE user_id = 'u' AND consumed_at IS NULL; \
                     UPDATE refresh_tokens SET revoked = true WHERE user_id = 'u'; COMMIT",
                )
                .expect("no deadlock");
            logout.join().unwrap().expect("the logout completes");
            assert!(store.find_refresh("r").unwrap().unwrap().0.revoked);
        });
    }

    /// A logout deny-lists the live access tokens its codes issued to a client without refresh
    /// tokens; an offline family's survive.
    fn logout_reaches_access_tokens_without_a_family(store: &DbStore) {
        open_session_s(store);
        assert!(store.save_code(&code("alone")).unwrap());
        assert!(store.consume_code("alone", 20, "aj", 600, None).unwrap());
        assert!(store.save_code(&code("offline")).unwrap());
        let first = refresh("o1", "off", "s", true, "oj");
        assert!(store
            .consume_code("offline", 20, "oj", 600, Some(&first))
            .unwrap());
        assert!(store.save_code(&code("expired")).unwrap());
        assert!(store.consume_code("expired", 20, "ej", 30, None).unwrap());
        store.end_session("s", 40).unwrap();
        assert!(store.is_jti_revoked("aj").unwrap());
        assert!(!store.is_jti_revoked("oj").unwrap(), "offline survives");
        assert!(!store.is_jti_revoked("ej").unwrap(), "already expired");
    }

    /// The same, after the person signed in again on that browser (the session replaced).
    fn logout_after_a_new_sign_in_reaches_the_old_sessions_access_tokens(store: &DbStore) {
        store.create_user(&user("u")).unwrap();
        open_session_s(store);
        assert!(store.save_code(&code("alone")).unwrap());
        assert!(store.consume_code("alone", 20, "aj", 600, None).unwrap());
        let again = Session {
            user_id: "u".into(),
            auth_time: 21,
            amr: vec!["pwd".into()],
            expires_at: 50_000,
        };
        assert!(store
            .create_session("s2", &again, 21, None, Some("s"))
            .unwrap());
        store.end_session("s2", 40).unwrap();
        assert!(store.is_jti_revoked("aj").unwrap());
    }

    #[test]
    fn logout_after_a_new_sign_in_reaches_the_old_sessions_access_tokens_on_sqlite() {
        on_sqlite(logout_after_a_new_sign_in_reaches_the_old_sessions_access_tokens);
    }

    #[test]
    fn logout_after_a_new_sign_in_reaches_the_old_sessions_access_tokens_on_postgres() {
        on_postgres(logout_after_a_new_sign_in_reaches_the_old_sessions_access_tokens);
    }

    #[test]
    fn logout_reaches_access_tokens_without_a_family_on_sqlite() {
        on_sqlite(logout_reaches_access_tokens_without_a_family);
    }

    #[test]
    fn logout_reaches_access_tokens_without_a_family_on_postgres() {
        on_postgres(logout_reaches_access_tokens_without_a_family);
    }

    /// "Forgot password" asked many times at once makes one link per cooldown; the operator's
    /// command is not held back.
    fn one_mailed_link_per_cooldown(store: &DbStore) {
        use crate::store::ResetStore;
        store.create_user(&user("u")).unwrap();
        let made: Vec<bool> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..6)
                .map(|i| {
                    scope.spawn(move || {
                        store
                            .create_reset(&format!("h{i}"), "u", 1_000, 2_800, Some(700))
                            .unwrap()
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert_eq!(made.iter().filter(|m| **m).count(), 1, "{made:?}");
        assert!(!store
            .create_reset("later", "u", 1_200, 3_000, Some(900))
            .unwrap());
        assert!(store.create_reset("op", "u", 1_200, 3_000, None).unwrap());
        assert!(store
            .create_reset("next", "u", 1_600, 3_400, Some(1_300))
            .unwrap());
        assert!(!store
            .create_reset("x", "nobody", 1_600, 3_400, Some(1_300))
            .unwrap());
    }

    #[test]
    fn one_mailed_link_per_cooldown_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let store = DbStore::with_pool_size(DatabaseUrl::Sqlite(dir.path().join("t.db")), 4, 0);
        store.migrate().unwrap();
        one_mailed_link_per_cooldown(&store);
    }

    #[test]
    fn one_mailed_link_per_cooldown_on_postgres() {
        use crate::store::ResetStore;
        with_postgres(|url| {
            let store = DbStore::with_pool_size(DatabaseUrl::Postgres(url.into()), 4, 0);
            store.migrate().unwrap();
            one_mailed_link_per_cooldown(&store);
            // Another replica between its check and its commit: this one waits, then sees its
            // link (READ COMMITTED alone would see none and make a second).
            store.create_user(&user("v")).unwrap();
            let mut other = diesel::PgConnection::establish(url).unwrap();
            other
                .batch_execute(
                    "BEGIN; UPDATE users SET id = id WHERE id = 'v'; \
                     INSERT INTO password_resets (token_hash, user_id, created_at, expires_at) \
                     VALUES ('theirs', 'v', 1000, 2800)",
                )
                .unwrap();
            let racer = std::thread::spawn({
                let store = store.clone();
                move || {
                    store
                        .create_reset("ours", "v", 1_000, 2_800, Some(700))
                        .unwrap()
                }
            });
            wait_until_blocked(url);
            other.batch_execute("COMMIT").unwrap();
            assert!(!racer.join().unwrap(), "a second link within the cooldown");
        });
    }

    /// A second factor being confirmed while the same person (another tab) asks for a new seed:
    /// the new seed must not replace the confirmed one (READ COMMITTED re-checks the DELETE).
    #[test]
    fn a_confirmation_racing_a_new_seed_keeps_the_second_factor_on_postgres() {
        use crate::store::MfaStore;
        with_postgres(|url| {
            let store = DbStore::open_single(DatabaseUrl::Postgres(url.into()));
            store.migrate().unwrap();
            store.create_user(&user("u")).unwrap();
            assert!(store.begin_totp("u", "seed-1", 10).unwrap());
            let mut holder = diesel::PgConnection::establish(url).unwrap();
            holder
                .batch_execute(
                    "BEGIN; UPDATE user_totp SET confirmed = true, last_step = 1 \
                     WHERE user_id = 'u' AND NOT confirmed",
                )
                .unwrap();
            let racer = std::thread::spawn({
                let store = store.clone();
                move || store.begin_totp("u", "seed-2", 11).unwrap()
            });
            wait_until_blocked(url);
            holder.batch_execute("COMMIT").unwrap();
            assert!(!racer.join().unwrap(), "no new seed over a confirmed one");
            let t = store.find_totp("u").unwrap().unwrap();
            assert!(t.confirmed);
            assert_eq!(t.secret_sealed, "seed-1");
        });
    }

    /// Audit rows go in by multi-row statements of up to 32 rows; every row must come back as
    /// written, NULLs as NULLs, in any batch size around the chunk size.
    fn audit_rows_round_trip(store: &DbStore) {
        use crate::audit::{AuditEvent, AuditFilter};
        use crate::store::AuditStore;
        store.migrate().unwrap();
        let mut all = Vec::new();
        for (batch, size) in [1usize, 31, 32, 33, 70].into_iter().enumerate() {
            let events: Vec<AuditEvent> = (0..size)
                .map(|i| {
                    let mut e = AuditEvent::new("token.issued", 1_000 + i as i64);
                    e.id = format!("{batch}-{i:03}");
                    if i % 2 == 0 {
                        e = e.user(format!("u{i}")).detail("grant_type=x");
                    }
                    if i % 3 == 0 {
                        e = e.client("c");
                        e.ip = Some("127.0.0.1".into());
                        e.user_agent = Some("ua $1 '".into());
                        e.request_id = Some(format!("r{i}"));
                    }
                    e
                })
                .collect();
            store.append_audit(&events).unwrap();
            all.extend(events);
        }
        // A batch retried after a commit whose answer was lost: written once, no error.
        store.append_audit(&all[..all.len().min(40)]).unwrap();
        let mut back = store
            .list_audit(&AuditFilter {
                limit: 1_000,
                ..AuditFilter::default()
            })
            .unwrap();
        back.sort_by(|a, b| a.id.cmp(&b.id));
        all.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(back, all);
    }

    #[test]
    fn audit_rows_round_trip_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        audit_rows_round_trip(&DbStore::open_single(DatabaseUrl::Sqlite(
            dir.path().join("t.db"),
        )));
    }

    #[test]
    fn audit_rows_round_trip_on_postgres() {
        with_postgres(|url| {
            audit_rows_round_trip(&DbStore::open_single(DatabaseUrl::Postgres(url.into())));
        });
    }

    /// The rotation is a statement kept prepared on its connection: a migration that adds
    /// columns to its tables while the server runs must not break it (PostgreSQL refuses a kept
    /// statement whose result columns changed, "cached plan must not change result type").
    #[test]
    fn kept_rotation_statement_survives_added_columns_on_postgres() {
        with_postgres(|url| {
            // One connection, so both rotations run on the one that keeps the statement.
            let store = DbStore::open_single(DatabaseUrl::Postgres(url.into()));
            store.migrate().unwrap();
            store.create_user(&user("u")).unwrap();
            insert_refresh(
                &mut store.conn().unwrap(),
                &refresh("r1", "f", "s", true, "j1"),
            )
            .unwrap();
            assert!(store
                .rotate_refresh("r1", "c", 20, &next("r2", "j2"))
                .unwrap()
                .is_some());
            store
                .conn()
                .unwrap()
                .batch_execute(
                    "ALTER TABLE refresh_tokens ADD COLUMN later_a INTEGER; \
                     ALTER TABLE users ADD COLUMN later_b TEXT",
                )
                .unwrap();
            let (old, u) = store
                .rotate_refresh("r2", "c", 21, &next("r3", "j3"))
                .unwrap()
                .expect("the kept statement still rotates");
            assert_eq!((old.token_hash.as_str(), u.id.as_str()), ("r2", "u"));
        });
    }

    /// Concurrent first attempts from one address (an office behind one NAT, two replicas):
    /// whoever starts the window, every attempt is counted in it and none is refused while it
    /// has room. Counted exactly: the limit holds under the race too.
    #[test]
    fn concurrent_first_attempts_from_one_address_share_the_new_window_on_postgres() {
        with_postgres(|url| {
            let store = DbStore::open(DatabaseUrl::Postgres(url.into()));
            store.migrate().unwrap();
            const THREADS: usize = 6;
            for round in 0..15 {
                let ip = format!("203.0.113.{round}");
                let barrier = std::sync::Barrier::new(THREADS);
                let admitted = std::thread::scope(|s| {
                    let handles: Vec<_> = (0..THREADS)
                        .map(|_| {
                            s.spawn(|| {
                                barrier.wait();
                                store.reserve_ip(&ip, 1_000, 900, 20).unwrap()
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().unwrap())
                        .filter(|ok| *ok)
                        .count()
                });
                assert_eq!(admitted, THREADS, "round {round}: an attempt was refused");
                let counted: i32 = login_ip_failures::table
                    .find(&ip)
                    .select(login_ip_failures::failures)
                    .first(&mut *store.conn().unwrap())
                    .unwrap();
                assert_eq!(counted, THREADS as i32, "round {round}");
            }
            // And the limit: 20 in the window, then refused.
            let ip = "198.51.100.1";
            let admitted = (0..25)
                .filter(|_| store.reserve_ip(ip, 1_000, 900, 20).unwrap())
                .count();
            assert_eq!(admitted, 20);
        });
    }

    #[test]
    fn refresh_rotation_is_single_use_and_family_revocation_takes_access_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = DbStore::open_single(DatabaseUrl::Sqlite(dir.path().join("t.db")));
        store.migrate().unwrap();
        store.create_user(&user("u")).unwrap();
        let find = |h: &str| store.find_refresh(h).unwrap().map(|(r, _)| r);
        let rotate = |old: &str, client: &str, now: i64, new: &str| {
            store
                .rotate_refresh(old, client, now, &next(new, &format!("j-{new}")))
                .unwrap()
        };
        assert!(rotate("none", "c", 10, "x").is_none(), "unknown token");
        let mut conn = store.conn().unwrap();
        insert_refresh(&mut conn, &refresh("r1", "f", "s", false, "j1")).unwrap();
        drop(conn);
        assert!(rotate("r1", "other", 20, "x").is_none(), "another client's");
        let (old, user) = rotate("r1", "c", 20, "r2").expect("current token rotates");
        assert_eq!((old.family_id.as_str(), user.id.as_str()), ("f", "u"));
        let r2 = find("r2").unwrap();
        assert_eq!(
            (r2.family_id.as_str(), r2.scope.as_str(), r2.used_at),
            ("f", "openid", None),
            "the next token inherits the grant"
        );
        assert_eq!(
            r2.expires_at, 501,
            "online: no later than auth_time + the session's life"
        );
        assert!(rotate("r1", "c", 21, "r3").is_none(), "used once only");
        assert!(find("r3").is_none(), "nothing written");
        assert_eq!(find("r1").unwrap().used_at, Some(20));
        assert!(store.set_locked("u", true).unwrap());
        assert!(rotate("r2", "c", 22, "x").is_none(), "locked user");
        assert!(store.set_locked("u", false).unwrap());
        assert!(rotate("r2", "c", 2_000, "x").is_none(), "expired");
        // One access token of the family is already revoked: revoking the family must not trip
        // over it, and revoking twice is fine.
        store.revoke_jti("j1", 600).unwrap();
        store.revoke_family("f", 30).unwrap();
        store.revoke_family("f", 30).unwrap();
        assert!(store.is_jti_revoked("j-r2").unwrap());
        assert!(find("r2").unwrap().revoked);
        assert!(rotate("r2", "c", 31, "r4").is_none(), "revoked");
        // Logout takes the session's online families only.
        let mut conn = store.conn().unwrap();
        insert_refresh(&mut conn, &refresh("on", "g", "s2", false, "k1")).unwrap();
        insert_refresh(&mut conn, &refresh("off", "h", "s2", true, "k2")).unwrap();
        drop(conn);
        assert_eq!(store.end_session("s2", 40).unwrap(), 1);
        assert!(find("on").unwrap().revoked);
        assert!(!find("off").unwrap().revoked);
        assert!(store.is_jti_revoked("k1").unwrap() && !store.is_jti_revoked("k2").unwrap());
        // Expired rows go with the purge.
        assert!(store.purge_expired(2_000, 100).unwrap() >= 5);
        assert!(find("off").is_none());
    }
}
