//! Refresh tokens: rotation, reuse detection, concurrency, scope narrowing, binding to the
//! client and the user, revocation and introspection of both kinds of token.

use std::sync::{Arc, Barrier};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde_json::Value;

use crate::both_backends;
use crate::common::{Backend, Resp, Server, ServerBuilder};
use crate::signin::{auth_params, hidden, location_params, query, redeem, sign_in, user};
use crate::signin::{Browser, REDIRECT, VERIFIER};

pub const BYE: &str = "http://127.0.0.1:9/bye";

/// A web application allowed the code and refresh grants, with a post-logout URI.
pub fn rp_client(s: &Server, name: &str) -> (String, String) {
    rp_client_with(s, name, &[])
}

/// [`rp_client`] with more `client create` options.
pub fn rp_client_with(s: &Server, name: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec![
        "--name",
        name,
        "--redirect-uri",
        REDIRECT,
        "--post-logout-redirect-uri",
        BYE,
        "--grant-type",
        "authorization_code",
        "--grant-type",
        "refresh_token",
        "--scope",
        "notes:read",
    ];
    args.extend_from_slice(extra);
    s.client(&args)
}

/// Sign in through the pages (or continue a session: consent if needed) and redeem the code.
pub fn tokens(
    s: &Server,
    b: &mut Browser,
    (id, secret): (&str, &str),
    username: &str,
    scope: &str,
) -> Value {
    let params = auth_params(id, scope, &[]);
    let signed_in = b
        .cookies
        .iter()
        .any(|(k, v)| k.contains("session") && !v.is_empty());
    let code = if signed_in {
        authorize_in_session(b, &params)
    } else {
        sign_in(b, &params, username, true)["code"].clone()
    };
    let r = redeem(s, id, secret, &code, Some(VERIFIER));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// With a live session: the code straight away, or after approving the consent page.
pub fn authorize_in_session(b: &mut Browser, params: &[(String, String)]) -> String {
    let r = b.get(&format!("/authorize?{}", query(params)));
    let r = if r.status == 200 {
        let csrf = hidden(&r.body, "csrf_token").expect("consent page");
        let mut form: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        form.push(("csrf_token", &csrf));
        form.push(("decision", "allow"));
        b.post("/consent", &form)
    } else {
        r
    };
    location_params(&r).1["code"].clone()
}

pub fn refresh(s: &Server, (id, secret): (&str, &str), rt: &str, scope: Option<&str>) -> Resp {
    let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", rt)];
    if let Some(sc) = scope {
        form.push(("scope", sc));
    }
    s.post_form("/token", &form, Some((id, secret)))
}

pub fn introspect(s: &Server, (id, secret): (&str, &str), token: &str, hint: &str) -> Value {
    let mut form = vec![("token", token)];
    if !hint.is_empty() {
        form.push(("token_type_hint", hint));
    }
    let r = s.post_form("/introspect", &form, Some((id, secret)));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

pub fn revoke(s: &Server, (id, secret): (&str, &str), token: &str, hint: &str) -> Resp {
    let mut form = vec![("token", token)];
    if !hint.is_empty() {
        form.push(("token_type_hint", hint));
    }
    s.post_form("/revoke", &form, Some((id, secret)))
}

/// The payload of a JWT (its signature is checked by the sign-in tests).
pub fn payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&B64.decode(part).unwrap()).unwrap()
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("no {k} in {v}"))
}

fn rotation_and_reuse_revokes_the_family(b: Backend) {
    let s = Server::start(b);
    let alice = user(&s, "alice", &[]);
    let (id, secret) = rp_client(&s, "Notes");
    let c = (id.as_str(), secret.as_str());
    let mut browser = Browser::new(&s);
    let first = tokens(&s, &mut browser, c, "alice", "openid notes:read");
    let rt1 = str_of(&first, "refresh_token").to_owned();
    assert_eq!(rt1.len(), 43, "256-bit token, base64url");
    let first_id = payload(str_of(&first, "id_token"));

    let second = refresh(&s, c, &rt1, None);
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.header("cache-control"), Some("no-store"));
    let second = second.json();
    let rt2 = str_of(&second, "refresh_token").to_owned();
    assert_ne!(rt1, rt2, "rotated");
    assert_eq!(second["scope"], "openid notes:read");
    let id2 = payload(str_of(&second, "id_token"));
    assert_eq!(id2["sub"], alice["id"]);
    assert_eq!(
        id2["auth_time"], first_id["auth_time"],
        "original auth_time"
    );
    assert!(id2.get("nonce").is_none(), "no nonce on refresh");
    let at2 = str_of(&second, "access_token").to_owned();
    assert_eq!(payload(&at2)["sub"], alice["id"]);
    assert_eq!(introspect(&s, c, &at2, "")["active"], true);
    let info = introspect(&s, c, &rt2, "refresh_token");
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["token_type"], "refresh_token");
    assert_eq!(info["client_id"], id.as_str());
    assert_eq!(info["sub"], alice["id"]);
    assert_eq!(info["scope"], "openid notes:read");
    assert_eq!(
        info["exp"].as_i64().unwrap(),
        info["auth_time"].as_i64().unwrap() + 12 * 3600,
        "without offline_access a refresh token lives no longer than the sign-in session"
    );
    assert_eq!(introspect(&s, c, &rt1, "")["active"], false, "rotated");

    // The client moves on with rt2; then rt1 comes back (its successor has been used, so this
    // is no retry): refused, and the whole family dies with the access tokens it issued.
    let third = refresh(&s, c, &rt2, None).json();
    let rt3 = str_of(&third, "refresh_token").to_owned();
    let at3 = str_of(&third, "access_token").to_owned();
    let r = refresh(&s, c, &rt1, None);
    r.assert_error(400, "invalid_grant");
    assert!(r.body.contains("already been used"), "{}", r.body);
    refresh(&s, c, &rt3, None).assert_error(400, "invalid_grant");
    assert_eq!(introspect(&s, c, &rt3, "refresh_token")["active"], false);
    assert_eq!(introspect(&s, c, &at2, "")["active"], false);
    assert_eq!(introspect(&s, c, &at3, "")["active"], false);
    assert_eq!(
        introspect(&s, c, str_of(&first, "access_token"), "")["active"],
        false
    );
    assert!(!s.logs().contains(&rt1), "refresh tokens never logged");
}

fn concurrent_refreshes_cannot_fork_a_family(b: Backend) {
    let s = Server::start(b);
    user(&s, "bob", &[]);
    let (id, secret) = rp_client(&s, "Notes");
    let c = (id.as_str(), secret.as_str());
    let mut browser = Browser::new(&s);
    let rt = str_of(
        &tokens(&s, &mut browser, c, "bob", "notes:read"),
        "refresh_token",
    )
    .to_owned();
    let n = 50;
    let barrier = Arc::new(Barrier::new(n));
    let statuses: Vec<(u16, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let (barrier, s, rt) = (barrier.clone(), &s, rt.as_str());
                scope.spawn(move || {
                    barrier.wait();
                    let r = refresh(s, c, rt, None);
                    (r.status, r.body)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // One rotation wins; of the losers, which all come after it, one may pass as its retry;
    // the next one is reuse and ends the family, so no token handed out here still works.
    let won: Vec<String> = statuses
        .iter()
        .filter(|(st, _)| *st == 200)
        .map(|(_, body)| {
            let v: Value = serde_json::from_str(body).unwrap();
            str_of(&v, "refresh_token").to_owned()
        })
        .collect();
    assert!(
        (1..=2).contains(&won.len()),
        "one rotation and at most one retry: {statuses:?}"
    );
    for (st, body) in &statuses {
        assert!(
            *st == 200 || (*st == 400 && body.contains("invalid_grant")),
            "{st} {body}"
        );
    }
    // Introspection first (it changes nothing): every token handed out is dead already.
    for rt in &won {
        assert_eq!(introspect(&s, c, rt, "refresh_token")["active"], false);
    }
    for rt in &won {
        refresh(&s, c, rt, None).assert_error(400, "invalid_grant");
    }
}

/// A rotation whose response was lost: the client presents the same token again within
/// `tokens.refresh_retry_grace_secs` and gets a working one; the token it never saw is retired,
/// so whoever holds it and uses it ends the family. Without the grace, the retry is reuse.
fn retry_after_a_lost_response(b: Backend) {
    let s = Server::start(b);
    user(&s, "erin", &[]);
    let (id, secret) = rp_client(&s, "Notes");
    let c = (id.as_str(), secret.as_str());
    let mut browser = Browser::new(&s);
    let rt1 = str_of(
        &tokens(&s, &mut browser, c, "erin", "openid notes:read"),
        "refresh_token",
    )
    .to_owned();
    let lost = refresh(&s, c, &rt1, None).json();
    let (lost_rt, lost_at) = (
        str_of(&lost, "refresh_token"),
        str_of(&lost, "access_token"),
    );
    let retry = refresh(&s, c, &rt1, None);
    assert_eq!(retry.status, 200, "{}", retry.body);
    let retry = retry.json();
    let (rt2, at2) = (
        str_of(&retry, "refresh_token"),
        str_of(&retry, "access_token"),
    );
    assert_ne!(rt2, lost_rt);
    assert_eq!(introspect(&s, c, lost_rt, "")["active"], false, "retired");
    assert_eq!(
        introspect(&s, c, lost_at, "")["active"],
        false,
        "its access token too"
    );
    assert_eq!(introspect(&s, c, at2, "")["active"], true);
    // Once per rotation: a second retry is reuse.
    refresh(&s, c, &rt1, None).assert_error(400, "invalid_grant");
    assert_eq!(introspect(&s, c, rt2, "refresh_token")["active"], false);

    // Someone held the retired token: its use ends the family, the retried branch included.
    let rt1 = str_of(
        &tokens(&s, &mut browser, c, "erin", "notes:read"),
        "refresh_token",
    )
    .to_owned();
    let stolen = refresh(&s, c, &rt1, None).json();
    let retry = refresh(&s, c, &rt1, None).json();
    let rt2 = str_of(&retry, "refresh_token");
    refresh(&s, c, str_of(&stolen, "refresh_token"), None).assert_error(400, "invalid_grant");
    refresh(&s, c, rt2, None).assert_error(400, "invalid_grant");

    // A public client has no retry: its token alone is what a thief needs.
    let spa = s.cli_json(&[
        "client",
        "create",
        "--name",
        "SPA",
        "--public",
        "--redirect-uri",
        REDIRECT,
        "--grant-type",
        "authorization_code",
        "--grant-type",
        "refresh_token",
        "--scope",
        "notes:read",
        "--json",
    ]);
    let spa_id = spa["client_id"].as_str().unwrap();
    let code = authorize_in_session(&mut browser, &auth_params(spa_id, "notes:read", &[]));
    let public = |form: &[(&str, &str)]| {
        let mut form = form.to_vec();
        form.push(("client_id", spa_id));
        s.post_form("/token", &form, None)
    };
    let t = public(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ]);
    assert_eq!(t.status, 200, "{}", t.body);
    let rt1 = str_of(&t.json(), "refresh_token").to_owned();
    let next = public(&[("grant_type", "refresh_token"), ("refresh_token", &rt1)]);
    assert_eq!(next.status, 200, "{}", next.body);
    public(&[("grant_type", "refresh_token"), ("refresh_token", &rt1)])
        .assert_error(400, "invalid_grant");
    let rt2 = str_of(&next.json(), "refresh_token").to_owned();
    public(&[("grant_type", "refresh_token"), ("refresh_token", &rt2)])
        .assert_error(400, "invalid_grant");

    // A retry that asks for more than was granted is no retry: reuse.
    let rt1 = str_of(
        &tokens(&s, &mut browser, c, "erin", "notes:read"),
        "refresh_token",
    )
    .to_owned();
    let next = refresh(&s, c, &rt1, None).json();
    refresh(&s, c, &rt1, Some("notes:read openid")).assert_error(400, "invalid_grant");
    refresh(&s, c, str_of(&next, "refresh_token"), None).assert_error(400, "invalid_grant");

    // No grace: the first repeat is reuse.
    let s = ServerBuilder::new(b)
        .env("PORTCULLIS_TOKENS__REFRESH_RETRY_GRACE_SECS", "0")
        .start();
    user(&s, "erin", &[]);
    let (id, secret) = rp_client(&s, "Notes");
    let c = (id.as_str(), secret.as_str());
    let mut browser = Browser::new(&s);
    let rt1 = str_of(
        &tokens(&s, &mut browser, c, "erin", "notes:read"),
        "refresh_token",
    )
    .to_owned();
    let next = refresh(&s, c, &rt1, None).json();
    refresh(&s, c, &rt1, None).assert_error(400, "invalid_grant");
    refresh(&s, c, str_of(&next, "refresh_token"), None).assert_error(400, "invalid_grant");
}

fn scope_may_narrow_never_widen(b: Backend) {
    let s = Server::start(b);
    user(&s, "carol", &[]);
    let (id, secret) = rp_client(&s, "Notes");
    let c = (id.as_str(), secret.as_str());
    let mut browser = Browser::new(&s);
    let t = tokens(&s, &mut browser, c, "carol", "openid notes:read");
    let rt = str_of(&t, "refresh_token");
    refresh(&s, c, rt, Some("openid notes:read notes:write")).assert_error(400, "invalid_scope");
    let narrowed = refresh(&s, c, rt, Some("notes:read"));
    assert_eq!(
        narrowed.status, 200,
        "a refused widening does not use the token"
    );
    let narrowed = narrowed.json();
    assert_eq!(narrowed["scope"], "notes:read");
    assert!(narrowed.get("id_token").is_none(), "openid narrowed away");
    assert_eq!(
        payload(str_of(&narrowed, "access_token"))["scope"],
        "notes:read"
    );
    // The next token still carries the whole grant (RFC 6749 6).
    let again = refresh(&s, c, str_of(&narrowed, "refresh_token"), None).json();
    assert_eq!(again["scope"], "openid notes:read");
    assert!(again["id_token"].is_string());
}

fn bound_to_client_user_and_grant(b: Backend) {
    let s = Server::start(b);
    user(&s, "dave", &[]);
    let (id, secret) = rp_client(&s, "Notes");
    let (other, other_secret) = rp_client(&s, "Other");
    let c = (id.as_str(), secret.as_str());
    let o = (other.as_str(), other_secret.as_str());
    let mut browser = Browser::new(&s);
    let rt = str_of(
        &tokens(&s, &mut browser, c, "dave", "notes:read"),
        "refresh_token",
    )
    .to_owned();

    // Another client cannot use, introspect or revoke it; it stays good for its owner.
    refresh(&s, o, &rt, None).assert_error(400, "invalid_grant");
    assert_eq!(introspect(&s, o, &rt, "refresh_token")["active"], false);
    revoke(&s, o, &rt, "refresh_token").assert_error(400, "unauthorized_client");
    assert_eq!(introspect(&s, c, &rt, "")["active"], true);

    // A locked user cannot refresh; the token is not used up by the refusal.
    assert!(s.cli(&["user", "lock", "dave"]).status.success());
    refresh(&s, c, &rt, None).assert_error(400, "invalid_grant");
    assert_eq!(introspect(&s, c, &rt, "")["active"], false);
    assert!(s.cli(&["user", "unlock", "dave"]).status.success());
    let next = refresh(&s, c, &rt, None);
    assert_eq!(next.status, 200, "{}", next.body);
    // The rotated token is no longer valid: another client revoking it is answered 200 like any
    // invalid token (RFC 7009 2.2), and the family lives on.
    let used = revoke(&s, o, &rt, "refresh_token");
    assert_eq!(used.status, 200, "{}", used.body);
    let rt = str_of(&next.json(), "refresh_token").to_owned();
    assert_eq!(introspect(&s, c, &rt, "")["active"], true);

    // A deleted user cannot.
    assert!(s.cli(&["user", "delete", "dave"]).status.success());
    refresh(&s, c, &rt, None).assert_error(400, "invalid_grant");

    // A client without the refresh grant gets no refresh token and may not refresh.
    user(&s, "erin", &[]);
    let (plain, plain_secret) = s.client(&["--redirect-uri", REDIRECT]);
    let p = (plain.as_str(), plain_secret.as_str());
    let mut browser = Browser::new(&s);
    let t = tokens(&s, &mut browser, p, "erin", "openid");
    assert!(t.get("refresh_token").is_none(), "{t}");
    refresh(&s, p, "A".repeat(43).as_str(), None).assert_error(400, "unauthorized_client");

    // A deleted client's tokens die with it (while a replica's 5 s client cache still knows
    // the client, the token is already gone: invalid_grant; afterwards invalid_client).
    let t = tokens(&s, &mut browser, c, "erin", "notes:read");
    assert!(s.cli(&["client", "delete", &id]).status.success());
    let r = refresh(&s, c, str_of(&t, "refresh_token"), None);
    let error = r.json()["error"].as_str().map(str::to_owned);
    assert!(
        matches!(
            (r.status, error.as_deref()),
            (400, Some("invalid_grant")) | (401, Some("invalid_client"))
        ),
        "{} {}",
        r.status,
        r.body
    );
}

fn revocation_of_both_kinds(b: Backend) {
    let s = Server::start(b);
    user(&s, "fay", &[]);
    let (id, secret) = rp_client(&s, "Notes");
    let c = (id.as_str(), secret.as_str());
    let mut browser = Browser::new(&s);
    for hint in ["refresh_token", "access_token", "", "bogus_hint"] {
        let t = tokens(&s, &mut browser, c, "fay", "notes:read");
        let (rt, at) = (str_of(&t, "refresh_token"), str_of(&t, "access_token"));
        let r = revoke(&s, c, rt, hint);
        assert_eq!(r.status, 200, "hint {hint:?}: {}", r.body);
        refresh(&s, c, rt, None).assert_error(400, "invalid_grant");
        assert_eq!(
            introspect(&s, c, at, "")["active"],
            false,
            "the family's access token goes too (hint {hint:?})"
        );
    }
    // An access token alone: only it goes; the refresh token lives on.
    let t = tokens(&s, &mut browser, c, "fay", "notes:read");
    assert_eq!(
        revoke(&s, c, str_of(&t, "access_token"), "refresh_token").status,
        200
    );
    assert_eq!(
        introspect(&s, c, str_of(&t, "access_token"), "")["active"],
        false
    );
    assert_eq!(
        refresh(&s, c, str_of(&t, "refresh_token"), None).status,
        200
    );
    // Unknown tokens: 200 and nothing else; malformed and unknown introspect inactive.
    assert_eq!(revoke(&s, c, &"B".repeat(43), "refresh_token").status, 200);
    assert_eq!(introspect(&s, c, &"B".repeat(43), "")["active"], false);
    assert_eq!(
        introspect(&s, c, "not a token", "refresh_token")["active"],
        false
    );
    // Both endpoints need client authentication.
    let r = s.post_form("/revoke", &[("token", "x")], None);
    r.assert_error(401, "invalid_client");
    let r = s.post_form("/introspect", &[("token", "x")], Some((&id, "wrong")));
    r.assert_error(401, "invalid_client");
}

fn replayed_code_revokes_the_refresh_family(b: Backend) {
    let s = Server::start(b);
    user(&s, "gus", &[]);
    let (id, secret) = rp_client(&s, "Notes");
    let c = (id.as_str(), secret.as_str());
    let mut browser = Browser::new(&s);
    let params = auth_params(&id, "notes:read", &[]);
    let code = sign_in(&mut browser, &params, "gus", true)["code"].clone();
    let t = redeem(&s, &id, &secret, &code, Some(VERIFIER)).json();
    redeem(&s, &id, &secret, &code, Some(VERIFIER)).assert_error(400, "invalid_grant");
    refresh(&s, c, str_of(&t, "refresh_token"), None).assert_error(400, "invalid_grant");
}

fn expired_refresh_token_is_refused(b: Backend) {
    let s = ServerBuilder::new(b)
        .env("PORTCULLIS_TOKENS__REFRESH_TOKEN_TTL_SECS", "1")
        .start();
    user(&s, "hal", &[]);
    let (id, secret) = rp_client(&s, "Notes");
    let c = (id.as_str(), secret.as_str());
    let mut browser = Browser::new(&s);
    let t = tokens(&s, &mut browser, c, "hal", "notes:read");
    std::thread::sleep(std::time::Duration::from_millis(2_100));
    let rt = str_of(&t, "refresh_token");
    refresh(&s, c, rt, None).assert_error(400, "invalid_grant");
    assert_eq!(introspect(&s, c, rt, "")["active"], false);

    // Housekeeping (the server runs it every minute; here it is called directly on the same
    // database): the expired token goes, a revocation that is still needed stays.
    use portcullis::store::{Maintenance, RefreshStore, RevocationStore};
    let config = portcullis::config::Config {
        database_url: s
            .env
            .iter()
            .find(|(k, _)| k == "PORTCULLIS_DATABASE_URL")
            .map(|(_, v)| v.clone())
            .unwrap(),
        ..Default::default()
    };
    let store = portcullis::store::db::DbStore::open_single(config.database().unwrap());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    store.revoke_jti("still-needed", now + 100_000).unwrap();
    let hash = portcullis::crypto::opaque::hash_secret(rt);
    assert!(store.find_refresh(&hash).unwrap().is_some());
    // Kept while the access token issued with it lives (ending its family must reach that).
    store.purge_expired(now, 1_000).unwrap();
    assert!(
        store.find_refresh(&hash).unwrap().is_some(),
        "its access token lives"
    );
    let access_exp = payload(str_of(&t, "access_token"))["exp"].as_i64().unwrap();
    assert!(store.purge_expired(access_exp + 1, 1_000).unwrap() >= 1);
    assert!(store.find_refresh(&hash).unwrap().is_none(), "purged");
    assert!(store.is_jti_revoked("still-needed").unwrap());
}

/// RFC 8707 on the code and refresh grants: a registered `resource` becomes `aud`, another is
/// `invalid_target` and leaves the code or refresh token as it was.
fn resource_indicators_on_code_and_refresh(b: Backend) {
    const API: &str = "https://notes.example/api";
    let s = Server::start(b);
    user(&s, "rae", &[]);
    let (id, secret) = rp_client_with(&s, "Notes", &["--resource", API]);
    let c = (id.as_str(), secret.as_str());
    let mut browser = Browser::new(&s);
    let code = sign_in(
        &mut browser,
        &auth_params(&id, "openid notes:read", &[]),
        "rae",
        true,
    )["code"]
        .clone();
    let exchange = |resource: &str| {
        s.post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("resource", resource),
            ],
            Some(c),
        )
    };
    exchange("https://elsewhere.example/api").assert_error(400, "invalid_target");
    let t = exchange(API);
    assert_eq!(
        t.status, 200,
        "the refused request left the code unused: {}",
        t.body
    );
    let t = t.json();
    assert_eq!(payload(t["access_token"].as_str().unwrap())["aud"], API);

    let rotate = |rt: &str, resource: Option<&str>| {
        let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", rt)];
        form.extend(resource.map(|r| ("resource", r)));
        s.post_form("/token", &form, Some(c))
    };
    let rt = t["refresh_token"].as_str().unwrap();
    rotate(rt, Some("https://elsewhere.example/api")).assert_error(400, "invalid_target");
    let next = rotate(rt, Some(API));
    assert_eq!(next.status, 200, "still current: {}", next.body);
    let next = next.json();
    assert_eq!(payload(next["access_token"].as_str().unwrap())["aud"], API);
    // A token for the API is not one for userinfo (RFC 8707: no replay at another resource).
    let userinfo = |at: &str| s.post_form("/userinfo", &[("access_token", at)], None);
    let for_api = userinfo(next["access_token"].as_str().unwrap());
    assert_eq!(for_api.status, 401, "{}", for_api.body);
    assert!(for_api.body.contains("invalid_token"), "{}", for_api.body);
    let plain = rotate(next["refresh_token"].as_str().unwrap(), None);
    assert_eq!(plain.status, 200, "{}", plain.body);
    let plain = plain.json();
    assert_eq!(
        payload(plain["access_token"].as_str().unwrap())["aud"],
        s.base.as_str()
    );
    let for_us = userinfo(plain["access_token"].as_str().unwrap());
    assert_eq!(for_us.status, 200, "{}", for_us.body);
}

both_backends!(
    resource_indicators_on_code_and_refresh,
    rotation_and_reuse_revokes_the_family,
    retry_after_a_lost_response,
    concurrent_refreshes_cannot_fork_a_family,
    scope_may_narrow_never_widen,
    bound_to_client_user_and_grant,
    revocation_of_both_kinds,
    replayed_code_revokes_the_refresh_family,
    expired_refresh_token_is_refused,
);
