//! Storage: the small set of operations the protocol needs, split by capability, implemented
//! once with diesel for SQLite and PostgreSQL ([`db::DbStore`]) and in memory for unit tests
//! ([`memory::MemoryStore`]).
//!
//! Every method blocks; async callers run them on a blocking pool.

pub mod cache;
pub mod db;
pub mod memory;
mod schema;

use crate::clock::UnixTime;
use crate::oauth::client::Client;
use crate::oauth::error::OAuthError;

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or the pool is exhausted; retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A row with that key already exists.
    #[error("already exists")]
    Conflict,
    /// Any other database error.
    #[error("database error: {0}")]
    Database(String),
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        // Logged where it is handled; the client only learns that it may retry.
        tracing::warn!(error = %e, "storage error");
        OAuthError::temporarily_unavailable("the service is temporarily unavailable")
    }
}

/// Result of a storage call.
pub type StoreResult<T> = Result<T, StoreError>;

/// Registered clients.
pub trait ClientStore: Send + Sync {
    /// A client by id.
    fn find_client(&self, client_id: &str) -> StoreResult<Option<Client>>;
    /// Register a client; `Conflict` if the id is taken.
    fn create_client(&self, client: &Client) -> StoreResult<()>;
    /// Every client, by id.
    fn list_clients(&self) -> StoreResult<Vec<Client>>;
    /// Remove a client; whether it existed.
    fn delete_client(&self, client_id: &str) -> StoreResult<bool>;
    /// Replace a client's secret hash; whether the client exists.
    fn set_client_secret(&self, client_id: &str, secret_hash: &str) -> StoreResult<bool>;
}

/// Revoked access-token `jti`s, kept until the token would have expired.
pub trait RevocationStore: Send + Sync {
    /// Record `jti` as revoked until `expires_at`; revoking twice is not an error.
    fn revoke_jti(&self, jti: &str, expires_at: UnixTime) -> StoreResult<()>;
    /// Whether `jti` is revoked.
    fn is_jti_revoked(&self, jti: &str) -> StoreResult<bool>;
}

/// Operations on the store as a whole.
pub trait Maintenance: Send + Sync {
    /// Cheap round trip: is the database reachable?
    fn ping(&self) -> StoreResult<()>;
    /// Delete rows that expired before `now`, at most `batch` per table; how many went.
    fn purge_expired(&self, now: UnixTime, batch: i64) -> StoreResult<usize>;
}

/// Everything the server needs.
pub trait Store: ClientStore + RevocationStore + Maintenance {}
impl<T: ClientStore + RevocationStore + Maintenance> Store for T {}
