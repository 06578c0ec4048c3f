//! The server's view of `keys_dir`: loaded once, re-read when the folder changes (another
//! replica or `portcullis keys` may have generated or retired a key), with the JWKS document
//! rendered ahead of time. May be stale for one refresh interval.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use super::keys::{KeyError, KeySet};
use crate::clock::UnixTime;

/// One loaded generation of keys.
#[derive(Debug)]
pub struct LoadedKeys {
    /// The keys.
    pub set: KeySet,
    /// `{"keys": [...]}` rendered at load time.
    pub jwks: Vec<u8>,
    fingerprint: Vec<(PathBuf, Option<SystemTime>, u64)>,
}

/// Shared, reloadable keys.
#[derive(Debug)]
pub struct KeyRing {
    dir: PathBuf,
    max_jwt_ttl: i64,
    current: RwLock<Arc<LoadedKeys>>,
}

fn fingerprint(dir: &Path) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((e.path(), meta.modified().ok(), meta.len()))
        })
        .collect();
    out.sort();
    out
}

impl KeyRing {
    /// Load `dir`, generating the first RS256 and ES256 keys if it has none.
    pub fn open(dir: &Path, max_jwt_ttl: i64, now: UnixTime) -> Result<Self, KeyError> {
        // Fingerprint first: a file landing during the load then triggers another reload.
        let fp = fingerprint(dir);
        let set = KeySet::load_or_init(dir, max_jwt_ttl, now)?;
        let loaded = Self::render(set, fp, now);
        Ok(Self {
            dir: dir.to_owned(),
            max_jwt_ttl,
            current: RwLock::new(Arc::new(loaded)),
        })
    }

    fn render(
        set: KeySet,
        fingerprint: Vec<(PathBuf, Option<SystemTime>, u64)>,
        now: UnixTime,
    ) -> LoadedKeys {
        let jwks = serde_json::to_vec(&set.jwks(now)).unwrap_or_default();
        LoadedKeys {
            set,
            jwks,
            fingerprint,
        }
    }

    /// The keys in force.
    pub fn current(&self) -> Arc<LoadedKeys> {
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Re-read the folder if it changed or a published key may now sign, and re-render the JWKS
    /// (retired keys leave it as time passes). Keeps the old keys if the folder cannot be read
    /// or would leave an algorithm without a signing key.
    pub fn refresh(&self, now: UnixTime) -> Result<(), KeyError> {
        let fp = fingerprint(&self.dir);
        let old = self.current();
        if fp == old.fingerprint
            && !old.set.matures_by(now)
            && serde_json::to_vec(&old.set.jwks(now)).unwrap_or_default() == old.jwks
        {
            return Ok(());
        }
        // Keys are generated at start and by the command line, never here: replicas reloading
        // at slightly different moments must not each add one of their own.
        match self.load_keeping_signers(&old, now) {
            Ok(set) => self.install(set, fp, now),
            Err(error) => {
                // The keys loaded before stay, but as of now: a retirement or a successor's
                // start that falls due while the folder cannot be loaded (a stray file in it,
                // say) still takes effect, and the JWKS still drops keys as they expire. With
                // the old fingerprint kept, the next refresh tries the folder again.
                let kept = old.set.at(now);
                if old
                    .set
                    .algs()
                    .into_iter()
                    .all(|a| kept.signing_key(a).is_some())
                {
                    self.install(kept, old.fingerprint.clone(), now);
                }
                return Err(error);
            }
        }
        Ok(())
    }

    fn load_keeping_signers(&self, old: &LoadedKeys, now: UnixTime) -> Result<KeySet, KeyError> {
        let set = KeySet::load_at(&self.dir, self.max_jwt_ttl, now)?;
        if let Some(alg) = old
            .set
            .algs()
            .into_iter()
            .find(|a| set.signing_key(*a).is_none())
        {
            return Err(KeyError::BadKey {
                path: self.dir.clone(),
                why: format!("no key left to sign {alg:?}; the keys loaded before stay in use"),
            });
        }
        Ok(set)
    }

    fn install(&self, set: KeySet, fp: Vec<(PathBuf, Option<SystemTime>, u64)>, now: UnixTime) {
        let loaded = Self::render(set, fp, now);
        if let Ok(mut g) = self.current.write() {
            *g = Arc::new(loaded);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::{generate, retire, SigningAlg};

    /// A folder that cannot be loaded (a stray `.pem`) keeps the keys loaded before, but time
    /// still moves for them: a retirement that falls due hands signing to the successor, and a
    /// retired key leaves the JWKS when its tokens have expired.
    #[test]
    fn a_folder_that_cannot_be_loaded_does_not_stop_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(dir.path(), 600, 1_000).unwrap();
        let signer = |r: &KeyRing| {
            r.current()
                .set
                .signing_key(SigningAlg::ES256)
                .map(|k| k.kid.clone())
                .unwrap()
        };
        let jwks = |r: &KeyRing| String::from_utf8(r.current().jwks.clone()).unwrap();
        let old = signer(&ring);
        let new = generate(dir.path(), SigningAlg::ES256, 1_100).unwrap();
        ring.refresh(1_105).unwrap();
        // The successor is younger than 10 s: the old key signs on until it may.
        retire(dir.path(), &old, 1_106).unwrap();
        ring.refresh(1_107).unwrap();
        assert_eq!(signer(&ring), old);
        std::fs::write(dir.path().join("stray.pem"), "not a key").unwrap();
        assert!(ring.refresh(1_111).is_err());
        assert_eq!(signer(&ring), new, "the retirement fell due");
        assert!(jwks(&ring).contains(&old));
        // Published until every token it signed has expired (600 s, and 60 s of skew).
        assert!(ring.refresh(1_110 + 600 + 61).is_err());
        assert!(!jwks(&ring).contains(&old), "{}", jwks(&ring));
        assert!(jwks(&ring).contains(&new));
        // The stray file gone, the folder loads again.
        std::fs::remove_file(dir.path().join("stray.pem")).unwrap();
        ring.refresh(1_800).unwrap();
        assert_eq!(signer(&ring), new);
    }

    #[test]
    fn a_reload_adds_no_key_and_never_drops_a_signer() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(dir.path(), 600, 1_000).unwrap();
        let es256 = |r: &KeyRing| {
            r.current()
                .set
                .signing_key(SigningAlg::ES256)
                .map(|k| k.kid.clone())
        };
        let before = es256(&ring).unwrap();
        // A key from the command line is picked up (and signs once it is old enough).
        let added = generate(dir.path(), SigningAlg::ES256, 1_050).unwrap();
        ring.refresh(1_100).unwrap();
        assert_eq!(es256(&ring), Some(added.clone()));
        // The folder losing every ES256 key: the reload is refused, nothing is generated.
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        for kid in [&before, &added] {
            std::fs::remove_file(dir.path().join(format!("{kid}.pem"))).unwrap();
        }
        assert!(ring.refresh(1_200).is_err());
        assert_eq!(es256(&ring), Some(added));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), files - 2);
    }
}
