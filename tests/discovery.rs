//! Discovery, JWKS, key lifecycle as seen over HTTP, and the operational endpoints.

use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;

use crate::both_backends;
use crate::common::{pgproxy::PgProxy, postgres_available, Backend, Server, ServerBuilder};

fn discovery_documents(b: Backend) {
    let s = Server::start(b);
    let oidc = s.get("/.well-known/openid-configuration");
    assert_eq!(oidc.status, 200);
    let rfc8414 = s.get("/.well-known/oauth-authorization-server");
    assert_eq!(oidc.json(), rfc8414.json());
    let d = oidc.json();
    assert_eq!(d["issuer"], s.base.as_str());
    for (key, path) in [
        ("token_endpoint", "/token"),
        ("jwks_uri", "/jwks"),
        ("introspection_endpoint", "/introspect"),
        ("revocation_endpoint", "/revoke"),
        ("authorization_endpoint", "/authorize"),
        ("userinfo_endpoint", "/userinfo"),
        ("end_session_endpoint", "/logout"),
    ] {
        assert_eq!(d[key], format!("{}{path}", s.base), "{key}");
    }
    assert_eq!(
        d["grant_types_supported"],
        serde_json::json!(["authorization_code", "client_credentials", "refresh_token"])
    );
    assert_eq!(d["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(
        d["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(d["authorization_response_iss_parameter_supported"], true);
    assert_eq!(
        d["prompt_values_supported"],
        serde_json::json!(["none", "login", "consent", "select_account"])
    );
    assert!(d["scopes_supported"]
        .as_array()
        .unwrap()
        .contains(&"openid".into()));
    assert!(d["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap()
        .contains(&"client_secret_basic".into()));
    // Only what is implemented: no implicit or password grant, no registration endpoint.
    assert!(d.get("registration_endpoint").is_none());
    assert!(!d["response_types_supported"]
        .as_array()
        .unwrap()
        .contains(&"token".into()));
}

fn jwks_publishes_public_keys_only(b: Backend) {
    let s = Server::start(b);
    let r = s.get("/jwks");
    assert_eq!(r.status, 200);
    // No longer than a new key waits to sign (10 s) less the replicas' reload (5 s).
    assert_eq!(r.header("cache-control"), Some("public, max-age=5"));
    let keys = r.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 2);
    let mut algs: Vec<&str> = keys.iter().map(|k| k["alg"].as_str().unwrap()).collect();
    algs.sort();
    assert_eq!(algs, ["ES256", "RS256"]);
    for k in &keys {
        assert_eq!(k["use"], "sig");
        assert!(k["kid"].as_str().is_some_and(|kid| kid.len() == 43), "{k}");
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(
                k.get(private).is_none(),
                "private member {private} published"
            );
        }
    }
    // First start generated the keys: two PEM files, owner-only.
    let pems: Vec<_> = std::fs::read_dir(s.keys_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "pem"))
        .collect();
    assert_eq!(pems.len(), 2);
    #[cfg(unix)]
    for p in pems {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(p.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    }
}

fn wait_for(s: &Server, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; log:\n{}",
            s.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

fn key_rotation_is_picked_up_by_a_running_server(b: Backend) {
    let s = Server::start(b);
    let (id, secret) = s.client(&[]);
    let old_token = s.cc_token(&id, &secret, None);
    let old_kid = kid_of(&old_token);

    // Taken before the key exists: its creation time (whole seconds) is no earlier than a
    // second before this, so it signs no earlier than 9 s after it.
    let made = Instant::now();
    let generated = s.cli_json(&["keys", "generate", "--alg", "ES256", "--json"]);
    assert_eq!(generated["alg"], "ES256");
    let new_kid = generated["kid"].as_str().unwrap().to_owned();
    // Published first (the folder is re-read within 5 s), signing only once it is 10 s old, so
    // that every replica accepts its tokens by then.
    wait_for(&s, "the new key in the JWKS", || {
        s.get("/jwks").body.contains(&new_kid)
    });
    if made.elapsed() < Duration::from_secs(6) {
        assert_eq!(
            kid_of(&s.cc_token(&id, &secret, None)),
            old_kid,
            "published, not signing"
        );
        let listed = s.cli_json(&["keys", "list", "--json"]);
        let new_state = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == new_kid.as_str());
        assert_eq!(new_state.unwrap()["state"], "published");
    }
    wait_for(&s, "the new key to sign", || {
        kid_of(&s.cc_token(&id, &secret, None)) == new_kid
    });
    assert!(made.elapsed() >= Duration::from_secs(8), "signed too early");
    let list = s.cli_json(&["keys", "list", "--json"]);
    let state = |kid: &str| -> String {
        list.as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .map(|k| k["state"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(state(&new_kid), "active");
    assert_eq!(state(&old_kid), "published");

    // Retire the old one: it stays published while its tokens may live, so they still verify.
    let retired = s.cli_json(&["keys", "retire", &old_kid, "--json"]);
    assert_eq!(retired["state"], "published");
    let old_claims = crate::token::verify_independently(&s, &old_token, Algorithm::ES256);
    assert_eq!(old_claims["client_id"], id.as_str());
    let r = s.post_form(
        "/introspect",
        &[("token", &old_token)],
        Some((&id, &secret)),
    );
    assert_eq!(r.json()["active"], true);

    // Retiring the only RS256 key brings a successor, published first: the old key signs on
    // for 10 s, so RS256 never goes dark and no replica meets a kid it has not loaded.
    let rs = s.cli_json(&["keys", "list", "--json"]);
    let rs_kid = rs
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["alg"] == "RS256")
        .unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let retired_at = Instant::now();
    s.cli_json(&["keys", "retire", &rs_kid, "--json"]);
    let rs256 = || -> Vec<(String, String)> {
        s.cli_json(&["keys", "list", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["alg"] == "RS256")
            .map(|k| {
                let field = |f: &str| k[f].as_str().unwrap().to_owned();
                (field("kid"), field("state"))
            })
            .collect()
    };
    let after = rs256();
    let successor = after
        .iter()
        .find(|(kid, _)| *kid != rs_kid)
        .expect("a successor")
        .0
        .clone();
    if retired_at.elapsed() < Duration::from_secs(8) {
        assert!(
            after.contains(&(rs_kid.clone(), "active".into())),
            "{after:?}"
        );
        assert!(
            after.contains(&(successor.clone(), "published".into())),
            "{after:?}"
        );
    }
    wait_for(&s, "the successor to sign", || {
        rs256().contains(&(successor.clone(), "active".into()))
    });
    assert!(
        retired_at.elapsed() >= Duration::from_secs(8),
        "handed over too early"
    );
    assert!(rs256().contains(&(rs_kid.clone(), "published".into())));

    // Bad key commands: one line, non-zero, nothing changed.
    let out = s.cli(&["keys", "retire", "no-such-kid"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    let out = s.cli(&["keys", "generate", "--alg", "HS256"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

/// With `metrics_token` set, `/metrics` answers only that bearer token; the health endpoints
/// stay open. A short token is refused at start.
fn metrics_behind_a_bearer_token(b: Backend) {
    const TOKEN: &str = "scrape-0123456789abcdef";
    let s = crate::common::ServerBuilder::new(b)
        .env("PORTCULLIS_METRICS_TOKEN", TOKEN)
        .start();
    let scrape = |auth: Option<&str>| {
        let mut r = crate::common::agent().get(&s.url("/metrics"));
        if let Some(a) = auth {
            r = r.set("Authorization", a);
        }
        crate::common::Resp::from(r.call())
    };
    let open = scrape(None);
    assert_eq!(open.status, 401, "{}", open.body);
    assert_eq!(
        open.header("www-authenticate"),
        Some(r#"Bearer realm="metrics""#)
    );
    assert_eq!(scrape(Some("Bearer scrape-0123456789abcdeX")).status, 401);
    assert_eq!(scrape(Some(&format!("Basic {TOKEN}"))).status, 401);
    // The scheme is case-insensitive (RFC 7235 2.1).
    assert_eq!(scrape(Some(&format!("bearer {TOKEN}"))).status, 200);
    let ok = scrape(Some(&format!("Bearer {TOKEN}")));
    assert_eq!(ok.status, 200);
    assert!(
        ok.body.contains("portcullis_http_requests_total"),
        "{}",
        ok.body
    );
    assert_eq!(s.get("/healthz").status, 200);
    assert!(!s.logs().contains(TOKEN), "metrics token logged");

    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["migrate"])
        .current_dir(dir.path())
        .env("PORTCULLIS_METRICS_TOKEN", "short")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("metrics_token"));
}

fn operational_endpoints(b: Backend) {
    let s = Server::start(b);
    assert_eq!(s.get("/healthz").status, 200);
    let ready = s.get("/readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    let (id, secret) = s.client(&[]);
    s.cc_token(&id, &secret, None);
    s.post_form(
        "/token",
        &[("grant_type", "client_credentials")],
        Some((&id, "x")),
    );
    let m = s.get("/metrics");
    assert_eq!(m.status, 200);
    assert!(
        m.body.contains(
            r#"portcullis_tokens_issued_total{alg="ES256",grant_type="client_credentials"} 1"#
        ),
        "{}",
        m.body
    );
    assert!(
        m.body.contains(
            r#"portcullis_http_requests_total{method="POST",route="/token",status="200"} 1"#
        ),
        "{}",
        m.body
    );
    assert!(
        m.body.contains(
            r#"portcullis_http_requests_total{method="POST",route="/token",status="401"} 1"#
        ),
        "{}",
        m.body
    );
    assert!(m
        .body
        .contains(r#"portcullis_http_request_duration_seconds_bucket{route="/token""#));
    // Every response carries the request id and the security headers.
    let r = s.get("/healthz");
    assert!(r.header("x-request-id").is_some());
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert!(r
        .header("content-security-policy")
        .is_some_and(|c| c.contains("frame-ancestors 'none'")));
}

/// PostgreSQL only: cut the database away under a running server and bring it back.
#[test]
fn database_outage_gives_503_and_recovers() {
    if !postgres_available() {
        return;
    }
    let builder = ServerBuilder::new(Backend::Postgres);
    let proxy = PgProxy::start(&builder.pg().unwrap().server_addr());
    let url = builder.pg().unwrap().url_via(proxy.port);
    let s = builder.database_url(url).start();
    let (id, secret) = s.client(&[]);
    let token = s.cc_token(&id, &secret, None);
    assert_eq!(s.get("/readyz").status, 200);

    proxy.cut();
    let r = s.get("/readyz");
    assert_eq!(r.status, 503, "{}", r.body);
    // Introspection needs the revocation list: 503 with an RFC error, never a 500.
    let r = s.post_form("/introspect", &[("token", &token)], Some((&id, &secret)));
    r.assert_error(503, "temporarily_unavailable");
    // An unknown client cannot be looked up either.
    s.post_form(
        "/token",
        &[("grant_type", "client_credentials")],
        Some(("other", "x")),
    )
    .assert_error(503, "temporarily_unavailable");
    assert_eq!(s.get("/healthz").status, 200, "the process itself is fine");

    proxy.restore();
    wait_for(&s, "readiness after the database returns", || {
        s.get("/readyz").status == 200
    });
    let r = s.post_form("/introspect", &[("token", &token)], Some((&id, &secret)));
    assert_eq!(r.json()["active"], true);
}

both_backends!(
    metrics_behind_a_bearer_token,
    discovery_documents,
    jwks_publishes_public_keys_only,
    key_rotation_is_picked_up_by_a_running_server,
    operational_endpoints,
);
