//! Replicas: two servers on one PostgreSQL database and one keys folder answer as one. A person
//! signs in on A, approves on B, the client redeems on B, refreshes on A, revokes on B and
//! introspects on A, logs out on A and is signed out on B; a key made by the CLI shows in both
//! JWKS within the stated 5 s.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{postgres_available, Backend, Server, ServerBuilder};
use crate::refresh::{introspect, refresh, revoke, rp_client, BYE};
use crate::signin::{
    auth_params, hidden, location_params, query, redeem, user, Browser, PASSWORD, VERIFIER,
};

fn form_of<'a>(
    params: &'a [(String, String)],
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut f: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    f.extend_from_slice(extra);
    f
}

fn kids(s: &Server) -> Vec<String> {
    let jwks: Value = s.get("/jwks").json();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// Replicas started at the same moment on an empty database: the migrations run once (under
/// the advisory lock), every replica comes up and serves from the one schema.
#[test]
fn replicas_starting_together_migrate_once() {
    if !postgres_available() {
        return;
    }
    let first = ServerBuilder::new(Backend::Postgres);
    let url = first.pg().expect("a database").url.clone();
    let mut builders = vec![first];
    for _ in 0..2 {
        builders.push(ServerBuilder::new(Backend::Postgres).database_url(url.clone()));
    }
    let servers: Vec<Server> = std::thread::scope(|scope| {
        let started: Vec<_> = builders
            .into_iter()
            .map(|b| scope.spawn(move || b.start()))
            .collect();
        started.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let applied: usize = servers
        .iter()
        .map(|s| s.logs().matches("applied migrations").count())
        .sum();
    assert_eq!(applied, 1, "one replica applied them");
    let (id, secret) = servers[0].client(&[]);
    for s in &servers {
        assert_eq!(s.get("/readyz").status, 200);
        let token = s.post_form(
            "/token",
            &[("grant_type", "client_credentials")],
            Some((&id, &secret)),
        );
        assert_eq!(token.status, 200, "{}", token.body);
    }
}

#[test]
fn two_replicas_on_one_database_answer_as_one() {
    if !postgres_available() {
        return;
    }
    let first = ServerBuilder::new(Backend::Postgres);
    let url = first.pg().expect("a database").url.clone();
    let a = first.start();
    let keys = a.keys_dir().display().to_string();
    // Same database, same keys folder, same issuer (as behind one load balancer).
    let b = ServerBuilder::new(Backend::Postgres)
        .database_url(url)
        .env("PORTCULLIS_KEYS_DIR", &keys)
        .env("PORTCULLIS_ISSUER", &a.base)
        .start();
    let alice = user(&a, "alice", &[]);
    let (id, secret) = rp_client(&a, "Notes");
    let c = (id.as_str(), secret.as_str());
    let params = auth_params(&id, "openid notes:read", &[]);

    // Sign in on A, approve on B.
    let mut browser = Browser::new(&a);
    let page = browser.get(&format!("/authorize?{}", query(&params)));
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = hidden(&page.body, "csrf_token").unwrap();
    let consent = browser.post_url(
        &b.url("/login"),
        &form_of(
            &params,
            &[
                ("csrf_token", &csrf),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        ),
    );
    assert_eq!(consent.status, 200, "{}", consent.body);
    let csrf = hidden(&consent.body, "csrf_token").unwrap();
    let back = browser.post_url(
        &a.url("/consent"),
        &form_of(&params, &[("csrf_token", &csrf), ("decision", "allow")]),
    );
    let (_, q) = location_params(&back);

    // Redeem on B, refresh on A, revoke on B, introspect on A.
    let t = redeem(&b, &id, &secret, &q["code"], Some(VERIFIER)).json();
    assert_eq!(
        crate::refresh::payload(t["id_token"].as_str().unwrap())["sub"],
        alice["id"]
    );
    let t2 = refresh(&a, c, t["refresh_token"].as_str().unwrap(), None).json();
    let rt2 = t2["refresh_token"].as_str().unwrap();
    assert_eq!(introspect(&b, c, rt2, "")["active"], true);
    assert_eq!(revoke(&b, c, rt2, "").status, 200);
    assert_eq!(introspect(&a, c, rt2, "")["active"], false);
    assert_eq!(
        introspect(&a, c, t2["access_token"].as_str().unwrap(), "")["active"],
        false
    );

    // Log out on A; B knows.
    let logout = form_urlencoded::Serializer::new(String::new())
        .append_pair("id_token_hint", t["id_token"].as_str().unwrap())
        .append_pair("post_logout_redirect_uri", BYE)
        .finish();
    assert_eq!(browser.get(&format!("/logout?{logout}")).status, 303);
    let silent = auth_params(&id, "openid notes:read", &[("prompt", "none")]);
    let r = browser.get_url(&b.url(&format!("/authorize?{}", query(&silent))));
    assert_eq!(location_params(&r).1["error"], "login_required");

    // A key made by the CLI reaches both replicas' JWKS within the 5 s they re-read the folder
    // (plus the reading itself and this polling, on a loaded machine).
    let made = a.cli_json(&["keys", "generate", "--alg", "ES256", "--json"]);
    let kid = made["kid"].as_str().unwrap().to_owned();
    let started = Instant::now();
    while !(kids(&a).contains(&kid) && kids(&b).contains(&kid)) {
        assert!(
            started.elapsed() < Duration::from_secs(9),
            "key not seen by both replicas"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
