//! CORS: browser apps on a client's origins may call the token, userinfo, revocation,
//! introspection, JWKS and discovery endpoints; nobody else, and never the pages.

use std::time::{Duration, Instant};

use crate::common::{agent, Backend, Resp, Server};

const APP: &str = "https://app.example.com";
const SPA: &str = "https://spa.example.org:8443";
const EVIL: &str = "https://evil.example";

fn preflight(s: &Server, path: &str, origin: &str, method: &str) -> Resp {
    agent()
        .request("OPTIONS", &s.url(path))
        .set("Origin", origin)
        .set("Access-Control-Request-Method", method)
        .set(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .call()
        .into()
}

fn acao(r: &Resp) -> Option<&str> {
    r.header("access-control-allow-origin")
}

#[test]
fn api_endpoints_answer_registered_origins_only() {
    let s = Server::start(Backend::Sqlite);
    let (id, secret) = s.client(&[
        "--name",
        "Browser app",
        "--redirect-uri",
        &format!("{APP}/callback"),
        "--allowed-origin",
        SPA,
        "--grant-type",
        "authorization_code",
        "--grant-type",
        "client_credentials",
    ]);
    // The origin set is re-read every 5 s.
    let deadline = Instant::now() + Duration::from_secs(15);
    while acao(&preflight(&s, "/token", APP, "POST")).is_none() {
        assert!(Instant::now() < deadline, "origin never allowed");
        std::thread::sleep(Duration::from_millis(200));
    }

    for (path, method) in [
        ("/token", "POST"),
        ("/introspect", "POST"),
        ("/revoke", "POST"),
        ("/userinfo", "GET"),
        ("/userinfo", "POST"),
        ("/jwks", "GET"),
        ("/.well-known/openid-configuration", "GET"),
    ] {
        for origin in [APP, SPA] {
            let r = preflight(&s, path, origin, method);
            assert!(r.status < 300, "{path} {origin}: {} {}", r.status, r.body);
            assert_eq!(acao(&r), Some(origin), "{path} from {origin}");
            let methods = r.header("access-control-allow-methods").unwrap_or_default();
            assert!(methods.contains(method), "{path}: {methods}");
            let headers = r
                .header("access-control-allow-headers")
                .unwrap_or_default()
                .to_ascii_lowercase();
            assert!(headers.contains("authorization"), "{path}: {headers}");
            assert!(r.header("access-control-allow-credentials").is_none());
        }
        let r = preflight(&s, path, EVIL, method);
        assert!(acao(&r).is_none(), "{path} must not allow {EVIL}");
    }

    // Actual requests: the allowed origin can read the answer; another one gets no CORS
    // headers (the browser withholds the response), and non-browser clients are unaffected.
    let form = [("grant_type", "client_credentials")];
    let basic = crate::common::basic_header(&id, &secret);
    let from = |origin: Option<&str>| -> Resp {
        let mut r = agent().post(&s.url("/token")).set("Authorization", &basic);
        if let Some(o) = origin {
            r = r.set("Origin", o);
        }
        r.send_form(&form).into()
    };
    let ok = from(Some(APP));
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(acao(&ok), Some(APP));
    assert!(ok
        .header("vary")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .contains("origin"));
    let evil = from(Some(EVIL));
    assert!(acao(&evil).is_none());
    assert_eq!(from(None).status, 200);
    // Another client's origin may not act for this one, even with its credentials.
    let (other, other_secret) = s.client(&[
        "--name",
        "Other app",
        "--redirect-uri",
        "https://other.example.net/cb",
        "--grant-type",
        "client_credentials",
        "--grant-type",
        "authorization_code",
    ]);
    let other_basic = crate::common::basic_header(&other, &other_secret);
    let r: Resp = agent()
        .post(&s.url("/token"))
        .set("Authorization", &other_basic)
        .set("Origin", APP)
        .send_form(&form)
        .into();
    r.assert_error(400, "unauthorized_client");
    let r: Resp = agent()
        .post(&s.url("/introspect"))
        .set("Authorization", &other_basic)
        .set("Origin", APP)
        .send_form(&[("token", "x")])
        .into();
    r.assert_error(400, "unauthorized_client");
    let own = || -> Resp {
        agent()
            .post(&s.url("/token"))
            .set("Authorization", &other_basic)
            .set("Origin", "https://other.example.net")
            .send_form(&form)
            .into()
    };
    // Right after `client create` its origin may not be in the set re-read every 5 s: the
    // browser could not read the answer, so the request must not act (a code would be spent
    // unseen). Whenever it does act, its answer carries the CORS header.
    let first = own();
    assert_eq!(
        first.status == 200,
        acao(&first).is_some(),
        "acts only when the page can read the answer: {} {}",
        first.status,
        first.body
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while acao(&preflight(
        &s,
        "/token",
        "https://other.example.net",
        "POST",
    ))
    .is_none()
    {
        assert!(Instant::now() < deadline, "origin never allowed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = own();
    assert_eq!(r.status, 200, "its own origin: {}", r.body);
    assert_eq!(acao(&r), Some("https://other.example.net"));
    let jwks: Resp = agent()
        .get(&s.url("/jwks"))
        .set("Origin", SPA)
        .call()
        .into();
    assert_eq!(acao(&jwks), Some(SPA));
    // Another origin gets no CORS headers on a plain GET either.
    for path in ["/jwks", "/.well-known/openid-configuration"] {
        let r: Resp = agent()
            .get(&s.url(path))
            .set("Origin", "https://evil.example")
            .call()
            .into();
        assert_eq!(r.status, 200);
        assert!(acao(&r).is_none(), "{path} answered another origin");
    }

    // The authorization endpoint and the pages never send CORS headers.
    for (path, method) in [
        ("/authorize", "GET"),
        ("/login", "POST"),
        ("/consent", "POST"),
        ("/logout", "GET"),
        ("/password/reset", "POST"),
        ("/account/totp", "POST"),
        ("/login/totp", "POST"),
    ] {
        let r = preflight(&s, path, APP, method);
        assert!(acao(&r).is_none(), "{path} sent CORS headers");
    }
    let page: Resp = agent()
        .get(&s.url(&format!(
            "/authorize?client_id={id}&redirect_uri={APP}/callback&response_type=code"
        )))
        .set("Origin", APP)
        .call()
        .into();
    assert!(acao(&page).is_none());

    // Origins are origins.
    for bad in [
        "https://app.example.com/path",
        "ftp://x.example",
        "app.example.com",
    ] {
        let out = s.cli(&["client", "create", "--name", "x", "--allowed-origin", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
    let shown = s.cli_json(&["client", "show", &id, "--json"]);
    assert_eq!(shown["allowed_origins"], serde_json::json!([SPA]));
}
