//! A `jsonwebtoken` crypto provider that parses each signing key once.
//!
//! The stock aws-lc provider re-parses and re-validates the private key on every signature
//! (about 0.45 ms for RSA-2048, more than the signature itself). This provider keeps the parsed
//! key pairs of RS256 and ES256 keys, keyed by their DER bytes, and delegates everything else
//! (verification, JWK helpers, other algorithms) to the stock provider.

use std::sync::{Arc, OnceLock, RwLock};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER;
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner};
use jsonwebtoken::errors::{ErrorKind, Result as JwtResult};
use jsonwebtoken::signature::{Error as SignatureError, Signer};
use jsonwebtoken::{Algorithm, EncodingKey};

enum KeyPair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

struct CachedSigner {
    alg: Algorithm,
    pair: Arc<KeyPair>,
}

impl Signer<Vec<u8>> for CachedSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignatureError> {
        let rng = SystemRandom::new();
        match &*self.pair {
            KeyPair::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                    .map_err(SignatureError::from_source)?;
                Ok(sig)
            }
            KeyPair::Ec(k) => Ok(k
                .sign(&rng, msg)
                .map_err(SignatureError::from_source)?
                .as_ref()
                .to_vec()),
        }
    }
}

impl JwtSigner for CachedSigner {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

/// (algorithm tag, key DER, parsed pair). Keys come from keys_dir only, a handful at most: a
/// linear scan comparing bytes costs less than hashing the DER, and nothing needs evicting.
type Cache = RwLock<Vec<(u8, Vec<u8>, Arc<KeyPair>)>>;

/// The parsed pair for `der` under `tag`, if it is cached.
fn cached(c: &[(u8, Vec<u8>, Arc<KeyPair>)], tag: u8, der: &[u8]) -> Option<Arc<KeyPair>> {
    c.iter()
        .find(|(t, d, _)| *t == tag && d.as_slice() == der)
        .map(|(_, _, p)| Arc::clone(p))
}

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(Cache::default)
}

fn signer_factory(alg: &Algorithm, key: &EncodingKey) -> JwtResult<Box<dyn JwtSigner>> {
    let tag = match alg {
        Algorithm::RS256 => 0,
        Algorithm::ES256 => 1,
        _ => return (DEFAULT_PROVIDER.signer_factory)(alg, key),
    };
    let der = key.as_bytes();
    let hit = cache().read().ok().and_then(|c| cached(&c, tag, der));
    let pair = match hit {
        Some(p) => p,
        None => {
            let parsed = if tag == 0 {
                KeyPair::Rsa(
                    RsaKeyPair::from_der(der)
                        .map_err(|_| ErrorKind::InvalidRsaKey("not an RSA private key".into()))?,
                )
            } else {
                KeyPair::Ec(
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                        .map_err(|_| ErrorKind::InvalidEcdsaKey)?,
                )
            };
            let pair = Arc::new(parsed);
            if let Ok(mut c) = cache().write() {
                // Another thread may have parsed the same key meanwhile.
                if cached(&c, tag, der).is_none() {
                    c.push((tag, der.to_vec(), Arc::clone(&pair)));
                }
            }
            pair
        }
    };
    Ok(Box::new(CachedSigner { alg: *alg, pair }))
}

/// Install the provider for this process (idempotent, cheap after the first call).
pub fn install() {
    static PROVIDER: OnceLock<CryptoProvider> = OnceLock::new();
    let provider = PROVIDER.get_or_init(|| CryptoProvider {
        signer_factory,
        ..DEFAULT_PROVIDER.clone()
    });
    // Fails only if a provider is already installed, which is then this one.
    let _ = provider.install_default();
}
