//! Signing keys: PEM files in `keys_dir`, generation with `rsa` / `p256`, RFC 7638 `kid`s, JWKS.
//!
//! Each key is `{kid}.pem` (PKCS#8, mode 0600) with a sidecar `{kid}.json` holding its algorithm,
//! creation and retirement times. Replicas share the folder, so its files are the source of truth;
//! a PEM dropped in without a sidecar is loaded with its file time as creation time.
//!
//! States (`keys list`): `active` signs (the newest non-retired key of its alg), `published` is in
//! the JWKS without signing (an older key, or a retired one whose tokens may still be alive), and
//! `retired` has left the JWKS because every token it signed has expired.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::UnixTime;

/// The JWS algorithms we sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SigningAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256, RSA-2048 keys.
    RS256,
    /// ECDSA P-256 with SHA-256.
    ES256,
}

impl SigningAlg {
    /// Both, in a fixed order.
    pub const ALL: [SigningAlg; 2] = [SigningAlg::RS256, SigningAlg::ES256];

    /// The name used in JOSE headers and JWKS.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlg::RS256 => "RS256",
            SigningAlg::ES256 => "ES256",
        }
    }

    /// The `jsonwebtoken` algorithm.
    pub fn jwt_alg(self) -> Algorithm {
        match self {
            SigningAlg::RS256 => Algorithm::RS256,
            SigningAlg::ES256 => Algorithm::ES256,
        }
    }

    /// Parse "RS256" / "ES256".
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "RS256" => Some(SigningAlg::RS256),
            "ES256" => Some(SigningAlg::ES256),
            _ => None,
        }
    }
}

impl std::fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Extra time a retired key stays published: replicas re-read keys_dir every few seconds and
/// may sign with it until then, and clocks differ a little.
pub const RETIRE_GRACE_SECS: i64 = 60;
/// A generated key is published this long before it signs, when an older key of its algorithm
/// can sign meanwhile: every server re-reads the keys folder within 5 s, so by the time any of
/// them signs with the new key, all of them accept its tokens.
pub const PUBLISH_BEFORE_SIGN_SECS: i64 = 10;

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Signs new tokens.
    Active,
    /// Published in the JWKS, not signing.
    Published,
    /// Out of the JWKS.
    Retired,
}

/// Errors of key handling.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// File system trouble.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A file that is not a usable key.
    #[error("{path}: {why}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// No key with that kid.
    #[error("no key with kid {0}")]
    UnknownKid(String),
    /// Key generation failed.
    #[error("key generation failed: {0}")]
    Generate(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyMeta {
    alg: SigningAlg,
    created_at: UnixTime,
    #[serde(default)]
    retired_at: Option<UnixTime>,
}

/// One loaded key pair.
#[derive(Clone)]
pub struct SigningKey {
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// The algorithm this key is pinned to.
    pub alg: SigningAlg,
    /// When it was generated.
    pub created_at: UnixTime,
    /// When it stopped signing, if it did.
    pub retired_at: Option<UnixTime>,
    /// Private key for `jsonwebtoken`.
    pub encoding: EncodingKey,
    /// Public key for `jsonwebtoken`.
    pub decoding: DecodingKey,
    /// Public JWK with `kid`, `use`, `alg`.
    pub jwk: serde_json::Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// The state of this key at `now`, given whether it is its alg's signing key.
    pub fn state(&self, now: UnixTime, max_jwt_ttl: i64, is_signing: bool) -> KeyState {
        match self.retired_at {
            // A retirement may lie ahead (the only key of its algorithm signs on while its
            // successor is published).
            Some(t) if now >= t => {
                if now < t.saturating_add(max_jwt_ttl + RETIRE_GRACE_SECS) {
                    KeyState::Published
                } else {
                    KeyState::Retired
                }
            }
            _ if is_signing => KeyState::Active,
            _ => KeyState::Published,
        }
    }
}

enum Private {
    Rsa(Box<rsa::RsaPrivateKey>),
    Ec(p256::SecretKey),
}

impl Private {
    fn alg(&self) -> SigningAlg {
        match self {
            Private::Rsa(_) => SigningAlg::RS256,
            Private::Ec(_) => SigningAlg::ES256,
        }
    }

    fn generate(alg: SigningAlg) -> Result<Self, KeyError> {
        let mut rng = rand::rngs::OsRng;
        Ok(match alg {
            SigningAlg::RS256 => Private::Rsa(Box::new(
                rsa::RsaPrivateKey::new(&mut rng, 2048)
                    .map_err(|e| KeyError::Generate(e.to_string()))?,
            )),
            SigningAlg::ES256 => Private::Ec(p256::SecretKey::random(&mut rng)),
        })
    }

    /// PKCS#8 PEM, and PKCS#1 (RSA) for the benefit of some tools, are both accepted.
    fn from_pem(pem: &str) -> Option<Self> {
        if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_pem(pem) {
            return Some(Private::Rsa(Box::new(k)));
        }
        if let Ok(k) = p256::SecretKey::from_pkcs8_pem(pem) {
            return Some(Private::Ec(k));
        }
        if let Ok(k) = <rsa::RsaPrivateKey as rsa::pkcs1::DecodeRsaPrivateKey>::from_pkcs1_pem(pem)
        {
            return Some(Private::Rsa(Box::new(k)));
        }
        p256::SecretKey::from_sec1_pem(pem).ok().map(Private::Ec)
    }

    fn to_pem(&self) -> Result<String, KeyError> {
        let pem = match self {
            Private::Rsa(k) => k.to_pkcs8_pem(LineEnding::LF),
            Private::Ec(k) => k.to_pkcs8_pem(LineEnding::LF),
        };
        pem.map(|p| p.to_string())
            .map_err(|e| KeyError::Generate(e.to_string()))
    }

    /// The RFC 7638 required members, in lexicographic order.
    fn thumbprint_members(&self) -> BTreeMap<&'static str, String> {
        let mut m = BTreeMap::new();
        match self {
            Private::Rsa(k) => {
                m.insert("e", B64.encode(k.e().to_bytes_be()));
                m.insert("kty", "RSA".into());
                m.insert("n", B64.encode(k.n().to_bytes_be()));
            }
            Private::Ec(k) => {
                let point = p256::EncodedPoint::from(k.public_key());
                m.insert("crv", "P-256".into());
                m.insert("kty", "EC".into());
                m.insert("x", B64.encode(point.x().map(|x| &x[..]).unwrap_or(&[])));
                m.insert("y", B64.encode(point.y().map(|y| &y[..]).unwrap_or(&[])));
            }
        }
        m
    }

    fn into_signing_key(self, meta: &KeyMeta, path: &Path) -> Result<SigningKey, KeyError> {
        let bad = |why: String| KeyError::BadKey {
            path: path.to_owned(),
            why,
        };
        if self.alg() != meta.alg {
            return Err(bad(format!(
                "sidecar says {} but the key is for {}",
                meta.alg,
                self.alg()
            )));
        }
        let members = self.thumbprint_members();
        // RFC 7638 3: the JSON of the required members, sorted, without whitespace.
        let canonical = serde_json::to_string(&members).map_err(|e| bad(e.to_string()))?;
        let kid = B64.encode(Sha256::digest(canonical.as_bytes()));
        let (encoding, decoding) = match &self {
            Private::Rsa(k) => {
                if k.size() < 256 {
                    return Err(bad("RSA keys must have at least 2048 bits".into()));
                }
                let der = k.to_pkcs1_der().map_err(|e| bad(e.to_string()))?;
                (
                    EncodingKey::from_rsa_der(der.as_bytes()),
                    DecodingKey::from_rsa_raw_components(
                        &k.n().to_bytes_be(),
                        &k.e().to_bytes_be(),
                    ),
                )
            }
            Private::Ec(k) => {
                let der = k.to_pkcs8_der().map_err(|e| bad(e.to_string()))?;
                let point = p256::EncodedPoint::from(k.public_key());
                (
                    EncodingKey::from_ec_der(der.as_bytes()),
                    DecodingKey::from_ec_der(point.as_bytes()),
                )
            }
        };
        let mut jwk = serde_json::Map::new();
        for (k, v) in members {
            jwk.insert(k.into(), v.into());
        }
        jwk.insert("kid".into(), kid.clone().into());
        jwk.insert("use".into(), "sig".into());
        jwk.insert("alg".into(), meta.alg.as_str().into());
        Ok(SigningKey {
            kid,
            alg: meta.alg,
            created_at: meta.created_at,
            retired_at: meta.retired_at,
            encoding,
            decoding,
            jwk: jwk.into(),
        })
    }
}

/// The keys of one `keys_dir`.
#[derive(Debug, Clone)]
pub struct KeySet {
    keys: Vec<SigningKey>,
    max_jwt_ttl: i64,
    /// The time signing keys are chosen at (see [`PUBLISH_BEFORE_SIGN_SECS`]).
    as_of: UnixTime,
}

/// A summary line of `keys list`.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub alg: SigningAlg,
    /// Life state.
    pub state: KeyState,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

impl KeySet {
    /// Load every `*.pem` in `dir` (which must exist); each algorithm's newest unretired key
    /// signs, however young.
    pub fn load(dir: &Path, max_jwt_ttl: i64) -> Result<Self, KeyError> {
        Self::load_at(dir, max_jwt_ttl, UnixTime::MAX)
    }

    /// Load every `*.pem` in `dir` as of `now`: a key younger than [`PUBLISH_BEFORE_SIGN_SECS`]
    /// signs only if it is its algorithm's only unretired key (see [`KeySet::signing_key`]).
    pub fn load_at(dir: &Path, max_jwt_ttl: i64, now: UnixTime) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let path = entry.map_err(io_err(dir))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("pem") {
                continue;
            }
            keys.push(load_key(&path)?);
        }
        // One entry per key, however many files hold it (a copy under another name): the
        // earliest creation and the earliest retirement of its copies, so that retiring the
        // key retires it whichever file the retirement was written beside.
        let mut merged: Vec<SigningKey> = Vec::with_capacity(keys.len());
        for key in keys {
            match merged.iter_mut().find(|k| k.kid == key.kid) {
                Some(k) => {
                    k.created_at = k.created_at.min(key.created_at);
                    k.retired_at = match (k.retired_at, key.retired_at) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                None => merged.push(key),
            }
        }
        let mut keys = merged;
        // Newest first, so the first match per alg is its signing key.
        keys.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.kid.cmp(&b.kid))
        });
        Ok(Self {
            keys,
            max_jwt_ttl,
            as_of: now,
        })
    }

    /// The same keys, with signing keys chosen as of `now`.
    pub fn at(&self, now: UnixTime) -> Self {
        Self {
            as_of: now,
            ..self.clone()
        }
    }

    /// Create `dir` if needed, generate a key for every alg that has no active one, then load.
    /// On a fresh folder that is one RS256 and one ES256 key.
    pub fn load_or_init(dir: &Path, max_jwt_ttl: i64, now: UnixTime) -> Result<Self, KeyError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let set = Self::load_at(dir, max_jwt_ttl, now)?;
        let missing: Vec<_> = SigningAlg::ALL
            .into_iter()
            .filter(|alg| set.signing_key(*alg).is_none())
            .collect();
        if missing.is_empty() {
            return Ok(set);
        }
        for alg in missing {
            generate(dir, alg, now)?;
        }
        Self::load_at(dir, max_jwt_ttl, now)
    }

    /// The key that signs new tokens of `alg`: the newest one not retired that has been
    /// published for [`PUBLISH_BEFORE_SIGN_SECS`] as of loading, else (all of them younger) the
    /// oldest one not retired, the one published longest.
    pub fn signing_key(&self, alg: SigningAlg) -> Option<&SigningKey> {
        let mut unretired = self
            .keys
            .iter()
            .filter(|k| k.alg == alg && !retired_by(k, self.as_of));
        let oldest = unretired.clone().next_back();
        unretired.find(|k| signs_from(k) <= self.as_of).or(oldest)
    }

    /// Whether a key too young to sign when this set was loaded may sign at `now` (the set
    /// should then be loaded again).
    pub fn matures_by(&self, now: UnixTime) -> bool {
        self.keys.iter().any(|k| {
            let matures = !retired_by(k, now) && self.as_of < signs_from(k) && signs_from(k) <= now;
            let retires = k.retired_at.is_some_and(|t| self.as_of < t && t <= now);
            matures || retires
        })
    }

    /// A key by `kid`, if it is still published at `now`; used to verify our own tokens.
    pub fn verifying_key(&self, kid: &str, now: UnixTime) -> Option<&SigningKey> {
        self.keys
            .iter()
            .find(|k| k.kid == kid && self.state(k, now) != KeyState::Retired)
    }

    fn state(&self, k: &SigningKey, now: UnixTime) -> KeyState {
        let signing = self.signing_key(k.alg).is_some_and(|s| s.kid == k.kid);
        k.state(now, self.max_jwt_ttl, signing)
    }

    /// Every key with its state, newest first.
    pub fn list(&self, now: UnixTime) -> Vec<KeyInfo> {
        self.keys
            .iter()
            .map(|k| KeyInfo {
                kid: k.kid.clone(),
                alg: k.alg,
                state: self.state(k, now),
            })
            .collect()
    }

    /// The RFC 7517 JWK Set of every published key.
    pub fn jwks(&self, now: UnixTime) -> serde_json::Value {
        let keys: Vec<_> = self
            .keys
            .iter()
            .filter(|k| self.state(k, now) != KeyState::Retired)
            .map(|k| k.jwk.clone())
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// Algorithms that currently have a signing key.
    pub fn algs(&self) -> Vec<SigningAlg> {
        SigningAlg::ALL
            .into_iter()
            .filter(|a| self.signing_key(*a).is_some())
            .collect()
    }
}

/// Whether `k` no longer signs at `t`.
fn retired_by(k: &SigningKey, t: UnixTime) -> bool {
    k.retired_at.is_some_and(|r| r <= t)
}

/// When `k` may sign if an older key of its algorithm can meanwhile.
fn signs_from(k: &SigningKey) -> UnixTime {
    k.created_at.saturating_add(PUBLISH_BEFORE_SIGN_SECS)
}

fn meta_path(pem: &Path) -> PathBuf {
    pem.with_extension("json")
}

fn load_key(path: &Path) -> Result<SigningKey, KeyError> {
    let pem = fs::read_to_string(path).map_err(io_err(path))?;
    let private = Private::from_pem(&pem).ok_or_else(|| KeyError::BadKey {
        path: path.to_owned(),
        why: "not an RSA or P-256 private key in PEM".into(),
    })?;
    let meta_file = meta_path(path);
    let meta = match fs::read(&meta_file) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| KeyError::BadKey {
            path: meta_file.clone(),
            why: e.to_string(),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let created_at = fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            KeyMeta {
                alg: private.alg(),
                created_at,
                retired_at: None,
            }
        }
        Err(e) => return Err(io_err(&meta_file)(e)),
    };
    private.into_signing_key(&meta, path)
}

/// Write `bytes` to `path` atomically (temporary file, then rename), readable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let tmp = path.with_extension("tmp");
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Generate a key of `alg` in `dir`; returns its kid.
pub fn generate(dir: &Path, alg: SigningAlg, now: UnixTime) -> Result<String, KeyError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let private = Private::generate(alg)?;
    // "Newest" must be unambiguous even for keys made within the same second.
    let newest = KeySet::load(dir, 0)?
        .keys
        .iter()
        .filter(|k| k.alg == alg)
        .map(|k| k.created_at)
        .max();
    let meta = KeyMeta {
        alg,
        created_at: newest.map_or(now, |t| now.max(t + 1)),
        retired_at: None,
    };
    let pem = private.to_pem()?;
    let placeholder = dir.join("new.pem");
    let key = private.into_signing_key(&meta, &placeholder)?;
    let path = dir.join(format!("{}.pem", key.kid));
    // Sidecar first: a PEM never appears without its metadata.
    let meta_json =
        serde_json::to_vec_pretty(&meta).map_err(|e| KeyError::Generate(e.to_string()))?;
    write_private(&meta_path(&path), &meta_json)?;
    write_private(&path, pem.as_bytes())?;
    Ok(key.kid)
}

/// Mark the key `kid` in `dir` retired (it leaves the JWKS once tokens it signed have expired).
/// It stops signing at once if another key of its algorithm can take over; if it is the last,
/// a successor is generated first and the key signs on for [`PUBLISH_BEFORE_SIGN_SECS`], so
/// that every replica has the successor's public key before any token carries its kid.
pub fn retire(dir: &Path, kid: &str, now: UnixTime) -> Result<(), KeyError> {
    let set = KeySet::load(dir, 0)?;
    let key = set
        .keys
        .iter()
        .find(|k| k.kid == kid)
        .ok_or_else(|| KeyError::UnknownKid(kid.to_owned()))?;
    let path = dir.join(format!("{kid}.pem"));
    if !path.exists() {
        // The key was loaded from a file with another name; find it to place the sidecar.
        return Err(KeyError::BadKey {
            path,
            why: "key files must be named {kid}.pem to be retired".into(),
        });
    }
    // Whichever key takes over must have been published for PUBLISH_BEFORE_SIGN_SECS: the
    // retired key signs on until the first of the others may.
    let takes_over = set
        .keys
        .iter()
        .filter(|k| k.alg == key.alg && k.kid != key.kid && k.retired_at.is_none())
        .map(signs_from)
        .min();
    let mut successor = None;
    let retired_at = match (key.retired_at, takes_over) {
        (Some(t), _) => t,
        (None, Some(t)) => t.max(now),
        (None, None) => {
            successor = Some(generate(dir, key.alg, now)?);
            now + PUBLISH_BEFORE_SIGN_SECS
        }
    };
    let meta = KeyMeta {
        alg: key.alg,
        created_at: key.created_at,
        retired_at: Some(retired_at),
    };
    let written = serde_json::to_vec_pretty(&meta)
        .map_err(|e| KeyError::Generate(e.to_string()))
        .and_then(|json| write_private(&meta_path(&path), &json));
    if written.is_err() {
        // A failed retirement changes nothing: without it the successor would simply start
        // signing beside the old key.
        if let Some(new) = successor {
            let pem = dir.join(format!("{new}.pem"));
            let _ = fs::remove_file(meta_path(&pem));
            let _ = fs::remove_file(pem);
        }
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_generates_one_key_per_alg_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let set = KeySet::load_or_init(dir.path(), 600, 1_000).unwrap();
        assert_eq!(set.algs(), vec![SigningAlg::RS256, SigningAlg::ES256]);
        let list = set.list(1_000);
        assert_eq!(list.len(), 2);
        assert!(list.iter().all(|k| k.state == KeyState::Active));
        #[cfg(unix)]
        for entry in fs::read_dir(dir.path()).unwrap() {
            use std::os::unix::fs::PermissionsExt;
            let mode = entry.unwrap().metadata().unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A second start loads, it does not generate again.
        let again = KeySet::load_or_init(dir.path(), 600, 2_000).unwrap();
        assert_eq!(again.list(2_000).len(), 2);
    }

    #[test]
    fn a_failed_retirement_leaves_no_successor() {
        let dir = tempfile::tempdir().unwrap();
        let set = KeySet::load_or_init(dir.path(), 600, 1_000).unwrap();
        let es = set.signing_key(SigningAlg::ES256).unwrap().kid.clone();
        // The sidecar's temporary file cannot be created.
        fs::create_dir(dir.path().join(format!("{es}.tmp"))).unwrap();
        assert!(retire(dir.path(), &es, 2_000).is_err());
        let after = KeySet::load_at(dir.path(), 600, 3_000).unwrap();
        assert_eq!(after.list(3_000).len(), 2, "{:?}", after.list(3_000));
        assert_eq!(after.signing_key(SigningAlg::ES256).unwrap().kid, es);
    }

    /// A key held by two files (a copy under another name) is one key: retiring it retires
    /// it, and it leaves the JWKS when its tokens have expired.
    #[test]
    fn a_copied_key_file_is_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = generate(dir.path(), SigningAlg::RS256, 1_000).unwrap();
        std::fs::copy(
            dir.path().join(format!("{a}.pem")),
            dir.path().join("copy.pem"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("copy.json"),
            r#"{"alg":"RS256","created_at":500}"#,
        )
        .unwrap();
        // A key whose creation lies between the copies'.
        generate(dir.path(), SigningAlg::ES256, 700).unwrap();
        assert_eq!(
            KeySet::load_at(dir.path(), 600, 1_500)
                .unwrap()
                .list(1_500)
                .len(),
            2
        );
        retire(dir.path(), &a, 2_000).unwrap();
        let later = KeySet::load_at(dir.path(), 600, 3_000).unwrap();
        assert!(later.verifying_key(&a, 3_000).is_none());
        assert!(!serde_json::to_string(&later.jwks(3_000))
            .unwrap()
            .contains(&a));
        assert_ne!(
            later.signing_key(SigningAlg::RS256).map(|k| k.kid.as_str()),
            Some(a.as_str())
        );
    }

    #[test]
    fn kid_is_rfc7638_thumbprint() {
        // RFC 7638 section 3.1 example key.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let members: BTreeMap<&str, String> = [
            ("e", "AQAB".to_string()),
            ("kty", "RSA".into()),
            ("n", n.into()),
        ]
        .into();
        let canonical = serde_json::to_string(&members).unwrap();
        assert_eq!(
            B64.encode(Sha256::digest(canonical.as_bytes())),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn a_generated_key_is_published_before_it_signs() {
        let dir = tempfile::tempdir().unwrap();
        let set = KeySet::load_or_init(dir.path(), 600, 1_000).unwrap();
        let old = set.signing_key(SigningAlg::ES256).unwrap().kid.clone();
        let new = generate(dir.path(), SigningAlg::ES256, 2_000).unwrap();
        let signer = |now| {
            let set = KeySet::load_at(dir.path(), 600, now).unwrap();
            let published = set.jwks(now)["keys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kid"] == new.as_str());
            assert!(published, "published at once ({now})");
            set.signing_key(SigningAlg::ES256).unwrap().kid.clone()
        };
        assert_eq!(signer(2_000), old);
        assert_eq!(signer(2_000 + PUBLISH_BEFORE_SIGN_SECS - 1), old);
        assert_eq!(signer(2_000 + PUBLISH_BEFORE_SIGN_SECS), new);
        let young = KeySet::load_at(dir.path(), 600, 2_003).unwrap();
        let state = |kid: &str| {
            young
                .list(2_003)
                .into_iter()
                .find(|k| k.kid == kid)
                .unwrap()
        };
        assert_eq!(state(&new).state, KeyState::Published);
        assert_eq!(state(&old).state, KeyState::Active);
        assert!(!young.matures_by(2_009) && young.matures_by(2_010));
        let third = generate(dir.path(), SigningAlg::ES256, 2_001).unwrap();
        let both_young = KeySet::load_at(dir.path(), 600, 2_005).unwrap();
        let after = |now| KeySet::load_at(dir.path(), 600, now).unwrap();
        assert_eq!(both_young.signing_key(SigningAlg::ES256).unwrap().kid, old);
        assert_eq!(
            after(2_010).signing_key(SigningAlg::ES256).unwrap().kid,
            new
        );
        assert_eq!(
            after(2_011).signing_key(SigningAlg::ES256).unwrap().kid,
            third
        );
        // Retiring the mature key while the others are young: it signs on until the first of
        // them has been published for 10 s, then that one signs.
        retire(dir.path(), &old, 2_004).unwrap();
        let signer_at = |now| {
            KeySet::load_at(dir.path(), 600, now)
                .unwrap()
                .signing_key(SigningAlg::ES256)
                .unwrap()
                .kid
                .clone()
        };
        assert_eq!(signer_at(2_004), old);
        assert_eq!(signer_at(2_009), old);
        assert_eq!(signer_at(2_010), new);
    }

    #[test]
    fn retiring_the_last_key_publishes_its_successor_before_it_signs() {
        let dir = tempfile::tempdir().unwrap();
        let set = KeySet::load_or_init(dir.path(), 600, 1_000).unwrap();
        let old = set.signing_key(SigningAlg::ES256).unwrap().kid.clone();
        retire(dir.path(), &old, 2_000).unwrap();
        let at = |now| KeySet::load_at(dir.path(), 600, now).unwrap();
        let es256: Vec<KeyInfo> = at(2_000)
            .list(2_000)
            .into_iter()
            .filter(|k| k.alg == SigningAlg::ES256)
            .collect();
        assert_eq!(es256.len(), 2, "a successor: {es256:?}");
        let new = es256.iter().find(|k| k.kid != old).unwrap().kid.clone();
        let state = |now, kid: &str| {
            at(now)
                .list(now)
                .into_iter()
                .find(|k| k.kid == kid)
                .unwrap()
        };
        assert_eq!(state(2_000, &old).state, KeyState::Active);
        assert_eq!(state(2_000, &new).state, KeyState::Published);
        let signer = |now| at(now).signing_key(SigningAlg::ES256).unwrap().kid.clone();
        assert_eq!(signer(2_000 + PUBLISH_BEFORE_SIGN_SECS - 1), old);
        assert_eq!(signer(2_000 + PUBLISH_BEFORE_SIGN_SECS), new);
        assert_eq!(
            state(2_000 + PUBLISH_BEFORE_SIGN_SECS, &old).state,
            KeyState::Published,
            "still verifies what it signed"
        );
        assert!(
            at(2_005).matures_by(2_010),
            "a replica reloads when it hands over"
        );
        // Retiring it again changes nothing; the successor is not the last key any more.
        retire(dir.path(), &old, 2_020).unwrap();
        assert_eq!(at(2_020).list(2_020).len(), 3);

        // A key that cannot be retired (its file is not named after its kid) gets no successor.
        let rs = at(2_030)
            .signing_key(SigningAlg::RS256)
            .unwrap()
            .kid
            .clone();
        fs::rename(
            dir.path().join(format!("{rs}.pem")),
            dir.path().join("renamed.pem"),
        )
        .unwrap();
        assert!(retire(dir.path(), &rs, 2_030).is_err());
        assert_eq!(at(2_030).list(2_030).len(), 3, "nothing generated");
    }

    #[test]
    fn retired_key_stops_signing_then_leaves_jwks() {
        let dir = tempfile::tempdir().unwrap();
        let set = KeySet::load_or_init(dir.path(), 600, 1_000).unwrap();
        let old = set.signing_key(SigningAlg::ES256).unwrap().kid.clone();
        let new = generate(dir.path(), SigningAlg::ES256, 1_500).unwrap();
        let set = KeySet::load(dir.path(), 600).unwrap();
        assert_eq!(set.signing_key(SigningAlg::ES256).unwrap().kid, new);
        retire(dir.path(), &old, 2_000).unwrap();
        let set = KeySet::load(dir.path(), 600).unwrap();
        let kids = |now| -> Vec<String> {
            set.jwks(now)["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_owned())
                .collect()
        };
        assert!(kids(2_659).contains(&old));
        assert!(set.verifying_key(&old, 2_659).is_some());
        assert!(!kids(2_660).contains(&old));
        assert!(set.verifying_key(&old, 2_660).is_none());
        assert!(kids(2_660).contains(&new));
        let jwk = &set.jwks(2_000)["keys"][0];
        assert!(jwk.get("d").is_none(), "private part published");
    }
}
