//! Opaque secrets: 256-bit random values, stored only as SHA-256 digests, compared in constant time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

// Random values come from `rand`'s thread-local CSPRNG (ChaCha12 seeded from, and regularly
// reseeded by, the operating system): as unpredictable as `OsRng` for this purpose, without a
// `getrandom` system call for every token, `jti` and audit row id.

/// A new 256-bit random value, base64url without padding (43 characters).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    B64.encode(bytes)
}

/// A new 128-bit random identifier (a `jti`, a generated client id), base64url (22 characters).
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    B64.encode(bytes)
}

/// The stored form of a secret: lowercase hex SHA-256. Secrets are high-entropy, so a slow hash
/// would only cost throughput (DESIGN.md "Tokens and secrets").
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

/// Whether `presented` hashes to `stored_hash`, in time independent of where they differ.
pub fn verify_secret(presented: &str, stored_hash: &str) -> bool {
    let computed = hash_secret(presented);
    computed.as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bit_and_unique() {
        let a = random_token();
        assert_eq!(B64.decode(&a).unwrap().len(), 32);
        assert_ne!(a, random_token());
        assert_eq!(B64.decode(random_id()).unwrap().len(), 16);
    }

    #[test]
    fn secret_round_trip() {
        let s = random_token();
        let h = hash_secret(&s);
        assert_eq!(h.len(), 64);
        assert!(verify_secret(&s, &h));
        assert!(!verify_secret(&format!("{s}x"), &h));
        assert!(!verify_secret("", &h));
        // Known vector: SHA-256("abc").
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
