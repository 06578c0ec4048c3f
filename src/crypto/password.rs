//! Password hashing: Argon2id with the OWASP parameters (19 MiB, 2 passes, 1 lane).
//! Slow on purpose (tens of milliseconds): callers run it on the blocking pool.

use std::sync::{Mutex, OnceLock};

use subtle::ConstantTimeEq;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

fn argon2() -> Argon2<'static> {
    // OWASP Password Storage Cheat Sheet: m=19456 KiB, t=2, p=1. The values are constants that
    // `Params::new` accepts; the fallback is the crate default (also Argon2id, stronger memory).
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hash a password to a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// A hash of a random password, to verify against when the user is unknown, so that timing
/// does not tell whether a username exists.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&crate::crypto::opaque::random_token()).unwrap_or_default())
}

/// Whether `password` matches `hash`. With `hash = None` (unknown user, or no password set) the
/// same work is done against a dummy hash and the answer is false.
pub fn verify_password(password: &str, hash: Option<&str>) -> bool {
    let (phc, real) = match hash {
        Some(h) => (h, true),
        None => (dummy_hash(), false),
    };
    verify_phc(password, phc).unwrap_or(false) && real
}

/// Argon2 working memory (19 MiB a hash) kept for reuse: allocating and zeroing it on every
/// verification costs page faults worth a fifth of the hash. At most one buffer per core is kept.
static MEMORY: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

fn verify_phc(password: &str, phc: &str) -> Option<bool> {
    let parsed = PasswordHash::new(phc).ok()?;
    // The parameters come from the stored hash, so older hashes keep verifying.
    let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
    let version = parsed
        .version
        .map_or(Some(Version::V0x13), |v| Version::try_from(v).ok())?;
    let params = Params::try_from(&parsed).ok()?;
    let expected = parsed.hash?;
    let mut salt_buf = [0u8; 64];
    let salt = parsed.salt?.decode_b64(&mut salt_buf).ok()?;
    let mut out = vec![0u8; expected.len()];
    let blocks = params.block_count();
    let mut memory = MEMORY
        .lock()
        .ok()
        .and_then(|mut pool| pool.pop())
        .unwrap_or_default();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let hashed = Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..blocks])
        .is_ok();
    if let Ok(mut pool) = MEMORY.lock() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        if pool.len() < cores {
            pool.push(memory);
        }
    }
    Some(hashed && bool::from(out.as_slice().ct_eq(expected.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_owasp_round_trip() {
        let h = hash_password("correct horse battery staple").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password("correct horse battery staple", Some(&h)));
        assert!(!verify_password("correct horse battery stapler", Some(&h)));
        assert!(!verify_password("anything", None));
        assert!(!verify_password("x", Some("not a phc string")));
        assert_ne!(
            h,
            hash_password("correct horse battery staple").unwrap(),
            "salted"
        );
        // A hash with other parameters (2 lanes, less memory) verifies with its own.
        let params = Params::new(8192, 1, 2, None).unwrap();
        let other = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"old password", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        assert!(verify_password("old password", Some(&other)));
        assert!(!verify_password("old passwore", Some(&other)));
        assert!(
            verify_password("correct horse battery staple", Some(&h)),
            "memory reuse"
        );
    }
}
