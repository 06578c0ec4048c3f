//! Password resets: links, and the one transaction that uses one.

use diesel::prelude::*;

use super::super::schema::{
    authorization_codes, password_resets, pending_mfa, refresh_tokens, sessions, users,
};
use super::{db_err, revoke_family_in, DbStore};
use crate::clock::UnixTime;
use crate::store::{ResetRecord, ResetStore, StoreResult};

impl ResetStore for DbStore {
    fn create_reset(
        &self,
        token_hash: &str,
        user_id: &str,
        now: UnixTime,
        expires_at: UnixTime,
    ) -> StoreResult<()> {
        diesel::insert_into(password_resets::table)
            .values((
                password_resets::token_hash.eq(token_hash),
                password_resets::user_id.eq(user_id),
                password_resets::created_at.eq(now),
                password_resets::expires_at.eq(expires_at),
                password_resets::used_at.eq(None::<i64>),
            ))
            .execute(&mut *self.conn()?)
            .map(|_| ())
            .map_err(db_err)
    }

    fn reset_created_since(&self, user_id: &str, since: UnixTime) -> StoreResult<bool> {
        diesel::select(diesel::dsl::exists(
            password_resets::table
                .filter(password_resets::user_id.eq(user_id))
                .filter(password_resets::created_at.ge(since)),
        ))
        .get_result(&mut *self.conn()?)
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
            // The conditional UPDATE makes the link single-use, even under parallel posts.
            let used = diesel::update(
                password_resets::table
                    .find(token_hash)
                    .filter(password_resets::used_at.is_null())
                    .filter(password_resets::expires_at.gt(now)),
            )
            .set(password_resets::used_at.eq(Some(now)))
            .execute(c)?;
            if used == 0 {
                return Ok(None);
            }
            let user_id: String = password_resets::table
                .find(token_hash)
                .select(password_resets::user_id)
                .first(c)?;
            // A lockout stays: a reset link must not buy an attacker new second-factor guesses.
            let n = diesel::update(users::table.find(&user_id))
                .set(users::password_hash.eq(Some(password_hash)))
                .execute(c)?;
            if n == 0 {
                return Ok(None);
            }
            diesel::delete(sessions::table.filter(sessions::user_id.eq(&user_id))).execute(c)?;
            diesel::delete(pending_mfa::table.filter(pending_mfa::user_id.eq(&user_id)))
                .execute(c)?;
            // Codes not yet redeemed are spent: none may start a family after the reset.
            diesel::update(
                authorization_codes::table
                    .filter(authorization_codes::user_id.eq(&user_id))
                    .filter(authorization_codes::consumed_at.is_null()),
            )
            .set(authorization_codes::consumed_at.eq(Some(now)))
            .execute(c)?;
            let families: Vec<String> = refresh_tokens::table
                .filter(refresh_tokens::user_id.eq(&user_id))
                .filter(refresh_tokens::revoked.eq(false))
                .select(refresh_tokens::family_id)
                .distinct()
                .load(c)?;
            for f in &families {
                revoke_family_in(c, f, now)?;
            }
            // Other links of the same person die with this one.
            diesel::update(
                password_resets::table
                    .filter(password_resets::user_id.eq(&user_id))
                    .filter(password_resets::used_at.is_null()),
            )
            .set(password_resets::used_at.eq(Some(now)))
            .execute(c)?;
            Ok(Some(user_id))
        })
        .map_err(db_err)
    }
}
