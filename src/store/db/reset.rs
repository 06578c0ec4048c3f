//! Password resets: links, and the one transaction that uses one.

use diesel::prelude::*;

use super::super::schema::{
    authorization_codes, password_resets, pending_mfa, refresh_tokens, sessions, users,
};
use super::prepared::{fixed_sql, Bind, Prepared};
use super::{db_err, hold_user_in, revoke_family_in, AnyConnection, DbStore};
use crate::clock::UnixTime;
use crate::store::{ResetRecord, ResetStore, StoreResult};

impl ResetStore for DbStore {
    fn create_reset(
        &self,
        token_hash: &str,
        user_id: &str,
        now: UnixTime,
        expires_at: UnixTime,
        quiet_since: Option<UnixTime>,
    ) -> StoreResult<bool> {
        let mut conn = self.conn()?;
        conn.transaction(|c| {
            if let Some(since) = quiet_since {
                // A no-op UPDATE holds the user's row (PostgreSQL) or the write lock (SQLite):
                // the check and the insert are one step for parallel requests.
                let held = hold_user_in(c, user_id)?;
                let recent = diesel::select(diesel::dsl::exists(
                    password_resets::table
                        .filter(password_resets::user_id.eq(user_id))
                        .filter(password_resets::created_at.ge(since)),
                ))
                .get_result::<bool>(c)?;
                if !held || recent {
                    return Ok(false);
                }
            }
            diesel::insert_into(password_resets::table)
                .values((
                    password_resets::token_hash.eq(token_hash),
                    password_resets::user_id.eq(user_id),
                    password_resets::created_at.eq(now),
                    password_resets::expires_at.eq(expires_at),
                    password_resets::used_at.eq(None::<i64>),
                ))
                .execute(c)?;
            Ok(true)
        })
        .map_err(db_err)
    }

    fn delete_reset(&self, token_hash: &str) -> StoreResult<()> {
        diesel::delete(
            password_resets::table
                .find(token_hash)
                .filter(password_resets::used_at.is_null()),
        )
        .execute(&mut *self.conn()?)
        .map(|_| ())
        .map_err(db_err)
    }

    fn find_reset(&self, token_hash: &str) -> StoreResult<Option<ResetRecord>> {
        password_resets::table
            .find(token_hash)
            .select((
                password_resets::user_id,
                password_resets::expires_at,
                password_resets::used_at,
            ))
            .first::<(String, i64, Option<i64>)>(&mut *self.conn()?)
            .optional()
            .map(|r| {
                r.map(|(user_id, expires_at, used_at)| ResetRecord {
                    user_id,
                    expires_at,
                    used_at,
                })
            })
            .map_err(db_err)
    }

    fn complete_reset(
        &self,
        token_hash: &str,
        password_hash: &str,
        now: UnixTime,
    ) -> StoreResult<Option<String>> {
        let mut conn = self.conn()?;
        conn.transaction(|c| {
            // The user's row first, then the link, as everywhere (`user set-password` and a
            // second link of the same person lock in that order too: no deadlock). A write
            // first, so that SQLite takes its write lock before reading anything.
            let held = Prepared::<HoldLinkUser>::fixed(vec![Bind::Text(token_hash)]).execute(c)?;
            let Some(user_id) = password_resets::table
                .find(token_hash)
                .select(password_resets::user_id)
                .first::<String>(c)
                .optional()?
            else {
                return Ok(None);
            };
            // The conditional UPDATE makes the link single-use, even under parallel posts.
            let used = diesel::update(
                password_resets::table
                    .find(token_hash)
                    .filter(password_resets::used_at.is_null())
                    .filter(password_resets::expires_at.gt(now)),
            )
            .set(password_resets::used_at.eq(Some(now)))
            .execute(c)?;
            if held == 0 || used == 0 {
                return Ok(None);
            }
            if !replace_password_in(c, &user_id, password_hash, now)? {
                return Ok(None);
            }
            Ok(Some(user_id))
        })
        .map_err(db_err)
    }
}

fixed_sql!(
    /// Hold (no-op UPDATE) the row of the user a reset link belongs to.
    HoldLinkUser,
    "UPDATE users SET id = id \
     WHERE id = (SELECT user_id FROM password_resets WHERE token_hash = $1)"
);

fixed_sql!(
    /// Deny-list the live access tokens a person's codes issued (those of clients without
    /// refresh tokens have no family to reach them through).
    RevokeUserCodeAccess,
    "INSERT INTO revoked_tokens (jti, expires_at) \
     SELECT access_jti, access_exp FROM authorization_codes \
     WHERE user_id = $1 AND access_jti IS NOT NULL AND access_exp > $2 \
     ON CONFLICT (jti) DO NOTHING"
);

/// Give `user_id` a new password hash and end everything the old password opened: sessions,
/// second-factor steps in progress, unredeemed codes, refresh-token families, live access
/// tokens, and other reset links (inside a transaction). False when there is no such user.
pub(super) fn replace_password_in(
    c: &mut AnyConnection,
    user_id: &str,
    password_hash: &str,
    now: UnixTime,
) -> QueryResult<bool> {
    // A lockout stays: a new password must not buy an attacker new second-factor guesses.
    let n = diesel::update(users::table.find(user_id))
        .set(users::password_hash.eq(Some(password_hash)))
        .execute(c)?;
    if n == 0 {
        return Ok(false);
    }
    diesel::delete(sessions::table.filter(sessions::user_id.eq(user_id))).execute(c)?;
    diesel::delete(pending_mfa::table.filter(pending_mfa::user_id.eq(user_id))).execute(c)?;
    // Codes not yet redeemed are spent: none may start a family after the change.
    diesel::update(
        authorization_codes::table
            .filter(authorization_codes::user_id.eq(user_id))
            .filter(authorization_codes::consumed_at.is_null()),
    )
    .set(authorization_codes::consumed_at.eq(Some(now)))
    .execute(c)?;
    let families: Vec<String> = refresh_tokens::table
        .filter(refresh_tokens::user_id.eq(user_id))
        .filter(refresh_tokens::revoked.eq(false))
        .select(refresh_tokens::family_id)
        .distinct()
        .load(c)?;
    for f in &families {
        revoke_family_in(c, f, now)?;
    }
    Prepared::<RevokeUserCodeAccess>::fixed(vec![Bind::Text(user_id), Bind::BigInt(now)])
        .execute(c)?;
    diesel::update(
        password_resets::table
            .filter(password_resets::user_id.eq(user_id))
            .filter(password_resets::used_at.is_null()),
    )
    .set(password_resets::used_at.eq(Some(now)))
    .execute(c)?;
    Ok(true)
}
