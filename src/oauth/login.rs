//! Checking a password at sign-in: the per-IP limit, the account lockout, and timing that says
//! nothing about whether the account exists. Blocking (Argon2id): run it off the async workers.

use crate::clock::UnixTime;
use crate::config::LoginConfig;
use crate::crypto::password;
use crate::oauth::user::{normalize_username, User};
use crate::store::{MfaStore, StoreResult, UserStore};

/// A browser session ends after this long without use.
pub const SESSION_IDLE_SECS: i64 = 2 * 3600;
/// And this long after sign-in, whatever the use. Refresh tokens issued without
/// `offline_access` live no longer than that either.
pub const SESSION_ABSOLUTE_SECS: i64 = 12 * 3600;

/// What a sign-in attempt came to.
#[derive(Debug)]
pub enum LoginOutcome {
    /// The password is right and the account may sign in.
    Success(Box<User>),
    /// The password is right; the account's second factor comes next.
    SecondFactor(Box<User>),
    /// Wrong password, unknown or locked account: one answer for all of them. For the audit
    /// log: the account, when there is one, and whether this attempt locked it.
    Failed {
        /// The account tried, if it exists.
        user_id: Option<String>,
        /// This failure started a lockout.
        locked_now: bool,
    },
    /// Too many failures from this address: no password was checked.
    Throttled,
}

/// Check `password` for `username` from client address `ip`.
pub fn check_password<S: UserStore + MfaStore + ?Sized>(
    store: &S,
    policy: &LoginConfig,
    ip: &str,
    username: &str,
    password_given: &str,
    now: UnixTime,
) -> StoreResult<LoginOutcome> {
    let (max, lockout) = (policy.max_failed_attempts, policy.lockout_secs);
    let ip_max = i32::try_from(policy.ip_max_failures).unwrap_or(i32::MAX);
    let ip_window = i64::from(policy.ip_window_secs);
    // Per-IP limit first: past it, no password is even looked at. The attempt is counted
    // before the hash is checked, so parallel guesses cannot outrun the limit.
    if !store.reserve_ip(ip, now, ip_window, ip_max)? {
        return Ok(LoginOutcome::Throttled);
    }
    let user = match normalize_username(username) {
        Ok(name) => store.find_user_by_username(&name)?,
        Err(_) => None,
    };
    // Likewise the account's attempt is reserved first; a locked account gets no reservation
    // but the same hash work and the same answer as a wrong password.
    let reserved = match &user {
        Some(u) => store.reserve_login(&u.id, now, max)?,
        None => false,
    };
    // The hash is verified whatever happens, so timing tells nothing about the account.
    let hash = user.as_ref().and_then(|u| u.password_hash.as_deref());
    let ok = password::verify_password(password_given, hash);
    let Some(u) = user.as_ref().filter(|_| reserved).cloned() else {
        return Ok(LoginOutcome::Failed {
            user_id: user.map(|u| u.id),
            locked_now: false,
        });
    };
    if ok && store.find_totp(&u.id)?.is_some_and(|t| t.confirmed) {
        // The password alone does not clear earlier failures: alternating right passwords
        // with guessed codes must not escape the lockout. The second factor clears them.
        if store.release_login(&u.id, now)? {
            store.release_ip(ip)?;
            return Ok(LoginOutcome::SecondFactor(Box::new(u)));
        }
        return Ok(LoginOutcome::Failed {
            user_id: Some(u.id),
            locked_now: false,
        });
    }
    if store.finish_login(&u.id, ok, now, max, lockout)? {
        store.release_ip(ip)?;
        Ok(LoginOutcome::Success(Box::new(u)))
    } else {
        failed_after_attempt(store, u.id, now)
    }
}

/// A counted failure for `user_id`: whether it locked the account (for the audit log).
pub(crate) fn failed_after_attempt<S: UserStore + ?Sized>(
    store: &S,
    user_id: String,
    now: UnixTime,
) -> StoreResult<LoginOutcome> {
    let locked_now = store
        .find_user(&user_id)?
        .is_some_and(|u| u.locked_until.is_some_and(|t| t > now));
    Ok(LoginOutcome::Failed {
        user_id: Some(user_id),
        locked_now,
    })
}
