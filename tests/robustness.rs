//! Garbage to every endpoint: never a 500, never a dropped connection without an answer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::upstream::Upstream;
use crate::common::{agent, Backend, Resp, ServerBuilder};

const PATHS: &[&str] = &[
    "/token",
    "/introspect",
    "/revoke",
    "/jwks",
    "/.well-known/openid-configuration",
    "/.well-known/oauth-authorization-server",
    "/healthz",
    "/readyz",
    "/metrics",
    "/authorize",
    "/authorize?client_id=%00&redirect_uri=%ZZ&response_type=code",
    "/login",
    "/consent",
    "/userinfo",
    "/logout",
    "/logout?id_token_hint=a.b.c&post_logout_redirect_uri=%ZZ&client_id=%00",
    "/logout/confirm",
    "/login/google",
    "/login/github",
    "/login/link",
    "/login/google/callback",
    "/login/google/callback?state=%ZZ&code=%00&state=",
    "/login/github/callback?error=access_denied&state=x",
    "/login/github/callback?code=a&state=AAAAAAAAAAAAAAAAAAAAAA",
    "/login/nope/callback",
    "/nope",
    "/token/../jwks",
    "/%00",
];

/// Send raw bytes, return the status line's code (None if the server closed without answering).
fn raw(port: u16, request: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream.write_all(request).ok()?;
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn garbage_never_yields_a_500() {
    // With both upstreams configured, so their routes are live.
    let (google, github) = (Upstream::google(), Upstream::github());
    let mut sb = ServerBuilder::new(Backend::Sqlite);
    for (k, v) in google.google_env().into_iter().chain(github.github_env()) {
        sb = sb.env(&k, &v);
    }
    let s = sb.start();
    let (id, secret) = s.client(&[]);
    let basic = crate::common::basic_header(&id, &secret);
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"%%%%".to_vec(),
        b"grant_type=client_credentials&&&===&".to_vec(),
        b"grant_type=%ZZ".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x80],
        b"token=a.b.c&token_type_hint=refresh_token".to_vec(),
        b"token=%E2%28%A1".to_vec(),
        "grant_type=client_credentials&scope=\u{1F600}"
            .as_bytes()
            .to_vec(),
        b"grant_type=client_credentials&resource=%zz".to_vec(),
        b"grant_type=refresh_token&refresh_token=%00%01&scope=a".to_vec(),
        b"grant_type=refresh_token&refresh_token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            .to_vec(),
        b"csrf_token=x&decision=logout&post_logout_redirect_uri=javascript:alert(1)".to_vec(),
        vec![b'a'; 5000],
    ];
    let content_types = [
        "application/x-www-form-urlencoded",
        "application/json",
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded; charset=latin1",
    ];
    let auths = [
        None,
        Some(basic.as_str()),
        Some("Basic"),
        Some("Basic ====="),
        Some("Bearer x"),
        Some("Basic OmZvbw=="), // ":foo", empty id
    ];
    let mut checked = 0;
    for path in PATHS {
        for method in ["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
            for (i, body) in bodies.iter().enumerate() {
                let ct = content_types[i % content_types.len()];
                let auth = auths[i % auths.len()];
                let mut req = format!(
                    "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
                     Content-Type: {ct}\r\nContent-Length: {}\r\n",
                    body.len()
                )
                .into_bytes();
                if let Some(a) = auth {
                    req.extend_from_slice(format!("Authorization: {a}\r\n").as_bytes());
                }
                req.extend_from_slice(b"\r\n");
                req.extend_from_slice(body);
                let status =
                    raw(s.port, &req).unwrap_or_else(|| panic!("no answer: {method} {path}"));
                assert!(status < 500, "{method} {path} body#{i} gave {status}");
                checked += 1;
            }
        }
    }
    // Malformed HTTP itself.
    for junk in [
        &b"\x00\x01\x02\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"POST /token HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST /token HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /token HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n",
    ] {
        if let Some(status) = raw(s.port, junk) {
            assert!(status < 500, "{junk:?} gave {status}");
        }
    }
    assert!(checked > 300);
    // Still healthy, and still issuing.
    assert_eq!(s.get("/healthz").status, 200);
    s.cc_token(&id, &secret, None);
    let metrics = s.get("/metrics").body;
    assert!(!metrics.contains("status=\"500\""), "{metrics}");
}

/// Browser endpoints asked with a method they do not take answer with a page (and `Allow`);
/// API endpoints with the RFC's JSON.
#[test]
fn wrong_methods_get_a_page_or_json_by_endpoint() {
    let s = ServerBuilder::new(Backend::Sqlite).start();
    let put = |path: &str| Resp::from(agent().put(&s.url(path)).call());
    let mut pages: Vec<(Resp, &str)> = ["/login", "/consent", "/login/totp", "/logout/confirm"]
        .into_iter()
        .map(|p| (s.get(p), "POST"))
        .collect();
    pages.push((put("/authorize"), "GET, POST"));
    pages.push((put("/logout"), "GET, POST"));
    for (r, allow) in &pages {
        assert_eq!(r.status, 405, "{}", r.body);
        assert_eq!(r.header("allow"), Some(*allow));
        assert!(r.header("content-type").unwrap().starts_with("text/html"));
        assert!(r.body.contains("cannot be opened that way"), "{}", r.body);
        let csp = r.header("content-security-policy").unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    }
    let api = put("/token");
    api.assert_error(405, "invalid_request");
    assert_eq!(api.header("allow"), Some("POST"));
}
