//! Roles: the `roles` claim with the `roles` scope only, per-client scopes, and clients
//! restricted to people holding a role.

use serde_json::{json, Value};

use crate::both_backends;
use crate::common::{Backend, Server};
use crate::refresh::payload;
use crate::signin::{auth_params, redeem, sign_in, user, Browser, REDIRECT, VERIFIER};

fn client(s: &Server, extra: &[&str]) -> (String, String) {
    let mut args = vec![
        "--name",
        "Admin console",
        "--redirect-uri",
        REDIRECT,
        "--grant-type",
        "authorization_code",
        "--grant-type",
        "refresh_token",
        "--scope",
        "console:use",
    ];
    args.extend_from_slice(extra);
    s.client(&args)
}

fn tokens(s: &Server, (id, secret): (&str, &str), who: &str, scope: &str) -> Value {
    let mut b = Browser::new(s);
    let back = sign_in(&mut b, &auth_params(id, scope, &[]), who, true);
    let r = redeem(s, id, secret, &back["code"], Some(VERIFIER));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn roles_claim_only_with_the_scope(b: Backend) {
    let s = Server::start(b);
    user(&s, "rita", &["--role", "editor", "--role", "admin"]);
    let (id, secret) = client(&s, &["--scope", "roles"]);
    let c = (id.as_str(), secret.as_str());

    let t = tokens(&s, c, "rita", "openid console:use");
    assert!(payload(t["access_token"].as_str().unwrap())
        .get("roles")
        .is_none());
    assert!(payload(t["id_token"].as_str().unwrap())
        .get("roles")
        .is_none());

    let t = tokens(&s, c, "rita", "openid roles console:use");
    assert_eq!(t["scope"], "openid roles console:use");
    let roles = json!(["editor", "admin"]);
    assert_eq!(payload(t["access_token"].as_str().unwrap())["roles"], roles);
    assert_eq!(payload(t["id_token"].as_str().unwrap())["roles"], roles);

    // `user role add|remove` change what the next tokens say.
    let out = s.cli_json(&["user", "role", "remove", "rita", "admin", "--json"]);
    assert_eq!(out["roles"], json!(["editor"]));
    let out = s.cli_json(&["user", "role", "add", "rita", "auditor", "--json"]);
    assert_eq!(out["roles"], json!(["editor", "auditor"]));
    let refreshed = s.post_form(
        "/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
        ],
        Some(c),
    );
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    assert_eq!(
        payload(refreshed.json()["access_token"].as_str().unwrap())["roles"],
        json!(["editor", "auditor"])
    );
    let bad = s.cli(&["user", "role", "add", "rita", "not a role"]);
    assert_eq!(bad.status.code(), Some(2));

    // A client not registered for `roles` does not get them, whatever it asks.
    let (other, other_secret) = client(&s, &[]);
    let t = tokens(
        &s,
        (&other, &other_secret),
        "rita",
        "openid roles console:use",
    );
    assert_eq!(
        t["scope"], "openid console:use",
        "unregistered scope dropped"
    );
    assert!(payload(t["access_token"].as_str().unwrap())
        .get("roles")
        .is_none());
    assert!(payload(t["id_token"].as_str().unwrap())
        .get("roles")
        .is_none());
}

fn role_restricted_client_refuses_others(b: Backend) {
    let s = Server::start(b);
    user(&s, "sam", &[]);
    let (id, secret) = client(&s, &["--require-role", "staff"]);
    let shown = s.cli_json(&["client", "show", &id, "--json"]);
    assert_eq!(shown["required_role"], "staff");

    // Without the role: access_denied back to the client, after signing in.
    let mut b1 = Browser::new(&s);
    let back = sign_in(&mut b1, &auth_params(&id, "openid", &[]), "sam", true);
    assert_eq!(back.get("error").map(String::as_str), Some("access_denied"));
    assert_eq!(back.get("state").map(String::as_str), Some("st-123"));
    assert!(!back.contains_key("code"));

    // With it: signed in; losing it ends refreshing.
    s.cli(&["user", "role", "add", "sam", "staff"]);
    let t = tokens(&s, (&id, &secret), "sam", "openid console:use");
    s.cli(&["user", "role", "remove", "sam", "staff"]);
    // Introspection agrees with the grant: the refresh token is no longer active.
    let looked = s.post_form(
        "/introspect",
        &[("token", t["refresh_token"].as_str().unwrap())],
        Some((&id, &secret)),
    );
    assert_eq!(looked.status, 200, "{}", looked.body);
    assert_eq!(looked.json()["active"], false, "{}", looked.body);
    let r = s.post_form(
        "/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
        ],
        Some((&id, &secret)),
    );
    r.assert_error(400, "invalid_grant");

    // Losing the role between the code and its redemption: the code is refused.
    s.cli(&["user", "role", "add", "sam", "staff"]);
    let mut b2 = Browser::new(&s);
    let back = sign_in(&mut b2, &auth_params(&id, "openid", &[]), "sam", true);
    s.cli(&["user", "role", "remove", "sam", "staff"]);
    redeem(&s, &id, &secret, &back["code"], Some(VERIFIER)).assert_error(400, "invalid_grant");
    let bad = s.cli(&["client", "create", "--name", "x", "--require-role", "a b"]);
    assert_eq!(bad.status.code(), Some(2));
}

both_backends!(
    roles_claim_only_with_the_scope,
    role_restricted_client_refuses_others
);
