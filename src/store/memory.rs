//! An in-memory store for unit tests of the protocol layer.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{ClientStore, Maintenance, RevocationStore, StoreError, StoreResult};
use crate::clock::UnixTime;
use crate::oauth::client::Client;

/// Everything in maps behind one mutex.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    clients: BTreeMap<String, Client>,
    revoked: BTreeMap<String, UnixTime>,
}

impl MemoryStore {
    fn lock(&self) -> StoreResult<std::sync::MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Unavailable("poisoned".into()))
    }
}

impl ClientStore for MemoryStore {
    fn find_client(&self, client_id: &str) -> StoreResult<Option<Client>> {
        Ok(self.lock()?.clients.get(client_id).cloned())
    }
    fn create_client(&self, client: &Client) -> StoreResult<()> {
        let mut inner = self.lock()?;
        if inner.clients.contains_key(&client.client_id) {
            return Err(StoreError::Conflict);
        }
        inner
            .clients
            .insert(client.client_id.clone(), client.clone());
        Ok(())
    }
    fn list_clients(&self) -> StoreResult<Vec<Client>> {
        Ok(self.lock()?.clients.values().cloned().collect())
    }
    fn delete_client(&self, client_id: &str) -> StoreResult<bool> {
        Ok(self.lock()?.clients.remove(client_id).is_some())
    }
    fn set_client_secret(&self, client_id: &str, secret_hash: &str) -> StoreResult<bool> {
        Ok(match self.lock()?.clients.get_mut(client_id) {
            Some(c) => {
                c.secret_hash = Some(secret_hash.to_owned());
                true
            }
            None => false,
        })
    }
}

impl RevocationStore for MemoryStore {
    fn revoke_jti(&self, jti: &str, expires_at: UnixTime) -> StoreResult<()> {
        self.lock()?.revoked.insert(jti.to_owned(), expires_at);
        Ok(())
    }
    fn is_jti_revoked(&self, jti: &str) -> StoreResult<bool> {
        Ok(self.lock()?.revoked.contains_key(jti))
    }
}

impl Maintenance for MemoryStore {
    fn ping(&self) -> StoreResult<()> {
        self.lock().map(|_| ())
    }
    fn purge_expired(&self, now: UnixTime, batch: i64) -> StoreResult<usize> {
        let mut inner = self.lock()?;
        let expired: Vec<String> = inner
            .revoked
            .iter()
            .filter(|(_, exp)| **exp < now - super::REVOCATION_SKEW_SECS)
            .map(|(j, _)| j.clone())
            .take(usize::try_from(batch).unwrap_or(0))
            .collect();
        for j in &expired {
            inner.revoked.remove(j);
        }
        Ok(expired.len())
    }
}
