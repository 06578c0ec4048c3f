//! Second-factor storage: TOTP enrolments, recovery codes, pending second-factor steps.

use diesel::prelude::*;

use super::super::schema::{pending_mfa, recovery_codes, sessions, user_totp};
use super::prepared::{fixed_sql, Bind, Prepared};
use super::{db_err, hold_user_in, DbStore};

fixed_sql!(
    /// A new unconfirmed seed, unless a row (a confirmed one) is there.
    BeginTotp,
    "INSERT INTO user_totp (user_id, secret_sealed, confirmed, last_step, created_at) \
     VALUES ($1, $2, false, NULL, $3) ON CONFLICT (user_id) DO NOTHING"
);
use crate::clock::UnixTime;
use crate::store::{MfaStore, PendingMfa, StoreResult, TotpRecord};

fn insert_codes(
    c: &mut super::AnyConnection,
    user_id: &str,
    hashes: &[String],
) -> QueryResult<usize> {
    diesel::delete(recovery_codes::table.filter(recovery_codes::user_id.eq(user_id))).execute(c)?;
    // One row at a time: batch inserts are not portable across the two backends.
    for h in hashes {
        diesel::insert_into(recovery_codes::table)
            .values((
                recovery_codes::user_id.eq(user_id),
                recovery_codes::code_hash.eq(h),
                recovery_codes::used_at.eq(None::<i64>),
            ))
            .execute(c)?;
    }
    Ok(hashes.len())
}

impl MfaStore for DbStore {
    fn find_totp(&self, user_id: &str) -> StoreResult<Option<TotpRecord>> {
        user_totp::table
            .find(user_id)
            .select((
                user_totp::secret_sealed,
                user_totp::confirmed,
                user_totp::last_step,
                user_totp::created_at,
            ))
            .first::<(String, bool, Option<i64>, i64)>(&mut *self.conn()?)
            .optional()
            .map(|r| {
                r.map(
                    |(secret_sealed, confirmed, last_step, created_at)| TotpRecord {
                        created_at,
                        secret_sealed,
                        confirmed,
                        last_step,
                    },
                )
            })
            .map_err(db_err)
    }

    fn begin_totp(&self, user_id: &str, secret_sealed: &str, now: UnixTime) -> StoreResult<bool> {
        let mut conn = self.conn()?;
        conn.transaction(|c| {
            // Write first: on SQLite a transaction that reads first cannot wait for another
            // process's writer (the CLI's `user totp`) when it comes to write; it fails at once.
            // On PostgreSQL this holds the user's row, first as everywhere else.
            if !hold_user_in(c, user_id)? {
                return Ok(false);
            }
            let confirmed = user_totp::table
                .find(user_id)
                .select(user_totp::confirmed)
                .first::<bool>(c)
                .optional()?;
            if confirmed == Some(true) {
                return Ok(false);
            }
            // Only an unconfirmed seed is replaced: on PostgreSQL a confirmation committing
            // meanwhile makes this DELETE re-check the row and leave it, and the INSERT then
            // finds it there and writes nothing.
            diesel::delete(
                user_totp::table
                    .find(user_id)
                    .filter(user_totp::confirmed.eq(false)),
            )
            .execute(c)?;
            let inserted = Prepared::<BeginTotp>::fixed(vec![
                Bind::Text(user_id),
                Bind::Text(secret_sealed),
                Bind::BigInt(now),
            ])
            .execute(c)?;
            Ok(inserted == 1)
        })
        .map_err(db_err)
    }

    fn confirm_totp(
        &self,
        user_id: &str,
        begun_sealed: &str,
        sealed: &str,
        step: i64,
        recovery_hashes: &[String],
    ) -> StoreResult<bool> {
        let mut conn = self.conn()?;
        conn.transaction(|c| {
            // The user's row first (the lock order of every transaction): a sign-in creating a
            // session without a code holds it too, so it either sees the factor on, or its
            // session exists before the caller ends the person's other sessions.
            hold_user_in(c, user_id)?;
            let n = diesel::update(
                user_totp::table
                    .find(user_id)
                    .filter(user_totp::confirmed.eq(false))
                    .filter(user_totp::secret_sealed.eq(begun_sealed)),
            )
            .set((
                user_totp::confirmed.eq(true),
                user_totp::last_step.eq(Some(step)),
                user_totp::secret_sealed.eq(sealed),
            ))
            .execute(c)?;
            if n == 0 {
                return Ok(false);
            }
            insert_codes(c, user_id, recovery_hashes)?;
            Ok(true)
        })
        .map_err(db_err)
    }

    fn enrol_totp(
        &self,
        user_id: &str,
        secret_sealed: &str,
        recovery_hashes: &[String],
        now: UnixTime,
    ) -> StoreResult<()> {
        let mut conn = self.conn()?;
        conn.transaction(|c| {
            // The user's row first, as in `confirm_totp`.
            hold_user_in(c, user_id)?;
            diesel::delete(user_totp::table.find(user_id)).execute(c)?;
            diesel::insert_into(user_totp::table)
                .values((
                    user_totp::user_id.eq(user_id),
                    user_totp::secret_sealed.eq(secret_sealed),
                    user_totp::confirmed.eq(true),
                    user_totp::last_step.eq(None::<i64>),
                    user_totp::created_at.eq(now),
                ))
                .execute(c)?;
            insert_codes(c, user_id, recovery_hashes)
        })
        .map(|_| ())
        .map_err(db_err)
    }

    fn replace_recovery_codes(
        &self,
        user_id: &str,
        checked: &str,
        session_hash: &str,
        recovery_hashes: &[String],
    ) -> StoreResult<bool> {
        let mut conn = self.conn()?;
        conn.transaction(|c| {
            // The user's row first, as in `confirm_totp`: an operator's `user totp` replacing
            // the enrolment (and ending the sessions) either waits and sets codes of its own
            // after these, or committed before, and this finds its seed or the session gone.
            hold_user_in(c, user_id)?;
            let same = user_totp::table
                .find(user_id)
                .filter(user_totp::confirmed.eq(true))
                .filter(user_totp::secret_sealed.eq(checked))
                .count()
                .get_result::<i64>(c)?;
            let session = sessions::table
                .find(session_hash)
                .filter(sessions::user_id.eq(user_id))
                .count()
                .get_result::<i64>(c)?;
            if same == 0 || session == 0 {
                return Ok(false);
            }
            insert_codes(c, user_id, recovery_hashes)?;
            Ok(true)
        })
        .map_err(db_err)
    }

    fn use_totp_step(&self, user_id: &str, step: i64) -> StoreResult<bool> {
        // One conditional statement: of two requests with the same code, one wins.
        diesel::update(
            user_totp::table
                .find(user_id)
                .filter(user_totp::confirmed.eq(true))
                .filter(
                    user_totp::last_step
                        .is_null()
                        .or(user_totp::last_step.lt(step)),
                ),
        )
        .set(user_totp::last_step.eq(Some(step)))
        .execute(&mut *self.conn()?)
        .map(|n| n == 1)
        .map_err(db_err)
    }

    fn use_recovery_code(
        &self,
        user_id: &str,
        code_hash: &str,
        now: UnixTime,
    ) -> StoreResult<bool> {
        diesel::update(
            recovery_codes::table
                .find((user_id, code_hash))
                .filter(recovery_codes::used_at.is_null()),
        )
        .set(recovery_codes::used_at.eq(Some(now)))
        .execute(&mut *self.conn()?)
        .map(|n| n == 1)
        .map_err(db_err)
    }

    fn recovery_codes_left(&self, user_id: &str) -> StoreResult<i64> {
        recovery_codes::table
            .filter(recovery_codes::user_id.eq(user_id))
            .filter(recovery_codes::used_at.is_null())
            .count()
            .get_result(&mut *self.conn()?)
            .map_err(db_err)
    }

    fn save_pending_mfa(&self, p: &PendingMfa, password: Option<&str>) -> StoreResult<bool> {
        self.conn()?
            .transaction(|c| {
                if let Some(verified) = password {
                    if !super::hold_password_in(c, &p.user_id, verified)? {
                        return Ok(false);
                    }
                }
                diesel::insert_into(pending_mfa::table)
                    .values((
                        pending_mfa::id_hash.eq(&p.id_hash),
                        pending_mfa::user_id.eq(&p.user_id),
                        pending_mfa::first_factor.eq(&p.first_factor),
                        pending_mfa::browser_hash.eq(&p.browser_hash),
                        pending_mfa::expires_at.eq(p.expires_at),
                    ))
                    .execute(c)?;
                Ok(true)
            })
            .map_err(db_err)
    }

    fn find_pending_mfa(&self, id_hash: &str, now: UnixTime) -> StoreResult<Option<PendingMfa>> {
        pending_mfa::table
            .find(id_hash)
            .filter(pending_mfa::expires_at.gt(now))
            .first::<(String, String, String, String, i64)>(&mut *self.conn()?)
            .optional()
            .map(|r| {
                r.map(
                    |(id_hash, user_id, first_factor, browser_hash, expires_at)| PendingMfa {
                        id_hash,
                        user_id,
                        first_factor,
                        browser_hash,
                        expires_at,
                    },
                )
            })
            .map_err(db_err)
    }

    fn delete_pending_mfa(&self, id_hash: &str) -> StoreResult<bool> {
        diesel::delete(pending_mfa::table.find(id_hash))
            .execute(&mut *self.conn()?)
            .map(|n| n > 0)
            .map_err(db_err)
    }
}
