//! JWT signing and verification with `jsonwebtoken`, the algorithm pinned by the key.

use jsonwebtoken::{Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::keys::{KeySet, SigningAlg};
use crate::clock::UnixTime;

/// RFC 9068 section 2.1: the `typ` of a JWT access token.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Why a JWT was not accepted. Deliberately coarse: callers only report "invalid".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// No signing key for the algorithm.
    #[error("no active {0} signing key")]
    NoKey(SigningAlg),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(String),
    /// Not a well-formed JWS, wrong `typ`, unknown `kid`, `alg` other than the key's, bad
    /// signature, wrong issuer or expired.
    #[error("invalid token")]
    Invalid,
}

/// Sign `claims` with the active key of `alg`, with `typ` and `kid` in the header.
pub fn sign<T: Serialize>(
    keys: &KeySet,
    alg: SigningAlg,
    typ: &str,
    claims: &T,
) -> Result<String, JwtError> {
    super::provider::install();
    let key = keys.signing_key(alg).ok_or(JwtError::NoKey(alg))?;
    let mut header = Header::new(alg.jwt_alg());
    header.typ = Some(typ.to_owned());
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).map_err(|e| JwtError::Sign(e.to_string()))
}

/// The registered claims every token we verify must carry.
#[derive(Debug, Deserialize)]
struct Registered {
    iss: String,
    exp: i64,
}

/// Verify a JWT we issued: `typ` must be `expected_typ`, `kid` must name a published key, the
/// header's `alg` must be that key's algorithm (so `none` and HS256-with-our-public-key fail),
/// the signature must verify, `iss` must be `issuer` and `exp` must be after `now` (no leeway on
/// our own expiry, DESIGN.md "Clock leeway").
pub fn verify<T: DeserializeOwned>(
    keys: &KeySet,
    token: &str,
    expected_typ: &str,
    issuer: &str,
    now: UnixTime,
) -> Result<T, JwtError> {
    verify_inner(keys, token, expected_typ, issuer, now, true)
}

/// Like [`verify`], but an expired token is accepted (an `id_token_hint` may be old: OIDC Core
/// 3.1.2.1). Its key must still be published.
pub fn verify_ignoring_expiry<T: DeserializeOwned>(
    keys: &KeySet,
    token: &str,
    expected_typ: &str,
    issuer: &str,
    now: UnixTime,
) -> Result<T, JwtError> {
    verify_inner(keys, token, expected_typ, issuer, now, false)
}

fn verify_inner<T: DeserializeOwned>(
    keys: &KeySet,
    token: &str,
    expected_typ: &str,
    issuer: &str,
    now: UnixTime,
    check_exp: bool,
) -> Result<T, JwtError> {
    super::provider::install();
    let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Invalid)?;
    let typ_ok = header.typ.as_deref().is_some_and(|t| {
        t.eq_ignore_ascii_case(expected_typ)
            || t.eq_ignore_ascii_case(&format!("application/{expected_typ}"))
    });
    if !typ_ok {
        return Err(JwtError::Invalid);
    }
    let kid = header.kid.as_deref().ok_or(JwtError::Invalid)?;
    let key = keys.verifying_key(kid, now).ok_or(JwtError::Invalid)?;
    if header.alg != key.alg.jwt_alg() {
        return Err(JwtError::Invalid);
    }
    let mut validation = Validation::new(key.alg.jwt_alg());
    // Time and audience are checked here against our own clock, not jsonwebtoken's.
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &key.decoding, &validation)
        .map_err(|_| JwtError::Invalid)?;
    let registered: Registered =
        serde_json::from_value(data.claims.clone()).map_err(|_| JwtError::Invalid)?;
    if registered.iss != issuer || (check_exp && registered.exp <= now) {
        return Err(JwtError::Invalid);
    }
    serde_json::from_value(data.claims).map_err(|_| JwtError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;
    use serde_json::json;

    fn keys() -> (tempfile::TempDir, KeySet) {
        let dir = tempfile::tempdir().unwrap();
        let set = KeySet::load_or_init(dir.path(), 600, 1_000).unwrap();
        (dir, set)
    }

    const ISS: &str = "https://id.example.com";

    #[test]
    fn round_trip_both_algs() {
        let (_d, k) = keys();
        for alg in SigningAlg::ALL {
            let t = sign(
                &k,
                alg,
                ACCESS_TOKEN_TYP,
                &json!({"iss": ISS, "exp": 2_000, "sub": "a"}),
            )
            .unwrap();
            let v: serde_json::Value = verify(&k, &t, ACCESS_TOKEN_TYP, ISS, 1_999).unwrap();
            assert_eq!(v["sub"], "a");
            assert_eq!(
                verify::<serde_json::Value>(&k, &t, ACCESS_TOKEN_TYP, ISS, 2_000),
                Err(JwtError::Invalid),
                "expired at exp"
            );
            assert!(verify::<serde_json::Value>(&k, &t, ACCESS_TOKEN_TYP, "https://x", 1).is_err());
            assert!(verify::<serde_json::Value>(&k, &t, "JWT", ISS, 1).is_err());
        }
    }

    #[test]
    fn rejects_none_hs256_and_flipped_signatures() {
        let (_d, k) = keys();
        let good = sign(
            &k,
            SigningAlg::ES256,
            ACCESS_TOKEN_TYP,
            &json!({"iss": ISS, "exp": 2_000}),
        )
        .unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        let kid = k.signing_key(SigningAlg::ES256).unwrap().kid.clone();
        let header =
            |alg: &str| B64.encode(json!({"alg": alg, "typ": "at+jwt", "kid": kid}).to_string());
        let none = format!("{}.{}.", header("none"), parts[1]);
        assert!(verify::<serde_json::Value>(&k, &none, ACCESS_TOKEN_TYP, ISS, 1).is_err());
        let flipped = {
            let mut sig = B64.decode(parts[2]).unwrap();
            sig[10] ^= 1;
            format!("{}.{}.{}", parts[0], parts[1], B64.encode(sig))
        };
        assert!(verify::<serde_json::Value>(&k, &flipped, ACCESS_TOKEN_TYP, ISS, 1).is_err());
        // An ES256 token relabelled RS256 under the same kid is refused before any crypto.
        let relabelled = format!("{}.{}.{}", header("RS256"), parts[1], parts[2]);
        assert!(verify::<serde_json::Value>(&k, &relabelled, ACCESS_TOKEN_TYP, ISS, 1).is_err());
    }
}
