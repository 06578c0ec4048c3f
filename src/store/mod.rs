//! Storage: the small set of operations the protocol needs, split by capability, implemented
//! once with diesel for SQLite and PostgreSQL ([`db::DbStore`]) and in memory for unit tests
//! ([`memory::MemoryStore`]).
//!
//! Every method blocks; async callers run them on a blocking pool.

pub mod cache;
pub mod db;
pub mod memory;
mod schema;

use crate::clock::UnixTime;
use crate::oauth::client::Client;
use crate::oauth::error::OAuthError;
use crate::oauth::user::User;

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or the pool is exhausted; retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A row with that key already exists.
    #[error("already exists")]
    Conflict,
    /// Any other database error.
    #[error("database error: {0}")]
    Database(String),
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        // Logged where it is handled; the client only learns that it may retry.
        tracing::warn!(error = %e, "storage error");
        OAuthError::temporarily_unavailable("the service is temporarily unavailable")
    }
}

/// Result of a storage call.
pub type StoreResult<T> = Result<T, StoreError>;

/// Registered clients.
pub trait ClientStore: Send + Sync {
    /// A client by id.
    fn find_client(&self, client_id: &str) -> StoreResult<Option<Client>>;
    /// Register a client; `Conflict` if the id is taken.
    fn create_client(&self, client: &Client) -> StoreResult<()>;
    /// Every client, by id.
    fn list_clients(&self) -> StoreResult<Vec<Client>>;
    /// Remove a client; whether it existed.
    fn delete_client(&self, client_id: &str) -> StoreResult<bool>;
    /// Replace a client's secret hash; whether the client exists.
    fn set_client_secret(&self, client_id: &str, secret_hash: &str) -> StoreResult<bool>;
}

/// Revoked access-token `jti`s, kept until the token would have expired.
pub trait RevocationStore: Send + Sync {
    /// Record `jti` as revoked until `expires_at`; revoking twice is not an error.
    fn revoke_jti(&self, jti: &str, expires_at: UnixTime) -> StoreResult<()>;
    /// Whether `jti` is revoked.
    fn is_jti_revoked(&self, jti: &str) -> StoreResult<bool>;
}

/// A revoked `jti` is kept this long past its token's expiry before it is purged: another
/// replica whose clock is behind by up to this much still accepts the token until then.
pub const REVOCATION_SKEW_SECS: UnixTime = 60;

/// Operations on the store as a whole.
pub trait Maintenance: Send + Sync {
    /// Cheap round trip: is the database reachable?
    fn ping(&self) -> StoreResult<()>;
    /// Delete rows that expired before `now`, at most `batch` per table; how many went.
    fn purge_expired(&self, now: UnixTime, batch: i64) -> StoreResult<usize>;
}

/// People.
pub trait UserStore: Send + Sync {
    /// Add a user; `Conflict` if the username is taken.
    fn create_user(&self, user: &User) -> StoreResult<()>;
    /// A user by (normalised) username.
    fn find_user_by_username(&self, username: &str) -> StoreResult<Option<User>>;
    /// A user by id.
    fn find_user(&self, id: &str) -> StoreResult<Option<User>>;
    /// Every user, by username.
    fn list_users(&self) -> StoreResult<Vec<User>>;
    /// Remove a user with their sessions and consents; whether they existed.
    fn delete_user(&self, id: &str) -> StoreResult<bool>;
    /// Replace the password hash and end what the old one opened, as a reset does: sessions,
    /// second-factor steps, unredeemed codes, refresh tokens, live access tokens, reset links.
    /// Whether the user exists.
    fn set_password(&self, id: &str, hash: &str, now: UnixTime) -> StoreResult<bool>;
    /// Replace the user's roles. Whether the user exists.
    fn set_roles(&self, id: &str, roles: &[String]) -> StoreResult<bool>;
    /// Lock or unlock; unlocking also ends a lockout. Whether the user exists.
    fn set_locked(&self, id: &str, locked: bool) -> StoreResult<bool>;
    /// Reserve one sign-in attempt for the account before its password is checked: counts it
    /// as a failure in advance, in one statement that succeeds only while the account is not
    /// locked and has fewer than `max` failures, so parallel guesses cannot outrun the lockout.
    fn reserve_login(&self, id: &str, now: UnixTime, max: u32) -> StoreResult<bool>;
    /// Settle a reserved attempt. A right password clears the count, and stands only if the
    /// account is still unlocked (returns whether it stands); a wrong one leaves the count and,
    /// at `max`, locks the account until `now + lockout_secs`.
    fn finish_login(
        &self,
        id: &str,
        ok: bool,
        now: UnixTime,
        max: u32,
        lockout_secs: u32,
    ) -> StoreResult<bool>;
    /// Undo a reserved attempt without clearing earlier failures (a right password when a
    /// second factor is still to come); false if the account got locked meanwhile.
    fn release_login(&self, id: &str, now: UnixTime) -> StoreResult<bool>;
    /// Reserve one attempt from `ip` in a fixed window of `window_secs`: false once `max`
    /// attempts have failed (or are in flight) in the window.
    fn reserve_ip(&self, ip: &str, now: UnixTime, window_secs: i64, max: i32) -> StoreResult<bool>;
    /// A reserved attempt from `ip` succeeded: it does not count.
    fn release_ip(&self, ip: &str) -> StoreResult<()>;
}

/// A signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Who.
    pub user_id: String,
    /// When they signed in.
    pub auth_time: UnixTime,
    /// How (`pwd`, ...).
    pub amr: Vec<String>,
    /// Absolute expiry.
    pub expires_at: UnixTime,
}

/// Browser sessions, keyed by the SHA-256 of the cookie.
pub trait SessionStore: Send + Sync {
    /// Record a new session. With `password`, the hash a sign-in just verified, only while it is
    /// still the user's (false otherwise, nothing written): a password reset committing during
    /// the check must not be outlived by a session the old password opened. With `replaces`,
    /// the browser's previous session ends in the same transaction: its refresh-token families
    /// and unredeemed codes move to the new session when it was the same person's (even gone
    /// idle), else they end with it as at logout.
    fn create_session(
        &self,
        id_hash: &str,
        session: &Session,
        now: UnixTime,
        password: Option<&str>,
        replaces: Option<&str>,
    ) -> StoreResult<bool>;
    /// A live session (not past its absolute expiry, used within `idle_secs`); marks it used.
    fn find_session(
        &self,
        id_hash: &str,
        now: UnixTime,
        idle_secs: i64,
    ) -> StoreResult<Option<Session>>;
    /// Whose session `id_hash` is and when they signed in, live or not (until it is purged);
    /// marks nothing used.
    fn session_owner(&self, id_hash: &str) -> StoreResult<Option<(String, UnixTime)>>;
    /// End every session of `user_id` but `keep` (a hash), and with each the refresh-token
    /// families issued in it without `offline_access`, as at logout; how many sessions ended.
    fn delete_user_sessions(
        &self,
        user_id: &str,
        keep: Option<&str>,
        now: UnixTime,
    ) -> StoreResult<usize>;
}

/// An authorization code as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRecord {
    /// SHA-256 of the code.
    pub code_hash: String,
    /// The client it was issued to.
    pub client_id: String,
    /// The exact redirect URI of the request.
    pub redirect_uri: String,
    /// The person.
    pub user_id: String,
    /// Their session (hash).
    pub session_hash: String,
    /// Granted scope, space-separated.
    pub scope: String,
    /// OIDC nonce.
    pub nonce: Option<String>,
    /// PKCE S256 challenge.
    pub code_challenge: Option<String>,
    /// When the person signed in.
    pub auth_time: UnixTime,
    /// How.
    pub amr: Vec<String>,
    /// Expiry.
    pub expires_at: UnixTime,
    /// Set once redeemed.
    pub consumed_at: Option<UnixTime>,
    /// The access token the redemption issued.
    pub access_jti: Option<String>,
    /// Its expiry.
    pub access_exp: Option<UnixTime>,
    /// The refresh-token family the redemption started.
    pub refresh_family: Option<String>,
}

/// Authorization codes.
pub trait CodeStore: Send + Sync {
    /// Store a new code, in the same transaction as a hold on its session's row; `false` (and
    /// nothing written) if the session has ended.
    fn save_code(&self, code: &CodeRecord) -> StoreResult<bool>;
    /// A code by hash, consumed or not.
    fn find_code(&self, code_hash: &str) -> StoreResult<Option<CodeRecord>>;
    /// Redeem: one atomic statement that succeeds for exactly one caller, recording the access
    /// token it will issue; in the same transaction, store the first token of the refresh
    /// family it starts, if any. False (and nothing written) if already consumed.
    fn consume_code(
        &self,
        code_hash: &str,
        now: UnixTime,
        jti: &str,
        jti_exp: UnixTime,
        refresh: Option<&RefreshRecord>,
    ) -> StoreResult<bool>;
}

/// A refresh token as stored (by hash). Every token of a family carries the grant: client,
/// user, scope, session and how the person signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    /// SHA-256 of the token.
    pub token_hash: String,
    /// Shared by every token rotated from the same grant.
    pub family_id: String,
    /// The client it was issued to.
    pub client_id: String,
    /// The person.
    pub user_id: String,
    /// The sign-in session (hash) the grant came from.
    pub session_hash: String,
    /// The granted scope, space-separated; a refresh may narrow what it asks for, never this.
    pub scope: String,
    /// Granted with `offline_access`: outlives the session.
    pub offline: bool,
    /// When the person signed in.
    pub auth_time: UnixTime,
    /// How.
    pub amr: Vec<String>,
    /// When this token was issued.
    pub issued_at: UnixTime,
    /// When it expires.
    pub expires_at: UnixTime,
    /// Set when it was rotated.
    pub used_at: Option<UnixTime>,
    /// Set when its family was revoked.
    pub revoked: bool,
    /// The access token issued with it.
    pub access_jti: Option<String>,
    /// Its expiry.
    pub access_exp: Option<UnixTime>,
}

/// What a rotation adds: the next token of the family, which inherits the grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextRefresh {
    /// SHA-256 of the new token.
    pub token_hash: String,
    /// Now.
    pub issued_at: UnixTime,
    /// Its expiry with `offline_access`.
    pub expires_at: UnixTime,
    /// Without `offline_access` it expires no later than `auth_time` plus this (the session's
    /// lifetime); the store applies it, knowing the grant.
    pub online_lifetime_secs: i64,
    /// The access token issued with it.
    pub access_jti: String,
    /// Its expiry.
    pub access_exp: UnixTime,
}

/// Refresh tokens.
pub trait RefreshStore: Send + Sync {
    /// A token by hash, whatever its state, with its user if they still exist (one query).
    fn find_refresh(&self, token_hash: &str) -> StoreResult<Option<(RefreshRecord, Option<User>)>>;
    /// Rotate `old_hash` if it is current: unused, unrevoked, unexpired, issued to `client_id`,
    /// its user present and not locked. Marks it used and stores `next` as the following token
    /// of its family (same grant) atomically, and returns the old token's grant and its user.
    /// Exactly one of concurrent callers gets `Some`; the others write nothing and get `None`,
    /// as does any token that is not current.
    fn rotate_refresh(
        &self,
        old_hash: &str,
        client_id: &str,
        now: UnixTime,
        next: &NextRefresh,
    ) -> StoreResult<Option<(RefreshRecord, User)>>;
    /// A retry of a rotation whose response never arrived: `old_hash` was rotated after
    /// `used_since` and the token that rotation issued has never been used. Retire that token
    /// (marked used, so that presenting it later counts as reuse and revokes the family) with
    /// its access token, and store `next` in the family instead, atomically; return the old
    /// token's grant and user. Once per rotation: a second retry gets `None`, as does any that
    /// fails a condition; exactly one of concurrent callers gets `Some`.
    fn rerotate_refresh(
        &self,
        old_hash: &str,
        client_id: &str,
        now: UnixTime,
        used_since: UnixTime,
        next: &NextRefresh,
    ) -> StoreResult<Option<(RefreshRecord, User)>>;
    /// Revoke every token of a family and, in the same transaction, every access token issued
    /// from it that has not expired. Idempotent.
    fn revoke_family(&self, family_id: &str, now: UnixTime) -> StoreResult<()>;
    /// End a session (at logout), in one transaction: revoke the families issued in it without
    /// `offline_access`, spend the codes issued in it that are not yet redeemed, delete the row;
    /// how many families.
    fn end_session(&self, session_hash: &str, now: UnixTime) -> StoreResult<usize>;
}

/// Remembered consent.
pub trait ConsentStore: Send + Sync {
    /// The scopes `user_id` has approved for `client_id`; `None` if they never approved it.
    fn granted_scopes(&self, user_id: &str, client_id: &str) -> StoreResult<Option<Vec<String>>>;
    /// Replace them.
    fn save_consent(
        &self,
        user_id: &str,
        client_id: &str,
        scopes: &[String],
        now: UnixTime,
    ) -> StoreResult<()>;
}

/// A sign-in waiting at an upstream provider (`upstream_logins`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamLogin {
    /// SHA-256 of the `state` sent upstream.
    pub state_hash: String,
    /// `google` or `github`.
    pub provider: String,
    /// Binds the attempt to the browser that started it.
    pub browser_hash: String,
    /// PKCE `code_verifier` for the upstream token request.
    pub pkce_verifier: String,
    /// OIDC `nonce` expected in the upstream ID token (empty for GitHub).
    pub nonce: String,
    /// The authorization request to continue, as a query string.
    pub request: String,
    /// When it started.
    pub created_at: UnixTime,
    /// Unusable from then on.
    pub expires_at: UnixTime,
}

/// An upstream identity waiting for a local account's password before linking (`pending_links`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingLink {
    /// SHA-256 of the token in the linking form.
    pub link_hash: String,
    /// Binds it to the browser that came back from upstream.
    pub browser_hash: String,
    /// `google` or `github`.
    pub provider: String,
    /// The upstream subject.
    pub subject: String,
    /// The issuer (GitHub: API) that vouched for it.
    pub issuer: String,
    /// Name given upstream.
    pub name: Option<String>,
    /// The verified email that matched.
    pub email: String,
    /// The local account it would be linked to.
    pub user_id: String,
    /// The authorization request to continue, as a query string.
    pub request: String,
    /// Unusable from then on.
    pub expires_at: UnixTime,
}

/// What became of a callback's `state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakenState {
    /// Unknown `state`.
    Unknown,
    /// Taken now by the browser that started it (it may still have expired: check).
    Taken(UpstreamLogin),
    /// Known, but started in another browser; left untouched.
    OtherBrowser(UpstreamLogin),
    /// Known, and used before.
    Used(UpstreamLogin),
}

/// A local user reached through an upstream identity, and the issuer recorded for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatedUser {
    /// The local user.
    pub user: User,
    /// The issuer (GitHub: API base) that vouched for the subject when it was first seen.
    pub issuer: String,
    /// Whether this call created it (not a parallel sign-in or link of the same identity).
    pub created: bool,
}

/// Federation: upstream identities, pending upstream sign-ins and links.
pub trait FederationStore: Send + Sync {
    /// Record a sign-in that is about to go upstream.
    fn save_upstream_login(&self, login: &UpstreamLogin) -> StoreResult<()>;
    /// Use `state_hash` once, from the browser `browser_hash` only (one atomic step).
    fn take_upstream_login(
        &self,
        state_hash: &str,
        browser_hash: &str,
        now: UnixTime,
    ) -> StoreResult<TakenState>;
    /// The newest upstream sign-in this browser started (to offer a way back).
    fn latest_upstream_login(&self, browser_hash: &str) -> StoreResult<Option<UpstreamLogin>>;
    /// The local user an upstream identity maps to. An identity whose user is gone (deleted
    /// in a race with its linking) is removed and reported absent.
    fn find_identity(&self, provider: &str, subject: &str) -> StoreResult<Option<FederatedUser>>;
    /// Create `user` for an upstream identity, both in one transaction. If the identity was
    /// created meanwhile (a parallel first sign-in), the user it maps to is returned instead.
    fn create_federated_user(
        &self,
        user: &User,
        provider: &str,
        subject: &str,
        issuer: &str,
    ) -> StoreResult<FederatedUser>;
    /// Map an upstream identity to an existing user whose password hash is still `password`
    /// (the one the linking page checked); false if it maps to someone already or the password
    /// changed meanwhile.
    fn link_identity(
        &self,
        provider: &str,
        subject: &str,
        issuer: &str,
        user_id: &str,
        password: &str,
        now: UnixTime,
    ) -> StoreResult<bool>;
    /// Local accounts (not federated ones) with a password whose email is `email` (ASCII
    /// case-insensitive), oldest first.
    fn find_password_users_by_email(&self, email: &str) -> StoreResult<Vec<User>>;
    /// Record a pending link.
    fn save_pending_link(&self, link: &PendingLink) -> StoreResult<()>;
    /// A pending link that has not expired.
    fn find_pending_link(&self, link_hash: &str, now: UnixTime)
        -> StoreResult<Option<PendingLink>>;
    /// Remove a pending link; false if it was gone (used by a parallel request).
    fn delete_pending_link(&self, link_hash: &str) -> StoreResult<bool>;
}

/// A user's TOTP enrolment (`user_totp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpRecord {
    /// The seed, sealed (see `crypto::seal`).
    pub secret_sealed: String,
    /// Confirmed with a first code (or enrolled by the operator): asked at every sign-in.
    pub confirmed: bool,
    /// The last time step accepted.
    pub last_step: Option<i64>,
    /// When the enrolment began (or the operator enrolled it).
    pub created_at: UnixTime,
}

/// A password accepted, the second factor pending (`pending_mfa`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMfa {
    /// SHA-256 of the token in the second-factor form.
    pub id_hash: String,
    /// Who passed the first factor.
    pub user_id: String,
    /// Which: `pwd`, or `fed` (Google / GitHub).
    pub first_factor: String,
    /// The browser they gave it in.
    pub browser_hash: String,
    /// Unusable from then on.
    pub expires_at: UnixTime,
}

/// Second factors: TOTP enrolments, recovery codes, pending second-factor steps.
pub trait MfaStore: Send + Sync {
    /// The user's enrolment, if any.
    fn find_totp(&self, user_id: &str) -> StoreResult<Option<TotpRecord>>;
    /// Start an enrolment to be confirmed by a first code. False (and nothing changes) when a
    /// confirmed one exists: a second factor is not replaced by whoever holds a session.
    fn begin_totp(&self, user_id: &str, secret_sealed: &str, now: UnixTime) -> StoreResult<bool>;
    /// Confirm the pending enrolment whose seed is sealed as `begun_sealed` (not one begun since
    /// in its place) with the step of its first code, store the seed as `sealed`, and set its
    /// recovery codes; false if there was no such enrolment to confirm.
    fn confirm_totp(
        &self,
        user_id: &str,
        begun_sealed: &str,
        sealed: &str,
        step: i64,
        recovery_hashes: &[String],
    ) -> StoreResult<bool>;
    /// Enrol (replacing any enrolment and recovery codes) already confirmed: the operator's
    /// `user totp`.
    fn enrol_totp(
        &self,
        user_id: &str,
        secret_sealed: &str,
        recovery_hashes: &[String],
        now: UnixTime,
    ) -> StoreResult<()>;
    /// Replace the recovery codes of the confirmed enrolment whose seed is sealed as `checked`
    /// (the old codes stop working), while session `session_hash` lives; false, and nothing
    /// changes, if the enrolment was replaced or removed, or the session ended, meanwhile.
    fn replace_recovery_codes(
        &self,
        user_id: &str,
        checked: &str,
        session_hash: &str,
        recovery_hashes: &[String],
    ) -> StoreResult<bool>;
    /// Accept time step `step` once: true only if it is later than the last one accepted.
    fn use_totp_step(&self, user_id: &str, step: i64) -> StoreResult<bool>;
    /// Use a recovery code once.
    fn use_recovery_code(&self, user_id: &str, code_hash: &str, now: UnixTime)
        -> StoreResult<bool>;
    /// Recovery codes not yet used.
    fn recovery_codes_left(&self, user_id: &str) -> StoreResult<i64>;
    /// Record a pending second-factor step. After a password (`password`, the hash just
    /// verified), only while it is still the user's (false otherwise, nothing written): a step
    /// recorded after a reset committed would outlive the reset, which removes pending steps.
    fn save_pending_mfa(&self, pending: &PendingMfa, password: Option<&str>) -> StoreResult<bool>;
    /// A pending second-factor step that has not expired.
    fn find_pending_mfa(&self, id_hash: &str, now: UnixTime) -> StoreResult<Option<PendingMfa>>;
    /// Remove it; false if it was gone.
    fn delete_pending_mfa(&self, id_hash: &str) -> StoreResult<bool>;
}

/// A password-reset link (`password_resets`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetRecord {
    /// Whose password it resets.
    pub user_id: String,
    /// Unusable from then on.
    pub expires_at: UnixTime,
    /// When it was used, if it was.
    pub used_at: Option<UnixTime>,
}

/// Password resets.
pub trait ResetStore: Send + Sync {
    /// Record a new link. With `quiet_since`, only if no link was made for the user at or after
    /// then, decided under a lock on the user's row (parallel requests make one link). Whether
    /// it was recorded.
    fn create_reset(
        &self,
        token_hash: &str,
        user_id: &str,
        now: UnixTime,
        expires_at: UnixTime,
        quiet_since: Option<UnixTime>,
    ) -> StoreResult<bool>;
    /// A link by its hash.
    fn find_reset(&self, token_hash: &str) -> StoreResult<Option<ResetRecord>>;
    /// Delete an unused link.
    fn delete_reset(&self, token_hash: &str) -> StoreResult<()>;
    /// In one transaction: use the link (once, before expiry), set the password hash, delete
    /// the user's sessions and pending second-factor steps, spend their unredeemed codes and
    /// revoke their refresh-token families with the access tokens issued from them (a lockout
    /// stays). `None` (and nothing changed) when the link is used, expired or unknown.
    fn complete_reset(
        &self,
        token_hash: &str,
        password_hash: &str,
        now: UnixTime,
    ) -> StoreResult<Option<String>>;
}

/// The append-only audit log (and a ping, to tell a database away from a row it refuses).
pub trait AuditStore: Maintenance {
    /// Append rows, all in one transaction.
    fn append_audit(&self, events: &[crate::audit::AuditEvent]) -> StoreResult<()>;
    /// Rows matching `filter`, oldest first (the newest `filter.limit`).
    fn list_audit(
        &self,
        filter: &crate::audit::AuditFilter,
    ) -> StoreResult<Vec<crate::audit::AuditEvent>>;
}

/// What introspection and revocation read and write.
pub trait TokenStore: RevocationStore + RefreshStore {}
impl<T: RevocationStore + RefreshStore + ?Sized> TokenStore for T {}

/// Everything the server needs.
pub trait Store:
    ClientStore
    + RevocationStore
    + Maintenance
    + UserStore
    + SessionStore
    + CodeStore
    + ConsentStore
    + RefreshStore
    + FederationStore
    + MfaStore
    + AuditStore
    + ResetStore
{
}
impl<T> Store for T where
    T: ClientStore
        + RevocationStore
        + Maintenance
        + UserStore
        + SessionStore
        + CodeStore
        + ConsentStore
        + RefreshStore
        + FederationStore
        + MfaStore
        + AuditStore
        + ResetStore
{
}
