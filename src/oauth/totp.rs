//! The second factor: TOTP (RFC 6238: HMAC-SHA-1, 6 digits, 30 s steps, one step of tolerance
//! either way) through `totp-rs`, each time step accepted once; and ten single-use recovery
//! codes (80 bits each, stored as SHA-256). Wrong codes count toward the account's lockout and
//! the per-address limit, like wrong passwords.

use rand::RngCore;
use totp_rs::{Algorithm, Builder, Secret, Totp};

use crate::clock::UnixTime;
use crate::config::LoginConfig;
use crate::crypto::opaque;
use crate::crypto::seal::Sealer;
use crate::oauth::user::User;
use crate::store::{MfaStore, StoreResult, UserStore};

/// Seconds per time step.
pub const STEP_SECS: u64 = 30;
/// Seed length (160 bits, RFC 4226's recommendation).
const SECRET_BYTES: usize = 20;
/// Recovery codes issued at enrolment.
pub const RECOVERY_CODES: usize = 10;
/// The issuer label shown in authenticator apps.
pub const ISSUER_LABEL: &str = "Portcullis";
/// `amr` after a first factor (`pwd` in DESIGN.md, or `fed`) and a TOTP code.
pub fn amr_with_otp(first_factor: &str) -> Vec<String> {
    let first = if first_factor == "fed" { "fed" } else { "pwd" };
    vec![first.to_owned(), "otp".to_owned(), "mfa".to_owned()]
}

/// A new random seed.
pub fn new_secret() -> Vec<u8> {
    let mut bytes = vec![0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

fn totp(secret: &[u8], account: &str) -> Option<Totp> {
    // The otpauth label may not hold ':' (federated names do; they never enrol).
    let account = account.replace(':', "_");
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(STEP_SECS)
        .with_secret(secret.to_vec())
        .with_issuer(Some(ISSUER_LABEL))
        .with_account_name(account)
        .build()
        .ok()
}

/// The seed in base32, as people type it into an authenticator.
pub fn base32(secret: &[u8]) -> String {
    Secret::from(secret.to_vec()).to_base32()
}

/// The `otpauth://totp/...` URI for QR codes.
pub fn otpauth_uri(secret: &[u8], account: &str) -> Option<String> {
    totp(secret, account)?.to_url().ok()
}

/// The code for `secret` at `now` (tests and the CLI's self-check).
pub fn code_at(secret: &[u8], now: UnixTime) -> Option<String> {
    Some(
        totp(secret, "x")?
            .generate(u64::try_from(now).ok()?)
            .to_string(),
    )
}

/// The time step `code` matches at `now`, within one step either way.
pub fn matching_step(secret: &[u8], code: &str, now: UnixTime) -> Option<i64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let step = totp(secret, "x")?.check(&code, u64::try_from(now).ok()?)?;
    i64::try_from(step).ok()
}

/// Ten new recovery codes, `xxxx-xxxx-xxxx-xxxx` in lower-case base32 (80 bits each).
pub fn new_recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; 10];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            let s = base32(&bytes).to_lowercase();
            format!("{}-{}-{}-{}", &s[0..4], &s[4..8], &s[8..12], &s[12..16])
        })
        .collect()
}

/// The stored form of a recovery code as typed (spaces, dashes and case do not matter).
pub fn recovery_hash(code: &str) -> Option<String> {
    let clean: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (clean.len() == 16).then(|| opaque::hash_secret(&clean))
}

/// The hashes to store for `codes`.
pub fn recovery_hashes(codes: &[String]) -> Vec<String> {
    codes.iter().filter_map(|c| recovery_hash(c)).collect()
}

/// The result of a second-factor attempt.
#[derive(Debug)]
pub enum SecondFactorOutcome {
    /// Accepted; the account's failure count is cleared.
    Success(Box<User>),
    /// Wrong, replayed, or the account is locked (one answer for all); whether this attempt
    /// locked it.
    Failed {
        /// This failure started a lockout.
        locked_now: bool,
    },
    /// Too many failures from this address.
    Throttled,
}

/// Which codes a second-factor check takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// A code from the app, or an unused recovery code (signing in).
    AppOrRecovery,
    /// A code from the app only (minting new recovery codes: one leaked recovery code must not
    /// become ten).
    AppOnly,
}

/// Check `code` (a TOTP code, or a recovery code if `accept` says so) for `user_id`: counted
/// like a password attempt (the attempt is reserved before the check), each TOTP step and
/// recovery code usable once.
#[allow(clippy::too_many_arguments)]
pub fn check_second_factor(
    store: &(impl UserStore + MfaStore + ?Sized),
    sealer: &Sealer,
    policy: &LoginConfig,
    ip: &str,
    user_id: &str,
    code: &str,
    accept: Accept,
    now: UnixTime,
) -> StoreResult<SecondFactorOutcome> {
    let ip_max = i32::try_from(policy.ip_max_failures).unwrap_or(i32::MAX);
    if !store.reserve_ip(ip, now, i64::from(policy.ip_window_secs), ip_max)? {
        return Ok(SecondFactorOutcome::Throttled);
    }
    let (Some(user), Some(record)) = (store.find_user(user_id)?, store.find_totp(user_id)?) else {
        return Ok(SecondFactorOutcome::Failed { locked_now: false });
    };
    if !record.confirmed || !store.reserve_login(user_id, now, policy.max_failed_attempts)? {
        return Ok(SecondFactorOutcome::Failed { locked_now: false });
    }
    let step = match sealer.open(&record.secret_sealed, user_id) {
        Ok(secret) => matching_step(&secret, code, now),
        Err(error) => {
            // Recovery codes are hashes, not sealed: they still work.
            tracing::error!(%error, "TOTP seed cannot be opened (wrong totp key?)");
            None
        }
    };
    let ok = match step {
        Some(step) => store.use_totp_step(user_id, step)?,
        None if accept == Accept::AppOrRecovery => match recovery_hash(code) {
            Some(h) => store.use_recovery_code(user_id, &h, now)?,
            None => false,
        },
        None => false,
    };
    let stands = store.finish_login(
        user_id,
        ok,
        now,
        policy.max_failed_attempts,
        policy.lockout_secs,
    )?;
    if ok && stands {
        store.release_ip(ip)?;
        Ok(SecondFactorOutcome::Success(Box::new(user)))
    } else {
        let locked_now = match crate::oauth::login::failed_after_attempt(store, user.id, now)? {
            crate::oauth::login::LoginOutcome::Failed { locked_now, .. } => locked_now,
            _ => false,
        };
        Ok(SecondFactorOutcome::Failed { locked_now })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6238 appendix B, SHA-1 seed "12345678901234567890", truncated to 6 digits.
    const RFC_SEED: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc_6238_vectors() {
        assert_eq!(code_at(RFC_SEED, 59).unwrap(), "287082");
        assert_eq!(code_at(RFC_SEED, 1_111_111_109).unwrap(), "081804");
        assert_eq!(code_at(RFC_SEED, 1_234_567_890).unwrap(), "005924");
    }

    #[test]
    fn one_step_of_tolerance_each_way() {
        let now = 1_700_000_015;
        let here = now / 30;
        let code = code_at(RFC_SEED, now).unwrap();
        assert_eq!(matching_step(RFC_SEED, &code, now), Some(here));
        let previous = code_at(RFC_SEED, now - 30).unwrap();
        assert_eq!(matching_step(RFC_SEED, &previous, now), Some(here - 1));
        let next = code_at(RFC_SEED, now + 30).unwrap();
        assert_eq!(matching_step(RFC_SEED, &next, now), Some(here + 1));
        let too_old = code_at(RFC_SEED, now - 60).unwrap();
        assert_eq!(matching_step(RFC_SEED, &too_old, now), None);
        assert_eq!(matching_step(RFC_SEED, "12345", now), None);
        assert_eq!(matching_step(RFC_SEED, "abcdef", now), None);
        assert_eq!(
            matching_step(RFC_SEED, &format!(" {code} "), now),
            Some(here)
        );
    }

    #[test]
    fn recovery_codes_are_random_and_typed_loosely() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), 10);
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), 10);
        let c = &codes[0];
        assert_eq!(c.len(), 19);
        assert_eq!(
            recovery_hash(c),
            recovery_hash(&c.to_uppercase().replace('-', " "))
        );
        assert_eq!(recovery_hash("short"), None);
        assert_eq!(recovery_hashes(&codes).len(), 10);
    }

    #[test]
    fn otpauth_uri_names_issuer_and_account() {
        let uri = otpauth_uri(&new_secret(), "alice").unwrap();
        assert!(uri.starts_with("otpauth://totp/Portcullis:alice?"), "{uri}");
        assert!(uri.contains("issuer=Portcullis"));
        assert!(uri.contains("secret="));
        assert_eq!(base32(RFC_SEED), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    }
}
