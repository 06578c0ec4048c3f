//! Secrets kept at rest encrypted (TOTP seeds): AES-256-GCM (aws-lc-rs) with a random 96-bit
//! nonce per value; stored as base64url(nonce || ciphertext || tag). The key comes from the
//! configuration (`login.totp_encryption_key`, base64 of 32 bytes) or from `totp.key` in the
//! keys folder, created on first use and shared by replicas like the signing keys.

use std::io::Write;
use std::path::Path;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use base64::Engine;
use rand::RngCore;

/// The file in the keys folder holding the key when the configuration gives none.
pub const KEY_FILE: &str = "totp.key";

/// Why sealing or opening failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The key is missing, unreadable or not 32 bytes.
    #[error("encryption key: {0}")]
    Key(String),
    /// The value was not sealed with this key, or was altered.
    #[error("sealed value cannot be opened")]
    Open,
}

/// An AES-256-GCM key for values at rest.
pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

impl Sealer {
    /// From 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| SealError::Key("must be 32 bytes".into()))?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
        })
    }

    /// The configured key (base64 of 32 bytes) if any, else the keys folder's `totp.key`,
    /// created (0600, never overwritten) when absent.
    pub fn load(configured: &str, keys_dir: &Path) -> Result<Self, SealError> {
        // Blank, as the configuration check reads it, is unset.
        let configured = configured.trim();
        if !configured.is_empty() {
            let bytes = STANDARD
                .decode(configured)
                .map_err(|_| SealError::Key("login.totp_encryption_key is not base64".into()))?;
            return Self::from_bytes(&bytes);
        }
        let path = keys_dir.join(KEY_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_key_file(&path)?,
            Err(e) => return Err(SealError::Key(format!("{}: {e}", path.display()))),
        };
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| SealError::Key(format!("{} is not base64", path.display())))?;
        Self::from_bytes(&bytes)
    }

    /// Encrypt `plaintext`; `context` (e.g. the user id) is authenticated with it, so a sealed
    /// value cannot be moved to another row.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut buf = plaintext.to_vec();
        // Sealing in place cannot fail for inputs of this size with a fresh key.
        if self
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .is_err()
        {
            buf.clear();
        }
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        B64.encode(out)
    }

    /// Decrypt a value made by [`Sealer::seal`] with the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, SealError> {
        let raw = B64.decode(sealed).map_err(|_| SealError::Open)?;
        if raw.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| SealError::Open)?;
        Ok(plain.to_vec())
    }
}

/// Write a new random key: complete in a temporary file of its own, then hard-linked into
/// place, which fails if the name exists. Whoever links first wins, and every process then uses
/// what is in the file, never what it wrote itself: replicas starting at the same moment on one
/// folder (each may be PID 1 in its container) end up with one key.
fn create_key_file(path: &Path) -> Result<String, SealError> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let text = format!("{}\n", STANDARD.encode(bytes));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| SealError::Key(e.to_string()))?;
    }
    let tmp = path.with_extension(format!("tmp-{:032x}", rand::random::<u128>()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(SealError::Key(format!("{}: {e}", tmp.display())));
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(SealError::Key(format!("{}: {e}", path.display()))),
    }
    std::fs::read_to_string(path).map_err(|e| SealError::Key(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_context() {
        let a = Sealer::from_bytes(&[7u8; 32]).unwrap();
        let b = Sealer::from_bytes(&[8u8; 32]).unwrap();
        let sealed = a.seal(b"JBSWY3DPEHPK3PXP", "user-1");
        assert!(!sealed.contains("JBSWY3DP"));
        assert_eq!(a.open(&sealed, "user-1").unwrap(), b"JBSWY3DPEHPK3PXP");
        assert!(a.open(&sealed, "user-2").is_err(), "bound to its row");
        assert!(b.open(&sealed, "user-1").is_err(), "other key");
        assert_ne!(sealed, a.seal(b"JBSWY3DPEHPK3PXP", "user-1"), "fresh nonce");
        let mut tampered = B64.decode(&sealed).unwrap();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(a.open(&B64.encode(tampered), "user-1").is_err());
        assert!(Sealer::from_bytes(&[0u8; 16]).is_err());
    }

    #[test]
    fn key_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = Sealer::load("", dir.path()).unwrap();
        // Blank is unset too.
        let blank = Sealer::load("  ", dir.path()).unwrap();
        assert_eq!(blank.open(&first.seal(b"x", "u"), "u").unwrap(), b"x");
        let sealed = first.seal(b"x", "c");
        let again = Sealer::load("", dir.path()).unwrap();
        assert_eq!(again.open(&sealed, "c").unwrap(), b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file left behind");
        let configured = Sealer::load(&STANDARD.encode([9u8; 32]), dir.path()).unwrap();
        assert!(configured.open(&sealed, "c").is_err());
        assert!(Sealer::load("not base64!", dir.path()).is_err());
    }

    #[test]
    fn simultaneous_first_starts_agree_on_one_key() {
        // Threads of one process share a PID, as replicas do that are each PID 1 in a container.
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let barrier = std::sync::Barrier::new(4);
            let sealers: Vec<Sealer> = std::thread::scope(|scope| {
                let started: Vec<_> = (0..4)
                    .map(|_| {
                        scope.spawn(|| {
                            barrier.wait();
                            Sealer::load("", dir.path()).unwrap()
                        })
                    })
                    .collect();
                started.into_iter().map(|t| t.join().unwrap()).collect()
            });
            let on_disk = Sealer::load("", dir.path()).unwrap();
            for s in &sealers {
                assert_eq!(on_disk.open(&s.seal(b"x", "c"), "c").unwrap(), b"x");
            }
        }
    }
}
