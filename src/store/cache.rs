//! A short-lived in-process cache of clients, so the token endpoint does not query the database
//! on every request. Entries may be stale for up to the TTL: a deleted client keeps working, and a
//! changed one keeps its old settings, for at most that long on each replica. A rotated secret is
//! seen at once, because a failed secret check re-reads the client (see [`ClientCache::refresh`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::{ClientStore, StoreResult};
use crate::oauth::client::Client;

/// Most clients kept; past this the cache is cleared (ids come from requests, so bound it).
const MAX_ENTRIES: usize = 10_000;

/// Client lookups through a TTL cache.
pub struct ClientCache {
    ttl: Duration,
    entries: RwLock<HashMap<String, (Instant, Arc<Client>)>>,
}

impl std::fmt::Debug for ClientCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl ClientCache {
    /// A cache whose entries live `ttl`; zero disables it.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// A fresh cached entry, without touching the store.
    pub fn cached(&self, client_id: &str) -> Option<Arc<Client>> {
        let entries = self.entries.read().ok()?;
        let (at, client) = entries.get(client_id)?;
        (at.elapsed() < self.ttl).then(|| Arc::clone(client))
    }

    /// Read the client from the store and cache it (blocking).
    pub fn refresh(
        &self,
        store: &dyn ClientStore,
        client_id: &str,
    ) -> StoreResult<Option<Arc<Client>>> {
        let found = store.find_client(client_id)?.map(Arc::new);
        if let Ok(mut entries) = self.entries.write() {
            match &found {
                Some(c) if !self.ttl.is_zero() => {
                    if entries.len() >= MAX_ENTRIES {
                        entries.clear();
                    }
                    entries.insert(client_id.to_owned(), (Instant::now(), Arc::clone(c)));
                }
                _ => {
                    entries.remove(client_id);
                }
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::client::AuthMethod;
    use crate::store::memory::MemoryStore;

    #[test]
    fn caches_until_refreshed() {
        let store = MemoryStore::default();
        let client = Client::sample("a", AuthMethod::ClientSecretBasic, Some("s"));
        store.create_client(&client).unwrap();
        let cache = ClientCache::new(Duration::from_secs(60));
        assert!(cache.cached("a").is_none());
        assert!(cache.refresh(&store, "a").unwrap().is_some());
        store.set_client_secret("a", "h2").unwrap();
        assert_eq!(cache.cached("a").unwrap().secret_hash, client.secret_hash);
        cache.refresh(&store, "a").unwrap();
        assert_eq!(
            cache.cached("a").unwrap().secret_hash.as_deref(),
            Some("h2")
        );
        store.delete_client("a").unwrap();
        assert!(cache.refresh(&store, "a").unwrap().is_none());
        assert!(cache.cached("a").is_none());
        let off = ClientCache::new(Duration::ZERO);
        store.create_client(&client).unwrap();
        off.refresh(&store, "a").unwrap();
        assert!(off.cached("a").is_none());
    }
}
