//! People sign in: authorization endpoint, login and consent pages, the code grant with PKCE,
//! ID tokens and userinfo, driven over HTTP like a browser and a relying party would.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::both_backends;
use crate::common::{agent, Backend, Resp, Server, ServerBuilder};

pub const PASSWORD: &str = "tulip-granite-oboe";
pub const REDIRECT: &str = "http://127.0.0.1:9/cb";
pub const VERIFIER: &str = "dBjftJeZ4CVP-mJ92K9Y7YmMdPMgQlxIv4bqNr8eXzo";

pub fn challenge(verifier: &str) -> String {
    B64.encode(Sha256::digest(verifier.as_bytes()))
}

/// A person with a password.
pub fn user(s: &Server, username: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "user",
        "create",
        "--username",
        username,
        "--password-stdin",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = s.cli_stdin(&args, &format!("{PASSWORD}\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A cookie-keeping browser that does not follow redirects.
pub struct Browser<'a> {
    pub server: &'a Server,
    pub cookies: HashMap<String, String>,
    /// Headers sent with every request.
    pub headers: Vec<(String, String)>,
}

impl<'a> Browser<'a> {
    pub fn new(server: &'a Server) -> Self {
        Self {
            server,
            cookies: HashMap::new(),
            headers: Vec::new(),
        }
    }

    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, r: &ureq::Response) {
        for h in r.all("set-cookie") {
            let pair = h.split(';').next().unwrap_or("");
            if let Some((k, v)) = pair.split_once('=') {
                self.cookies
                    .insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
    }

    fn run(&mut self, mut req: ureq::Request, form: Option<&[(&str, &str)]>) -> Resp {
        for (k, v) in &self.headers {
            req = req.set(k, v);
        }
        let req = if self.cookies.is_empty() {
            req
        } else {
            req.set("Cookie", &self.cookie_header())
        };
        let result = match form {
            Some(f) => req.send_form(f),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("transport: {e}"),
        };
        self.keep(&resp);
        Resp::from(Ok(resp))
    }

    pub fn get(&mut self, path: &str) -> Resp {
        let url = self.server.url(path);
        self.run(agent().get(&url), None)
    }

    /// GET an absolute URL (another site, such as an upstream provider).
    pub fn get_url(&mut self, url: &str) -> Resp {
        self.run(agent().get(url), None)
    }

    /// POST to an absolute URL (another replica).
    pub fn post_url(&mut self, url: &str, form: &[(&str, &str)]) -> Resp {
        self.run(agent().post(url), Some(form))
    }

    pub fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Resp {
        let url = self.server.url(path);
        self.run(agent().post(&url), Some(form))
    }
}

/// The CSRF token this browser's cookie gives for `purpose` (what a page of ours would embed).
pub fn csrf_token_for(b: &Browser, purpose: &str) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let secret = &b.cookies["portcullis_csrf"];
    let mut h = Sha256::new();
    h.update(b"portcullis-csrf\0");
    h.update(purpose.as_bytes());
    h.update(b"\0");
    h.update(secret.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.finalize())
}

/// The authorization request's parameters.
pub fn auth_params(client_id: &str, scope: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut p: Vec<(String, String)> = vec![
        ("client_id".into(), client_id.into()),
        ("redirect_uri".into(), REDIRECT.into()),
        ("response_type".into(), "code".into()),
        ("scope".into(), scope.into()),
        ("state".into(), "st-123".into()),
        ("nonce".into(), "n-456".into()),
        ("code_challenge".into(), challenge(VERIFIER)),
        ("code_challenge_method".into(), "S256".into()),
    ];
    for (k, v) in extra {
        p.retain(|(pk, _)| pk != k);
        if !v.is_empty() {
            p.push(((*k).into(), (*v).into()));
        }
    }
    p
}

pub fn query(params: &[(String, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

/// The value of hidden input `name` in a page.
pub fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].replace("&#43;", "+").replace("&amp;", "&"))
}

/// Query parameters of a redirect.
pub fn location_params(r: &Resp) -> (String, HashMap<String, String>) {
    assert_eq!(
        r.status, 303,
        "expected a redirect, got {}: {}",
        r.status, r.body
    );
    let loc = r.header("location").expect("location").to_owned();
    let url = url::Url::parse(&loc).unwrap();
    let base = loc.split('?').next().unwrap_or_default().to_owned();
    (base, url.query_pairs().into_owned().collect())
}

/// Sign in through the pages; returns the redirect's parameters.
pub fn sign_in(
    b: &mut Browser,
    params: &[(String, String)],
    username: &str,
    approve: bool,
) -> HashMap<String, String> {
    let page = b.get(&format!("/authorize?{}", query(params)));
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = hidden(&page.body, "csrf_token").expect("csrf on login page");
    let mut form: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    form.push(("csrf_token", &csrf));
    form.push(("username", username));
    form.push(("password", PASSWORD));
    let after = b.post("/login", &form);
    if after.status == 303 {
        return location_params(&after).1;
    }
    assert_eq!(after.status, 200, "{}", after.body);
    assert!(
        after.body.contains("name=\"decision\" value=\"allow\""),
        "{}",
        after.body
    );
    let csrf = hidden(&after.body, "csrf_token").expect("csrf on consent page");
    let mut form: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    form.push(("csrf_token", &csrf));
    form.push(("decision", if approve { "allow" } else { "deny" }));
    location_params(&b.post("/consent", &form)).1
}

/// A password on a fresh login page for `params` in browser `b`; the answer to the POST.
pub fn login_attempt(
    b: &mut Browser,
    params: &[(String, String)],
    username: &str,
    password: &str,
) -> Resp {
    let page = b.get(&format!("/authorize?{}", query(params)));
    let csrf = hidden(&page.body, "csrf_token").expect("csrf on login page");
    let mut form: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    form.extend([
        ("csrf_token", csrf.as_str()),
        ("username", username),
        ("password", password),
    ]);
    b.post("/login", &form)
}

pub fn redeem(s: &Server, id: &str, secret: &str, code: &str, verifier: Option<&str>) -> Resp {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
    ];
    if let Some(v) = verifier {
        form.push(("code_verifier", v));
    }
    s.post_form("/token", &form, Some((id, secret)))
}

fn web_client(s: &Server, extra: &[&str]) -> (String, String) {
    let mut args = vec![
        "--name",
        "Photo <b>Album</b>",
        "--redirect-uri",
        REDIRECT,
        "--grant-type",
        "authorization_code",
        "--scope",
        "photos:read",
    ];
    args.extend_from_slice(extra);
    s.client(&args)
}

fn full_flow_with_id_token_and_userinfo(b: Backend) {
    let s = Server::start(b);
    let alice = user(
        &s,
        "alice",
        &[
            "--name",
            "Alice Example",
            "--email",
            "alice@example.com",
            "--role",
            "editor",
        ],
    );
    let (id, secret) = web_client(&s, &[]);
    let params = auth_params(&id, "openid profile email photos:read unregistered", &[]);
    let mut browser = Browser::new(&s);

    let login = browser.get(&format!("/authorize?{}", query(&params)));
    assert_eq!(login.status, 200);
    for needle in [
        r#"name="username""#,
        r#"autocomplete="username""#,
        r#"name="password" type="password" autocomplete="current-password""#,
        r#"name="csrf_token""#,
        r#"<label for="username">"#,
        r#"<meta name="viewport""#,
        "Album",
    ] {
        assert!(
            login.body.contains(needle),
            "login page lacks {needle}: {}",
            login.body
        );
    }
    assert!(
        !login.body.contains("<b>Album"),
        "client name must be escaped"
    );
    let csp = login.header("content-security-policy").unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert_eq!(login.header("x-content-type-options"), Some("nosniff"));
    assert!(login.header("referrer-policy").is_some());

    let back = sign_in(&mut browser, &params, "Alice", true);
    assert_eq!(back.get("state").map(String::as_str), Some("st-123"));
    assert_eq!(back.get("iss"), Some(&s.base), "RFC 9207 iss");
    let session_cookie = browser
        .cookies
        .keys()
        .find(|k| k.contains("session"))
        .cloned()
        .expect("session cookie");
    assert!(
        !session_cookie.starts_with("__Host-"),
        "http issuer: no __Host- prefix"
    );

    let tokens = redeem(&s, &id, &secret, &back["code"], Some(VERIFIER));
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    assert_eq!(tokens.header("cache-control"), Some("no-store"));
    let t = tokens.json();
    assert_eq!(
        t["scope"], "openid profile email photos:read",
        "unregistered scope dropped"
    );
    let access = t["access_token"].as_str().unwrap();
    let id_token = t["id_token"].as_str().unwrap();

    // The ID token, verified with jsonwebtoken against the published JWKS, RS256 pinned.
    let jwks: JwkSet = agent()
        .get(&s.url("/jwks"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    let key = DecodingKey::from_jwk(jwks.find(&header.kid.unwrap()).unwrap()).unwrap();
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[&id]);
    v.set_issuer(&[&s.base]);
    let claims: Value = jsonwebtoken::decode(id_token, &key, &v).unwrap().claims;
    assert_eq!(claims["sub"], alice["id"]);
    assert_eq!(claims["nonce"], "n-456");
    assert_eq!(claims["azp"], id.as_str());
    assert_eq!(claims["amr"], serde_json::json!(["pwd"]));
    assert!(claims["acr"].is_string() && claims["auth_time"].is_i64());
    let digest = Sha256::digest(access.as_bytes());
    assert_eq!(claims["at_hash"], B64.encode(&digest[..16]));

    let at_claims = crate::token::verify_independently(&s, access, Algorithm::ES256);
    assert_eq!(at_claims["sub"], alice["id"]);
    assert!(
        at_claims.get("roles").is_none(),
        "roles only with the roles scope"
    );
    assert_eq!(at_claims["amr"], serde_json::json!(["pwd"]));

    // userinfo: Bearer header (GET) and form body (POST).
    let ui: Value = agent()
        .get(&s.url("/userinfo"))
        .set("Authorization", &format!("Bearer {access}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(ui["sub"], alice["id"]);
    assert_eq!(ui["name"], "Alice Example");
    assert_eq!(ui["preferred_username"], "alice");
    assert_eq!(ui["email"], "alice@example.com");
    let ui2 = s.post_form("/userinfo", &[("access_token", access)], None);
    assert_eq!(ui2.json(), ui);
    let bad = s.post_form("/userinfo", &[("access_token", "nope")], None);
    assert_eq!(bad.status, 401);
    assert!(bad
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
    // RFC 6750: the token sent two ways, or an empty Bearer, is invalid_request (400); a body
    // that is not a form carries no token (401, a challenge without an error code).
    let status_and_challenge = |r: Result<ureq::Response, ureq::Error>| match r {
        Ok(r) => (r.status(), r.header("www-authenticate").map(str::to_owned)),
        Err(ureq::Error::Status(code, r)) => {
            (code, r.header("www-authenticate").map(str::to_owned))
        }
        Err(e) => panic!("{e}"),
    };
    let twice = agent()
        .post(&s.url("/userinfo"))
        .set("Authorization", &format!("Bearer {access}"))
        .send_form(&[("access_token", access)]);
    let (status, challenge) = status_and_challenge(twice);
    assert_eq!(status, 400);
    assert!(challenge.unwrap().contains("invalid_request"));
    let repeated = s.post_form(
        "/userinfo",
        &[("access_token", access), ("access_token", access)],
        None,
    );
    assert_eq!(repeated.status, 400);
    assert!(repeated
        .header("www-authenticate")
        .is_some_and(|c| c.contains("invalid_request")));
    let empty = agent()
        .get(&s.url("/userinfo"))
        .set("Authorization", "Bearer ")
        .call();
    let (status, challenge) = status_and_challenge(empty);
    assert_eq!(status, 400);
    assert!(challenge.unwrap().contains("invalid_request"));
    let json_body = agent()
        .post(&s.url("/userinfo"))
        .set("Content-Type", "application/json")
        .send_string(&format!("{{\"access_token\":\"{access}\"}}"));
    let (status, challenge) = status_and_challenge(json_body);
    assert_eq!(status, 401);
    assert_eq!(challenge.as_deref(), Some("Bearer realm=\"portcullis\""));

    // Consent is remembered: the same request goes straight back with a code.
    let again = browser.get(&format!("/authorize?{}", query(&params)));
    let (_, q) = location_params(&again);
    assert!(q.contains_key("code"));
    // ... but a new scope asks again, and prompt=consent always asks.
    for extra in [("scope", "openid phone"), ("prompt", "consent")] {
        let p = auth_params(&id, "openid profile", &[extra]);
        let r = browser.get(&format!("/authorize?{}", query(&p)));
        assert_eq!(r.status, 200, "{extra:?}");
        assert!(
            r.body.contains("value=\"allow\""),
            "{extra:?}: consent page expected"
        );
    }

    // Replay of the first code: refused, and the access token it issued is revoked.
    redeem(&s, &id, &secret, &back["code"], Some(VERIFIER)).assert_error(400, "invalid_grant");
    let intro = s.post_form("/introspect", &[("token", access)], Some((&id, &secret)));
    assert_eq!(intro.json()["active"], false);
    let gone = s.post_form("/userinfo", &[("access_token", access)], None);
    assert_eq!(gone.status, 401);
}

fn untrusted_requests_never_redirect(b: Backend) {
    let s = Server::start(b);
    let (id, _) = web_client(&s, &[]);
    let mut browser = Browser::new(&s);
    // Too long to come back in a Location header.
    let long = "x".repeat(2049);
    let longer = "x".repeat(8193);
    for extra in [
        ("state", long.as_str()),
        ("redirect_uri", "http://127.0.0.1:9/cb/other"),
        ("redirect_uri", "http://evil.example.com/cb"),
        ("redirect_uri", ""),
        ("client_id", "<script>alert(1)</script>"),
        ("client_id", ""),
        // PostgreSQL would refuse to store it with the code.
        ("nonce", "n\u{0}1"),
    ] {
        let p = auth_params(&id, "openid", &[extra]);
        let r = browser.get(&format!("/authorize?{}", query(&p)));
        assert_eq!(r.status, 400, "{extra:?}");
        assert!(r.header("location").is_none(), "{extra:?} redirected");
        assert!(!r.body.contains("<script>"), "unescaped markup");
        assert!(r.header("content-type").unwrap().starts_with("text/html"));
    }
    // Markup in state is escaped when it is carried in a form.
    let p = auth_params(&id, "openid", &[("state", "\"><script>x()</script>")]);
    let r = browser.get(&format!("/authorize?{}", query(&p)));
    assert_eq!(r.status, 200);
    assert!(!r.body.contains("<script>x()"), "{}", r.body);
    // Other errors go back to the registered URI, with state and iss.
    for (extra, code) in [
        (("response_type", "token"), "unsupported_response_type"),
        (("code_challenge_method", "plain"), "invalid_request"),
        (("request", "eyJ"), "request_not_supported"),
        (("prompt", "none"), "login_required"),
        (("max_age", "soon"), "invalid_request"),
        (("response_mode", "fragment"), "invalid_request"),
        (("response_mode", "form_post"), "invalid_request"),
        (("nonce", long.as_str()), "invalid_request"),
        (("login_hint", long.as_str()), "invalid_request"),
    ] {
        let p = auth_params(&id, "openid", &[extra]);
        let r = browser.get(&format!("/authorize?{}", query(&p)));
        let (base, q) = location_params(&r);
        assert_eq!(base, REDIRECT);
        assert_eq!(q.get("error").map(String::as_str), Some(code), "{extra:?}");
        assert_eq!(q.get("state").map(String::as_str), Some("st-123"));
        assert_eq!(q.get("iss"), Some(&s.base));
    }
    // Carried through the pages and stored during an upstream sign-in: refused for its length
    // before it is read as a token.
    let p = auth_params(&id, "openid", &[("id_token_hint", longer.as_str())]);
    let (_, q) = location_params(&browser.get(&format!("/authorize?{}", query(&p))));
    assert_eq!(q.get("error").map(String::as_str), Some("invalid_request"));
    assert!(
        q.get("error_description")
            .is_some_and(|d| d.contains("too long")),
        "{q:?}"
    );
}

/// A redirect URI registered on a loopback IP matches on any port (RFC 8252 7.3, native apps);
/// the code is then bound to the URI as requested.
fn loopback_redirect_uris_match_on_any_port(b: Backend) {
    let s = Server::start(b);
    user(&s, "lou", &[]);
    let (id, secret) = s.client(&[
        "--name",
        "Desktop",
        "--redirect-uri",
        "http://127.0.0.1/callback",
        "--grant-type",
        "authorization_code",
    ]);
    const AT_PORT: &str = "http://127.0.0.1:53219/callback";
    let mut browser = Browser::new(&s);
    let params = auth_params(&id, "openid", &[("redirect_uri", AT_PORT)]);
    let back = browser.get(&format!("/authorize?{}", query(&params)));
    assert_eq!(back.status, 200, "{}", back.body);
    let code = sign_in(&mut browser, &params, "lou", true)["code"].clone();
    let redeem_at = |uri: &str| {
        s.post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", uri),
                ("code_verifier", VERIFIER),
            ],
            Some((&id, &secret)),
        )
    };
    redeem_at("http://127.0.0.1:1/callback").assert_error(400, "invalid_grant");
    let t = redeem_at(AT_PORT);
    assert_eq!(t.status, 200, "{}", t.body);
    // Only the port is free: another path, or localhost, is not registered.
    for other in [
        "http://127.0.0.1:53219/callback/x",
        "http://localhost:53219/callback",
    ] {
        let p = auth_params(&id, "openid", &[("redirect_uri", other)]);
        let r = browser.get(&format!("/authorize?{}", query(&p)));
        assert_eq!(r.status, 400, "{other}");
        assert!(r.header("location").is_none(), "{other}");
    }
}

fn csrf_and_login_failures(b: Backend) {
    // Every attempt here comes from 127.0.0.1: keep the per-address limit out of the way.
    let s = ServerBuilder::new(b)
        .env("PORTCULLIS_LOGIN__IP_MAX_FAILURES", "100")
        .start();
    user(&s, "bob", &[]);
    let (id, _) = web_client(&s, &[]);
    let params = auth_params(&id, "openid", &[]);
    let mut browser = Browser::new(&s);
    let page = browser.get(&format!("/authorize?{}", query(&params)));
    let csrf = hidden(&page.body, "csrf_token").unwrap();
    let form = |csrf: &str, user: &str, pw: &str| -> Vec<(String, String)> {
        let mut f = params.clone();
        f.push(("csrf_token".into(), csrf.into()));
        f.push(("username".into(), user.into()));
        f.push(("password".into(), pw.into()));
        f
    };
    let post = |b: &mut Browser, f: Vec<(String, String)>| {
        let refs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        b.post("/login", &refs)
    };
    // Missing, wrong, or another browser's CSRF token: refused before the password is looked at.
    for bad in ["", "forged"] {
        let r = post(&mut browser, form(bad, "bob", PASSWORD));
        assert_eq!(r.status, 403, "{}", r.body);
    }
    let mut other = Browser::new(&s);
    let r = post(&mut other, form(&csrf, "bob", PASSWORD));
    assert_eq!(r.status, 403);
    assert!(!browser.cookies.keys().any(|k| k.contains("session")));

    // Wrong password and unknown user: the same page, status and message.
    let wrong = post(&mut browser, form(&csrf, "bob", "not-the-password"));
    let unknown = post(&mut browser, form(&csrf, "nobody", "not-the-password"));
    assert_eq!(wrong.status, 401);
    assert_eq!(unknown.status, wrong.status);
    assert!(wrong
        .body
        .contains("The username or password is incorrect."));
    assert_eq!(
        wrong.body.replace("value=\"bob\"", ""),
        unknown.body.replace("value=\"nobody\"", ""),
        "pages differ between unknown user and wrong password"
    );

    // Lockout after 5 failures in a row (one above): the right password is refused too,
    // with the same message; `user unlock` ends it.
    for _ in 0..4 {
        post(&mut browser, form(&csrf, "bob", "not-the-password"));
    }
    let locked = post(&mut browser, form(&csrf, "bob", PASSWORD));
    assert_eq!(locked.status, 401);
    assert!(locked
        .body
        .contains("The username or password is incorrect."));
    let shown = s.cli_json(&["user", "show", "bob", "--json"]);
    assert!(shown["locked_until"].is_i64(), "{shown}");
    s.cli_json(&["user", "unlock", "bob", "--json"]);
    // Guesses in parallel cannot outrun the lockout: each is counted before its hash is checked.
    let handles: Vec<_> = (0..12)
        .map(|_| {
            let f = form(&csrf, "bob", "parallel-wrong-guess");
            let (url, cookies) = (s.url("/login"), browser.cookie_header());
            std::thread::spawn(move || {
                let refs: Vec<(&str, &str)> =
                    f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                match agent().post(&url).set("Cookie", &cookies).send_form(&refs) {
                    Ok(r) => r.status(),
                    Err(ureq::Error::Status(c, _)) => c,
                    Err(e) => panic!("{e}"),
                }
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 401);
    }
    let locked = post(&mut browser, form(&csrf, "bob", PASSWORD));
    assert_eq!(locked.status, 401, "the burst locked the account");
    s.cli_json(&["user", "unlock", "bob", "--json"]);
    let ok = post(&mut browser, form(&csrf, "bob", PASSWORD));
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(browser.cookies.keys().any(|k| k.contains("session")));
}

fn pkce_and_code_rules(b: Backend) {
    let s = Server::start(b);
    user(&s, "carol", &[]);
    let (id, secret) = web_client(&s, &["--skip-consent"]);
    let mut browser = Browser::new(&s);
    let params = auth_params(&id, "openid", &[]);
    let code = sign_in(&mut browser, &params, "carol", true)["code"].clone();
    // Wrong verifier, missing verifier (downgrade), another client: refused without using it up.
    redeem(&s, &id, &secret, &code, Some(&"x".repeat(43))).assert_error(400, "invalid_grant");
    redeem(&s, &id, &secret, &code, None).assert_error(400, "invalid_grant");
    let (other, other_secret) = web_client(&s, &[]);
    redeem(&s, &other, &other_secret, &code, Some(VERIFIER)).assert_error(400, "invalid_grant");
    let wrong_uri = s.post_form(
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/other"),
            ("code_verifier", VERIFIER),
        ],
        Some((&id, &secret)),
    );
    wrong_uri.assert_error(400, "invalid_grant");
    // The authorization request had one, so the token request must (RFC 6749 4.1.3).
    let no_uri = s.post_form(
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", VERIFIER),
        ],
        Some((&id, &secret)),
    );
    no_uri.assert_error(400, "invalid_request");
    assert!(no_uri.body.contains("redirect_uri"), "{}", no_uri.body);
    assert_eq!(redeem(&s, &id, &secret, &code, Some(VERIFIER)).status, 200);

    // 50 concurrent redemptions of one fresh code: exactly one wins.
    let code =
        location_params(&browser.get(&format!("/authorize?{}", query(&params)))).1["code"].clone();
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let (url, id, secret, code) =
                (s.url("/token"), id.clone(), secret.clone(), code.clone());
            std::thread::spawn(move || {
                let r = agent()
                    .post(&url)
                    .set("Authorization", &crate::common::basic_header(&id, &secret))
                    .send_form(&[
                        ("grant_type", "authorization_code"),
                        ("code", &code),
                        ("redirect_uri", REDIRECT),
                        ("code_verifier", VERIFIER),
                    ]);
                match r {
                    Ok(r) => r.status(),
                    Err(ureq::Error::Status(c, _)) => c,
                    Err(e) => panic!("{e}"),
                }
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 400),
        "{statuses:?}"
    );

    // prompt=consent asks even a --skip-consent client.
    let ask = auth_params(&id, "openid", &[("prompt", "consent")]);
    let page = browser.get(&format!("/authorize?{}", query(&ask)));
    assert_eq!(page.status, 200);
    assert!(page.body.contains("value=\"allow\""));

    // A public client must use PKCE.
    let spa = s.cli_json(&[
        "client",
        "create",
        "--name",
        "SPA",
        "--public",
        "--redirect-uri",
        REDIRECT,
        "--json",
    ]);
    let spa_id = spa["client_id"].as_str().unwrap();
    let p = auth_params(
        spa_id,
        "openid",
        &[("code_challenge", ""), ("code_challenge_method", "")],
    );
    let (_, q) = location_params(&browser.get(&format!("/authorize?{}", query(&p))));
    assert_eq!(q["error"], "invalid_request");
}

fn prompt_login_max_age_and_deny(b: Backend) {
    let s = Server::start(b);
    user(&s, "dave", &[]);
    let (id, secret) = web_client(&s, &[]);
    let mut browser = Browser::new(&s);
    let params = auth_params(&id, "openid", &[]);
    let first = sign_in(&mut browser, &params, "dave", true);
    let t1 = redeem(&s, &id, &secret, &first["code"], Some(VERIFIER)).json();
    let auth_time = |t: &Value| -> i64 {
        let payload = t["id_token"]
            .as_str()
            .unwrap()
            .split('.')
            .nth(1)
            .unwrap()
            .to_owned();
        let v: Value = serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap();
        v["auth_time"].as_i64().unwrap()
    };
    // prompt=none with a session: a code, no page.
    let none = auth_params(&id, "openid", &[("prompt", "none")]);
    assert!(
        location_params(&browser.get(&format!("/authorize?{}", query(&none))))
            .1
            .contains_key("code")
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // max_age=0 and prompt=login force a new sign-in with a later auth_time.
    for extra in [
        ("max_age", "0"),
        ("prompt", "login"),
        ("prompt", "select_account"),
    ] {
        let p = auth_params(&id, "openid", &[extra]);
        let page = browser.get(&format!("/authorize?{}", query(&p)));
        assert_eq!(page.status, 200, "{extra:?}");
        assert!(
            page.body.contains("name=\"password\""),
            "{extra:?}: login page expected"
        );
    }
    let p = auth_params(&id, "openid", &[("prompt", "login")]);
    let again = sign_in(&mut browser, &p, "dave", true);
    let t2 = redeem(&s, &id, &secret, &again["code"], Some(VERIFIER)).json();
    assert!(auth_time(&t2) > auth_time(&t1));
    // login_hint pre-fills the username.
    let hint = auth_params(
        &id,
        "openid",
        &[("login_hint", "dave@home"), ("prompt", "login")],
    );
    assert!(browser
        .get(&format!("/authorize?{}", query(&hint)))
        .body
        .contains("value=\"dave@home\""));
    // A request with no scope at all still needs the person to approve the client once.
    let mut newcomer = Browser::new(&s);
    let (other_id, _) = web_client(&s, &[]);
    let bare = auth_params(&other_id, "", &[("scope", "")]);
    let page = newcomer.get(&format!("/authorize?{}", query(&bare)));
    let csrf = hidden(&page.body, "csrf_token").unwrap();
    let mut f: Vec<(&str, &str)> = bare.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    f.extend([
        ("csrf_token", csrf.as_str()),
        ("username", "dave"),
        ("password", PASSWORD),
    ]);
    let consent = newcomer.post("/login", &f);
    assert_eq!(consent.status, 200, "{}", consent.body);
    assert!(
        consent.body.contains("value=\"allow\""),
        "no silent code without consent"
    );
    // Denying consent sends access_denied to the client.
    let mut fresh = Browser::new(&s);
    let denied = sign_in(
        &mut fresh,
        &auth_params(&id, "openid email", &[]),
        "dave",
        false,
    );
    assert_eq!(denied["error"], "access_denied");
    assert_eq!(denied["state"], "st-123");
}

fn failed_sign_ins_are_limited_per_address(b: Backend) {
    let s = ServerBuilder::new(b)
        .env("PORTCULLIS_LOGIN__IP_MAX_FAILURES", "3")
        .env("PORTCULLIS_LOGIN__TRUST_FORWARDED_FOR", "true")
        .start();
    for name in ["ivan", "judy"] {
        user(&s, name, &[]);
    }
    let (id, _) = web_client(&s, &[]);
    let params = auth_params(&id, "openid", &[]);
    let attempt = |address: &str, username: &str, password: &str| -> u16 {
        let mut b = Browser::new(&s);
        // Documentation addresses (RFC 5737): only a header value, never contacted.
        b.headers
            .push(("X-Forwarded-For".into(), format!("198.51.100.7, {address}")));
        login_attempt(&mut b, &params, username, password).status
    };
    // Three failures against different accounts from one address (no account reaches its own
    // lockout) ...
    assert_eq!(attempt("192.0.2.10", "ivan", "wrong-password-1"), 401);
    assert_eq!(attempt("192.0.2.10", "judy", "wrong-password-2"), 401);
    assert_eq!(attempt("192.0.2.10", "nobody", "wrong-password-3"), 401);
    // ... and that address is refused even with a right password; another address is not.
    assert_eq!(attempt("192.0.2.10", "ivan", PASSWORD), 429);
    assert_eq!(attempt("192.0.2.11", "ivan", PASSWORD), 200);
}

/// userinfo releases each claim only with its scope (OIDC Core 5.4), and leaves out claims the
/// person does not have.
fn userinfo_releases_claims_by_scope(b: Backend) {
    let s = Server::start(b);
    let ann = user(
        &s,
        "ann",
        &[
            "--name",
            "Ann Example",
            "--email",
            "ann@example.com",
            "--phone-number",
            "+1 555 0100",
            "--address",
            "1 Main Street\\nSpringfield",
        ],
    );
    assert_eq!(ann["phone_number"], "+1 555 0100");
    assert_eq!(ann["address"], "1 Main Street\nSpringfield");
    user(&s, "bo", &[]);
    let (id, secret) = web_client(&s, &[]);
    let c = (id.as_str(), secret.as_str());
    let info = |username: &str, scope: &str| -> Value {
        let mut browser = Browser::new(&s);
        let t = crate::refresh::tokens(&s, &mut browser, c, username, scope);
        let at = t["access_token"].as_str().unwrap();
        s.post_form("/userinfo", &[("access_token", at)], None)
            .json()
    };
    let only_sub = info("ann", "openid");
    assert_eq!(only_sub, serde_json::json!({ "sub": ann["id"] }));
    let contact = info("ann", "openid phone address");
    assert_eq!(contact["phone_number"], "+1 555 0100");
    assert_eq!(
        contact["address"],
        serde_json::json!({ "formatted": "1 Main Street\nSpringfield" })
    );
    assert!(contact.get("email").is_none() && contact.get("name").is_none());
    let profile = info("ann", "openid profile email");
    assert_eq!(profile["name"], "Ann Example");
    assert_eq!(profile["email"], "ann@example.com");
    assert!(profile.get("phone_number").is_none() && profile.get("address").is_none());
    let bare = info("bo", "openid profile email phone address");
    assert_eq!(bare["preferred_username"], "bo");
    for absent in ["name", "email", "phone_number", "address"] {
        assert!(bare.get(absent).is_none(), "{absent}: {bare}");
    }
}

both_backends!(
    loopback_redirect_uris_match_on_any_port,
    userinfo_releases_claims_by_scope,
    failed_sign_ins_are_limited_per_address,
    full_flow_with_id_token_and_userinfo,
    untrusted_requests_never_redirect,
    csrf_and_login_failures,
    pkce_and_code_rules,
    prompt_login_max_age_and_deny,
);
