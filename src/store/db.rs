//! The diesel store: one implementation over SQLite and PostgreSQL through `MultiConnection`,
//! with an r2d2 pool and migrations embedded in the binary.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{self, ManageConnection, PooledConnection, R2D2Connection};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::schema::{clients, revoked_tokens};
use super::{ClientStore, Maintenance, RevocationStore, StoreError, StoreResult};
use crate::clock::UnixTime;
use crate::config::DatabaseUrl;
use crate::oauth::client::{AuthMethod, Client};

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

impl ManageConnection for Manager {
    type Connection = AnyConnection;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<AnyConnection, r2d2::Error> {
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

    fn is_valid(&self, conn: &mut AnyConnection) -> Result<(), r2d2::Error> {
        conn.ping().map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut AnyConnection) -> bool {
        conn.is_broken()
    }
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
        let size = if matches!(url, DatabaseUrl::Sqlite(_)) {
            8
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
        Self { pool, is_sqlite }
    }

    fn conn(&self) -> StoreResult<PooledConnection<Manager>> {
        self.pool
            .get()
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
        let n = diesel::delete(clients::table.find(client_id))
            .execute(&mut *self.conn()?)
            .map_err(db_err)?;
        Ok(n > 0)
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
        let expired: Vec<String> = revoked_tokens::table
            .select(revoked_tokens::jti)
            .filter(revoked_tokens::expires_at.lt(now))
            .limit(batch)
            .load(&mut *conn)
            .map_err(db_err)?;
        if expired.is_empty() {
            return Ok(0);
        }
        diesel::delete(revoked_tokens::table.filter(revoked_tokens::jti.eq_any(&expired)))
            .execute(&mut *conn)
            .map_err(db_err)
    }
}
