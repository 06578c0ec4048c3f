//! RFC 7636 PKCE, S256 only.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

fn unreserved(s: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    len.contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// A S256 challenge is the base64url SHA-256 of a verifier: exactly 43 characters.
pub fn valid_challenge(challenge: &str) -> bool {
    challenge.len() == 43 && B64.decode(challenge).is_ok_and(|d| d.len() == 32)
}

/// RFC 7636 4.1: 43 to 128 unreserved characters.
pub fn valid_verifier(verifier: &str) -> bool {
    unreserved(verifier, 43..=128)
}

/// The S256 challenge of `verifier`.
pub fn s256(verifier: &str) -> String {
    B64.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether `verifier` answers `challenge` (constant time).
pub fn verify(verifier: &str, challenge: &str) -> bool {
    valid_verifier(verifier) && s256(verifier).as_bytes().ct_eq(challenge.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_round_trip() {
        // Challenge computed independently (Python hashlib + base64.urlsafe_b64encode).
        let verifier = "dBjftJeZ4CVP-mJ92K9Y7YmMdPMgQlxIv4bqNr8eXzo";
        let challenge = "ubo6hI9adiFaZBTpmxWVb-t0isMB_nv2BUqg_tnvaBQ";
        assert_eq!(s256(verifier), challenge);
        assert!(verify(verifier, challenge));
        assert!(!verify(
            "dBjftJeZ4CVP-mJ92K9Y7YmMdPMgQlxIv4bqNr8eXzp",
            challenge
        ));
        assert!(!verify("short", &s256("short")));
        assert!(valid_challenge(challenge));
        assert!(!valid_challenge("abc"));
    }
}
