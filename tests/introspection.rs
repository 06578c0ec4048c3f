//! Introspection (RFC 7662) and revocation (RFC 7009) of access tokens, including forged tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde_json::{json, Value};

use crate::both_backends;
use crate::common::{Backend, Server};

fn introspect(s: &Server, token: &str, auth: (&str, &str)) -> Value {
    let r = s.post_form("/introspect", &[("token", token)], Some(auth));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    r.json()
}

fn introspection_and_revocation(b: Backend) {
    let s = Server::start(b);
    let (a, a_secret) = s.client(&["--scope", "api:read"]);
    let (rs, rs_secret) = s.client(&[]);
    let token = s.cc_token(&a, &a_secret, Some("api:read"));

    let v = introspect(&s, &token, (&rs, &rs_secret));
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["client_id"], a.as_str());
    assert_eq!(v["sub"], a.as_str());
    assert_eq!(v["scope"], "api:read");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["iss"], s.base.as_str());
    assert!(v["exp"].is_i64() && v["jti"].is_string());

    // Another client cannot revoke it: refused (RFC 7009 2.1), and the token stays active ...
    s.post_form("/revoke", &[("token", &token)], Some((&rs, &rs_secret)))
        .assert_error(400, "unauthorized_client");
    assert_eq!(introspect(&s, &token, (&rs, &rs_secret))["active"], true);
    // ... its owner can, with or without a hint.
    let r = s.post_form(
        "/revoke",
        &[("token", &token), ("token_type_hint", "access_token")],
        Some((&a, &a_secret)),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        introspect(&s, &token, (&rs, &rs_secret)),
        json!({"active": false})
    );
    // Revoking again, or an unknown token, is still 200.
    assert_eq!(
        s.post_form("/revoke", &[("token", &token)], Some((&a, &a_secret)))
            .status,
        200
    );
    assert_eq!(
        s.post_form("/revoke", &[("token", "nonsense")], Some((&a, &a_secret)))
            .status,
        200
    );

    // Both endpoints need client authentication and a token.
    s.post_form("/introspect", &[("token", &token)], None)
        .assert_error(401, "invalid_client");
    s.post_form("/revoke", &[("token", &token)], Some((&a, "bad")))
        .assert_error(401, "invalid_client");
    s.post_form("/introspect", &[], Some((&a, &a_secret)))
        .assert_error(400, "invalid_request");
    s.post_form("/revoke", &[], Some((&a, &a_secret)))
        .assert_error(400, "invalid_request");

    // The revocation survives a restart: it is in the database, not in memory.
    let mut s = s;
    s.restart();
    assert_eq!(introspect(&s, &token, (&rs, &rs_secret))["active"], false);
    let fresh = s.cc_token(&a, &a_secret, None);
    assert_eq!(introspect(&s, &fresh, (&rs, &rs_secret))["active"], true);
}

fn forged_tokens_are_inactive(b: Backend) {
    let s = Server::start(b);
    let (id, secret) = s.client(&[]);
    let auth = (id.as_str(), secret.as_str());
    let token = s.cc_token(&id, &secret, None);
    let parts: Vec<&str> = token.split('.').collect();
    let header: Value = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
    let kid = header["kid"].as_str().unwrap();

    // alg: none, no signature.
    let none_header = B64.encode(json!({"alg": "none", "typ": "at+jwt", "kid": kid}).to_string());
    let none = format!("{none_header}.{}.", parts[1]);
    assert_eq!(introspect(&s, &none, auth)["active"], false);

    // HS256 keyed with our public key material (the classic key-confusion attack), for each
    // published key.
    let jwks = s.get("/jwks").json();
    for key in jwks["keys"].as_array().unwrap() {
        let public = serde_json::to_vec(key).unwrap();
        let hs_header =
            B64.encode(json!({"alg": "HS256", "typ": "at+jwt", "kid": key["kid"]}).to_string());
        let signing_input = format!("{hs_header}.{}", parts[1]);
        let forged = jsonwebtoken::crypto::sign(
            signing_input.as_bytes(),
            &jsonwebtoken::EncodingKey::from_secret(&public),
            jsonwebtoken::Algorithm::HS256,
        )
        .unwrap();
        let forged = format!("{signing_input}.{forged}");
        assert_eq!(introspect(&s, &forged, auth)["active"], false);
    }

    // A flipped bit in the signature.
    let mut sig = B64.decode(parts[2]).unwrap();
    sig[5] ^= 0x01;
    let flipped = format!("{}.{}.{}", parts[0], parts[1], B64.encode(&sig));
    assert_eq!(introspect(&s, &flipped, auth)["active"], false);

    // A changed claim under the original signature.
    let mut claims: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    claims["scope"] = json!("admin");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(claims.to_string()),
        parts[2]
    );
    assert_eq!(introspect(&s, &tampered, auth)["active"], false);

    // Garbage of every shape.
    for junk in ["", "a", "a.b", "a.b.c", "....", &"x".repeat(10_000)] {
        let r = s.post_form("/introspect", &[("token", junk)], Some(auth));
        if junk.is_empty() {
            r.assert_error(400, "invalid_request");
        } else {
            assert_eq!(r.json(), json!({"active": false}), "{junk:.20}");
        }
    }
    // The untouched token is still fine.
    assert_eq!(introspect(&s, &token, auth)["active"], true);
}

fn public_client_sees_only_its_own_tokens(b: Backend) {
    let s = Server::start(b);
    let (svc, svc_secret) = s.client(&[]);
    let token = s.cc_token(&svc, &svc_secret, None);
    let v = s.cli_json(&[
        "client",
        "create",
        "--name",
        "SPA",
        "--public",
        "--redirect-uri",
        "http://127.0.0.1:9/cb",
        "--json",
    ]);
    assert!(v["client_secret"].is_null());
    let spa = v["client_id"].as_str().unwrap();
    let r = s.post_form(
        "/introspect",
        &[("token", &token), ("client_id", spa)],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"active": false}));
    // A public client cannot use client_credentials.
    s.post_form(
        "/token",
        &[("grant_type", "client_credentials"), ("client_id", spa)],
        None,
    )
    .assert_error(400, "unauthorized_client");
}

/// A person's access token is inactive while its user is locked by an operator, and for good
/// once the account is deleted (as at userinfo); a machine token has no person to look up.
fn a_locked_or_deleted_person_has_no_active_tokens(b: Backend) {
    let s = Server::start(b);
    crate::signin::user(&s, "ola", &[]);
    let (id, secret) = crate::refresh::rp_client(&s, "Notes");
    let c = (id.as_str(), secret.as_str());
    let mut browser = crate::signin::Browser::new(&s);
    let t = crate::refresh::tokens(&s, &mut browser, c, "ola", "openid notes:read");
    let at = t["access_token"].as_str().unwrap();
    let (rs, rs_secret) = s.client(&[]);
    let rs = (rs.as_str(), rs_secret.as_str());
    let machine = s.cc_token(rs.0, rs.1, None);
    assert_eq!(introspect(&s, at, rs)["active"], true);

    s.cli_json(&["user", "lock", "ola", "--json"]);
    assert_eq!(introspect(&s, at, rs), json!({ "active": false }));
    s.cli_json(&["user", "unlock", "ola", "--json"]);
    assert_eq!(
        introspect(&s, at, rs)["active"],
        true,
        "a lock is not a revocation"
    );

    s.cli_json(&["user", "delete", "ola", "--json"]);
    assert_eq!(introspect(&s, at, rs), json!({ "active": false }));
    assert_eq!(introspect(&s, &machine, rs)["active"], true);
}

/// Deleting a client ends its tokens at introspection and userinfo at once, its machine tokens
/// and the tokens people granted it alike; another client's tokens are untouched.
fn a_deleted_clients_tokens_are_inactive(b: Backend) {
    let s = Server::start(b);
    crate::signin::user(&s, "ola", &[]);
    let (id, secret) =
        crate::refresh::rp_client_with(&s, "Notes", &["--grant-type", "client_credentials"]);
    let c = (id.as_str(), secret.as_str());
    let mut browser = crate::signin::Browser::new(&s);
    let t = crate::refresh::tokens(&s, &mut browser, c, "ola", "openid notes:read");
    let person = t["access_token"].as_str().unwrap();
    let machine = s.cc_token(c.0, c.1, None);
    let (rs, rs_secret) = s.client(&[]);
    let rs = (rs.as_str(), rs_secret.as_str());
    let own = s.cc_token(rs.0, rs.1, None);
    let userinfo = |token: &str| {
        let r = crate::common::agent()
            .get(&s.url("/userinfo"))
            .set("Authorization", &format!("Bearer {token}"))
            .call();
        crate::common::Resp::from(r).status
    };
    assert_eq!(introspect(&s, person, rs)["active"], true);
    assert_eq!(introspect(&s, &machine, rs)["active"], true);
    assert_eq!(userinfo(person), 200);

    s.cli(&["client", "delete", &id]);
    assert_eq!(introspect(&s, person, rs), json!({ "active": false }));
    assert_eq!(introspect(&s, &machine, rs), json!({ "active": false }));
    assert_eq!(userinfo(person), 401);
    assert_eq!(introspect(&s, &own, rs)["active"], true);

    // Registering the id again, later than the tokens (past the minute's leeway for clocks),
    // does not bring them back.
    let again = s.cli(&[
        "client",
        "create",
        "--name",
        "Notes again",
        "--client-id",
        &id,
        "--grant-type",
        "client_credentials",
    ]);
    assert!(again.status.success(), "{again:?}");
    let later =
        format!("UPDATE clients SET created_at = created_at + 120 WHERE client_id = '{id}'");
    assert_eq!(crate::common::execute_sql(&s, &later), 1);
    assert_eq!(introspect(&s, person, rs), json!({ "active": false }));
    assert_eq!(introspect(&s, &machine, rs), json!({ "active": false }));
    assert_eq!(userinfo(person), 401);
}

both_backends!(
    a_deleted_clients_tokens_are_inactive,
    a_locked_or_deleted_person_has_no_active_tokens,
    introspection_and_revocation,
    forged_tokens_are_inactive,
    public_client_sees_only_its_own_tokens,
);
