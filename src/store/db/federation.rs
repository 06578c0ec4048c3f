//! Federation storage: upstream identities, pending upstream sign-ins and pending links.

use diesel::prelude::*;

use super::super::schema::{pending_links, upstream_logins, user_identities, users};
use super::{db_err, row_to_user, DbStore, UserRow};
use crate::clock::UnixTime;
use crate::oauth::user::User;
use crate::store::{
    FederatedUser, FederationStore, PendingLink, StoreError, StoreResult, TakenState,
    UpstreamLogin, UserStore,
};

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Nullable<diesel::sql_types::Text>) -> diesel::sql_types::Nullable<diesel::sql_types::Text>);

type UpstreamRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
);

fn upstream_from_row(r: UpstreamRow) -> (UpstreamLogin, Option<i64>) {
    (
        UpstreamLogin {
            state_hash: r.0,
            provider: r.1,
            browser_hash: r.2,
            pkce_verifier: r.3,
            nonce: r.4,
            request: r.5,
            created_at: r.6,
            expires_at: r.7,
        },
        r.8,
    )
}

type LinkRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    String,
    i64,
);

impl FederationStore for DbStore {
    fn save_upstream_login(&self, l: &UpstreamLogin) -> StoreResult<()> {
        use upstream_logins::dsl as t;
        diesel::insert_into(upstream_logins::table)
            .values((
                t::state_hash.eq(&l.state_hash),
                t::provider.eq(&l.provider),
                t::browser_hash.eq(&l.browser_hash),
                t::pkce_verifier.eq(&l.pkce_verifier),
                t::nonce.eq(&l.nonce),
                t::request.eq(&l.request),
                t::created_at.eq(l.created_at),
                t::expires_at.eq(l.expires_at),
                t::consumed_at.eq(None::<i64>),
            ))
            .execute(&mut *self.conn()?)
            .map(|_| ())
            .map_err(db_err)
    }

    fn take_upstream_login(
        &self,
        state_hash: &str,
        browser_hash: &str,
        now: UnixTime,
    ) -> StoreResult<TakenState> {
        let mut conn = self.conn()?;
        // One conditional UPDATE decides who uses the state: a replay or a parallel callback
        // finds it consumed; another browser's attempt leaves it for the right one.
        let taken = diesel::update(
            upstream_logins::table
                .find(state_hash)
                .filter(upstream_logins::browser_hash.eq(browser_hash))
                .filter(upstream_logins::consumed_at.is_null()),
        )
        .set(upstream_logins::consumed_at.eq(Some(now)))
        .execute(&mut *conn)
        .map_err(db_err)?;
        let row = upstream_logins::table
            .find(state_hash)
            .first::<UpstreamRow>(&mut *conn)
            .optional()
            .map_err(db_err)?;
        Ok(match row.map(upstream_from_row) {
            None => TakenState::Unknown,
            Some((l, _)) if taken == 1 => TakenState::Taken(l),
            Some((l, _)) if l.browser_hash != browser_hash => TakenState::OtherBrowser(l),
            Some((l, _)) => TakenState::Used(l),
        })
    }

    fn latest_upstream_login(&self, browser_hash: &str) -> StoreResult<Option<UpstreamLogin>> {
        upstream_logins::table
            .filter(upstream_logins::browser_hash.eq(browser_hash))
            .order(upstream_logins::created_at.desc())
            .first::<UpstreamRow>(&mut *self.conn()?)
            .optional()
            .map(|r| r.map(|r| upstream_from_row(r).0))
            .map_err(db_err)
    }

    fn find_identity(&self, provider: &str, subject: &str) -> StoreResult<Option<FederatedUser>> {
        let row = user_identities::table
            .find((provider, subject))
            .select((user_identities::user_id, user_identities::issuer))
            .first::<(String, String)>(&mut *self.conn()?)
            .optional()
            .map_err(db_err)?;
        let Some((user_id, issuer)) = row else {
            return Ok(None);
        };
        match self.find_user(&user_id)? {
            Some(user) => Ok(Some(FederatedUser {
                user,
                issuer,
                created: false,
            })),
            None => {
                diesel::delete(
                    user_identities::table
                        .find((provider, subject))
                        .filter(user_identities::user_id.eq(&user_id)),
                )
                .execute(&mut *self.conn()?)
                .map_err(db_err)?;
                Ok(None)
            }
        }
    }

    fn create_federated_user(
        &self,
        u: &User,
        provider: &str,
        subject: &str,
        issuer: &str,
    ) -> StoreResult<FederatedUser> {
        let mut conn = self.conn()?;
        let created = conn.transaction(|c| {
            super::insert_user(c, u)?;
            diesel::insert_into(user_identities::table)
                .values((
                    user_identities::provider.eq(provider),
                    user_identities::subject.eq(subject),
                    user_identities::issuer.eq(issuer),
                    user_identities::user_id.eq(&u.id),
                    user_identities::created_at.eq(u.created_at),
                ))
                .execute(c)
        });
        drop(conn);
        match created.map_err(db_err) {
            Ok(_) => Ok(FederatedUser {
                user: u.clone(),
                issuer: issuer.to_owned(),
                created: true,
            }),
            // A parallel first sign-in of the same person won: use what it created.
            Err(StoreError::Conflict) => self
                .find_identity(provider, subject)?
                .ok_or(StoreError::Conflict),
            Err(e) => Err(e),
        }
    }

    fn link_identity(
        &self,
        provider: &str,
        subject: &str,
        issuer: &str,
        user_id: &str,
        password: &str,
        now: UnixTime,
    ) -> StoreResult<bool> {
        let linked = self
            .conn()?
            .transaction(|c| {
                // Held under the password that was checked, as for a session: a reset
                // committing meanwhile is waited for and then refuses the link.
                if !super::hold_password_in(c, user_id, password)? {
                    return Ok(false);
                }
                diesel::insert_into(user_identities::table)
                    .values((
                        user_identities::provider.eq(provider),
                        user_identities::subject.eq(subject),
                        user_identities::issuer.eq(issuer),
                        user_identities::user_id.eq(user_id),
                        user_identities::created_at.eq(now),
                    ))
                    .execute(c)?;
                Ok(true)
            })
            .map_err(db_err);
        match linked {
            Err(StoreError::Conflict) => Ok(false),
            other => other,
        }
    }

    fn find_password_users_by_email(&self, email: &str) -> StoreResult<Vec<User>> {
        users::table
            .filter(lower(users::email).eq(email.to_ascii_lowercase()))
            .filter(users::password_hash.is_not_null())
            // Federated users cannot sign in with a password, so cannot be linked to.
            .filter(users::username.not_like("%:%"))
            .order((users::created_at, users::id))
            .limit(10)
            .load::<UserRow>(&mut *self.conn()?)
            .map_err(db_err)?
            .into_iter()
            .map(row_to_user)
            .collect()
    }

    fn save_pending_link(&self, l: &PendingLink) -> StoreResult<()> {
        use pending_links::dsl as t;
        diesel::insert_into(pending_links::table)
            .values((
                t::link_hash.eq(&l.link_hash),
                t::browser_hash.eq(&l.browser_hash),
                t::provider.eq(&l.provider),
                t::subject.eq(&l.subject),
                t::issuer.eq(&l.issuer),
                t::name.eq(&l.name),
                t::email.eq(&l.email),
                t::user_id.eq(&l.user_id),
                t::request.eq(&l.request),
                t::expires_at.eq(l.expires_at),
            ))
            .execute(&mut *self.conn()?)
            .map(|_| ())
            .map_err(db_err)
    }

    fn find_pending_link(
        &self,
        link_hash: &str,
        now: UnixTime,
    ) -> StoreResult<Option<PendingLink>> {
        let row = pending_links::table
            .find(link_hash)
            .filter(pending_links::expires_at.gt(now))
            .first::<LinkRow>(&mut *self.conn()?)
            .optional()
            .map_err(db_err)?;
        Ok(row.map(|r| PendingLink {
            link_hash: r.0,
            browser_hash: r.1,
            provider: r.2,
            subject: r.3,
            issuer: r.4,
            name: r.5,
            email: r.6,
            user_id: r.7,
            request: r.8,
            expires_at: r.9,
        }))
    }

    fn delete_pending_link(&self, link_hash: &str) -> StoreResult<bool> {
        diesel::delete(pending_links::table.find(link_hash))
            .execute(&mut *self.conn()?)
            .map(|n| n > 0)
            .map_err(db_err)
    }
}
