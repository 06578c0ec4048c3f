//! Password reset: single-use links valid 30 minutes, stored as SHA-256. Using one sets the new
//! password (same policy as everywhere) and ends every session and every refresh-token family of
//! the person, in one transaction. A lockout stays (`user unlock` ends it).

use crate::clock::UnixTime;
use crate::crypto::opaque;
use crate::store::{ResetRecord, ResetStore, StoreResult};

/// How long a link works.
pub const RESET_TTL_SECS: i64 = 1800;
/// Where links point, under the issuer.
pub const RESET_PATH: &str = "/password/reset";

/// Whether `r` may still be used at `now`.
pub fn usable(r: &ResetRecord, now: UnixTime) -> bool {
    r.used_at.is_none() && now < r.expires_at
}

/// A link just recorded.
#[derive(Debug, Clone)]
pub struct NewLink {
    /// The URL, holding the only copy of the token.
    pub url: String,
    /// When it stops working.
    pub expires_at: UnixTime,
    /// What it is stored under (to delete it if it was never delivered).
    pub token_hash: String,
}

/// A new link for `user_id`; `None` when `quiet_since` is given and a link was made since then.
pub fn create_link(
    store: &(impl ResetStore + ?Sized),
    base_url: &str,
    user_id: &str,
    now: UnixTime,
    quiet_since: Option<UnixTime>,
) -> StoreResult<Option<NewLink>> {
    let token = opaque::random_token();
    let expires_at = now + RESET_TTL_SECS;
    let token_hash = opaque::hash_secret(&token);
    if !store.create_reset(&token_hash, user_id, now, expires_at, quiet_since)? {
        return Ok(None);
    }
    Ok(Some(NewLink {
        url: format!("{base_url}{RESET_PATH}?token={token}"),
        expires_at,
        token_hash,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, FixedClock};

    #[test]
    fn links_work_once_within_thirty_minutes() {
        let clock = FixedClock::new(1_700_000_000);
        let r = ResetRecord {
            user_id: "u".into(),
            expires_at: clock.now() + RESET_TTL_SECS,
            used_at: None,
        };
        assert!(usable(&r, clock.now()));
        clock.advance(RESET_TTL_SECS - 1);
        assert!(usable(&r, clock.now()));
        clock.advance(1);
        assert!(!usable(&r, clock.now()), "expired at 30 minutes");
        let used = ResetRecord {
            used_at: Some(1_700_000_001),
            ..r
        };
        assert!(!usable(&used, 1_700_000_002));
    }
}
