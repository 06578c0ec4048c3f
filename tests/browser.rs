//! A real headless Chromium signs in on the hosted pages, approves consent and lands on a local
//! callback with a code. Driven through chromedriver's W3C WebDriver HTTP API. Screenshots of
//! the pages are saved to `target/screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver`; skipped with a notice when they are missing,
//! unless `REQUIRE_CHROMIUM=1` (CI), which makes their absence a failure.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::common::upstream::{Person, Upstream};
use crate::common::{agent, free_port, Backend, Server, ServerBuilder};
use crate::signin::{auth_params, challenge, query, user, VERIFIER};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

fn available() -> bool {
    let present = Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists();
    if !present {
        assert!(
            std::env::var("REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "REQUIRE_CHROMIUM=1 but chromium / chromium-driver are not installed"
        );
        eprintln!("NOTICE: browser test skipped (install Debian's chromium and chromium-driver)");
    }
    present
}

/// chromedriver with one session; both end when this is dropped.
struct WebDriver {
    base: String,
    session: String,
    child: Child,
}

impl WebDriver {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while agent().get(&format!("{base}/status")).call().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-quic", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--window-size=480,900"]
            }
        }}});
        let mut wd = WebDriver {
            base,
            session: String::new(),
            child,
        };
        let v = wd.call("POST", "/session", Some(caps));
        wd.session = v["sessionId"].as_str().expect("session id").to_owned();
        // Finding an element waits for it (pages arrive after redirects through other sites).
        wd.call("POST", "/timeouts", Some(json!({"implicit": 10_000})));
        wd
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let req = agent().request(method, &url);
        let resp = match body {
            Some(b) => req.send_json(b),
            None if method == "POST" => req.send_json(json!({})),
            None => req.call(),
        };
        let resp = match resp {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => panic!(
                "webdriver {path}: {code} {}",
                r.into_string().unwrap_or_default()
            ),
            Err(e) => panic!("webdriver {path}: {e}"),
        };
        let v: Value = resp.into_json().expect("webdriver json");
        v["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url})));
    }

    fn url(&self) -> String {
        self.call("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn element(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .expect("element id")
            .to_owned()
    }

    fn text(&self, css: &str) -> String {
        let id = self.element(css);
        self.call("GET", &format!("/element/{id}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Wait until the element `css` says `expected` (the page may still be navigating: an
    /// element of the old page goes stale).
    fn wait_text(&self, css: &str, expected: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("{}/session/{}/element", self.base, self.session);
        loop {
            let found = agent()
                .post(&url)
                .send_json(json!({"using": "css selector", "value": css}))
                .ok()
                .and_then(|r| r.into_json::<Value>().ok())
                .and_then(|v| {
                    let id = v["value"]
                        .as_object()?
                        .values()
                        .next()?
                        .as_str()?
                        .to_owned();
                    let t = agent()
                        .get(&format!("{url}/{id}/text"))
                        .call()
                        .ok()?
                        .into_json::<Value>()
                        .ok()?;
                    t["value"].as_str().map(str::to_owned)
                });
            if found.as_deref() == Some(expected) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never said {expected:?} (last: {found:?}) at {}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        );
    }

    fn click(&self, css: &str) {
        let id = self.element(css);
        self.call("POST", &format!("/element/{id}/click"), None);
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .expect("png");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(name);
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    fn wait_for_url(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let u = self.url();
            if u.starts_with(prefix) {
                return u;
            }
            assert!(Instant::now() < deadline, "browser stayed at {u}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for WebDriver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = agent()
                .delete(&format!("{}/session/{}", self.base, self.session))
                .call();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A local relying-party callback that answers every request with a small page.
fn callback_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind callback");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = stream.read(&mut buf);
            let body = "<!doctype html><title>Callback</title><p>Signed in.</p>";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn chromium_signs_in_and_approves() {
    if !available() {
        return;
    }
    let s = Server::start(Backend::Sqlite);
    user(
        &s,
        "erin",
        &["--name", "Erin Example", "--email", "erin@example.com"],
    );
    let cb_port = callback_server();
    let redirect = format!("http://127.0.0.1:{cb_port}/callback");
    let (id, secret) = s.client(&[
        "--name",
        "Acme Photos",
        "--redirect-uri",
        &redirect,
        "--scope",
        "photos:read",
        "--post-logout-redirect-uri",
        &format!("http://127.0.0.1:{cb_port}/bye"),
    ]);
    let mut params = auth_params(&id, "openid profile email photos:read", &[]);
    for (k, v) in params.iter_mut() {
        if k == "redirect_uri" {
            v.clone_from(&redirect);
        }
    }
    assert_eq!(challenge(VERIFIER).len(), 43);

    let wd = WebDriver::start();
    wd.goto(&s.url(&format!("/authorize?{}", query(&params))));
    wd.screenshot("login.png");
    wd.type_into("input[name=username]", "erin");
    wd.type_into("input[name=password]", crate::signin::PASSWORD);
    wd.click("button[type=submit]");
    wd.wait_for_url(&s.url("/login"));
    wd.element("button[name=decision][value=allow]");
    wd.screenshot("consent.png");
    wd.click("button[name=decision][value=allow]");
    let landed = wd.wait_for_url(&redirect);
    let url = url::Url::parse(&landed).unwrap();
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["state"], "st-123");
    assert_eq!(q["iss"], s.base);
    // The relying party redeems the code it received in the browser.
    let r = {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", q["code"].as_str()),
            ("redirect_uri", redirect.as_str()),
            ("code_verifier", VERIFIER),
        ];
        s.post_form("/token", &form, Some((&id, &secret)))
    };
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["id_token"].is_string());

    // Sign out: the application sends the browser to the end-session endpoint without a hint,
    // so the person is asked first; then back to the application's registered page.
    let bye = format!("http://127.0.0.1:{cb_port}/bye");
    let logout = form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", &id)
        .append_pair("post_logout_redirect_uri", &bye)
        .append_pair("state", "out-1")
        .finish();
    wd.goto(&s.url(&format!("/logout?{logout}")));
    wd.element("button[name=decision][value=logout]");
    wd.screenshot("logout.png");
    wd.click("button[name=decision][value=logout]");
    let landed = wd.wait_for_url(&bye);
    assert!(landed.contains("state=out-1"), "{landed}");
    // Signed out: another sign-in request shows the login page again; our own signed-out page.
    wd.goto(&s.url("/logout"));
    assert_eq!(wd.text("h1"), "You have signed out");
    wd.screenshot("signed-out.png");
    wd.goto(&s.url(&format!("/authorize?{}", query(&params))));
    wd.element("input[name=password]");
}

/// A server with the given upstream stand-ins, a client whose redirect URI is a local callback
/// page, and the authorization request's parameters.
fn federated_setup(
    google: Option<&Upstream>,
    github: Option<&Upstream>,
) -> (Server, String, String, String, Vec<(String, String)>) {
    let mut sb = ServerBuilder::new(Backend::Sqlite);
    let env: Vec<(String, String)> = google
        .map(Upstream::google_env)
        .into_iter()
        .chain(github.map(Upstream::github_env))
        .flatten()
        .collect();
    for (k, v) in &env {
        sb = sb.env(k, v);
    }
    let s = sb.start();
    let cb_port = callback_server();
    let redirect = format!("http://127.0.0.1:{cb_port}/callback");
    let (id, secret) = s.client(&[
        "--name",
        "Acme Photos",
        "--redirect-uri",
        &redirect,
        "--scope",
        "photos:read",
    ]);
    let mut params = auth_params(&id, "openid profile email photos:read", &[]);
    for (k, v) in params.iter_mut() {
        if k == "redirect_uri" {
            v.clone_from(&redirect);
        }
    }
    (s, id, secret, redirect, params)
}

/// Approve on the consent page, land on the client's callback, redeem the code: the ID token.
fn approve_and_redeem(wd: &WebDriver, s: &Server, id: &str, secret: &str, redirect: &str) -> Value {
    wd.click("button[name=decision][value=allow]");
    let landed = wd.wait_for_url(redirect);
    let url = url::Url::parse(&landed).unwrap();
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["state"], "st-123");
    let form = [
        ("grant_type", "authorization_code"),
        ("code", q["code"].as_str()),
        ("redirect_uri", redirect),
        ("code_verifier", VERIFIER),
    ];
    let r = s.post_form("/token", &form, Some((id, secret)));
    assert_eq!(r.status, 200, "{}", r.body);
    crate::refresh::payload(r.json()["id_token"].as_str().expect("id_token"))
}

/// "Sign in with Google" in Chromium: the button, the provider, back to consent and the client.
#[test]
fn chromium_signs_in_with_google() {
    if !available() {
        return;
    }
    let google = Upstream::google();
    let (s, id, secret, redirect, params) = federated_setup(Some(&google), None);
    google.set_person(Person::new("777000111", Some("gwen@example.com"), true));
    let wd = WebDriver::start();
    wd.goto(&s.url(&format!("/authorize?{}", query(&params))));
    assert!(wd
        .text("button.upstream-google")
        .contains("Sign in with Google"));
    wd.click("button.upstream-google");
    wd.element("button[name=decision][value=allow]");
    let claims = approve_and_redeem(&wd, &s, &id, &secret, &redirect);
    let users = s.cli_json(&["user", "show", "google:777000111", "--json"]);
    assert_eq!(claims["sub"], users["id"]);
    assert_eq!(claims["amr"], json!(["fed"]));
}

/// "Sign in with GitHub" in Chromium, where the verified email matches a local account: the
/// linking page takes that account's password, then the sign-in continues as that account.
#[test]
fn chromium_signs_in_with_github_and_links_the_account() {
    if !available() {
        return;
    }
    let google = Upstream::google();
    let github = Upstream::github();
    let (s, id, secret, redirect, params) = federated_setup(Some(&google), Some(&github));
    let hana = user(
        &s,
        "hana",
        &["--name", "Hana Example", "--email", "hana@example.com"],
    );
    github.set_person(Person::new("4242", Some("hana@example.com"), true));
    let wd = WebDriver::start();
    wd.goto(&s.url(&format!("/authorize?{}", query(&params))));
    wd.element("button.upstream-github");
    wd.screenshot("login-upstreams.png");
    wd.click("button.upstream-github");
    wd.wait_text("h1", "Link your GitHub account");
    wd.screenshot("link.png");
    wd.type_into("input[name=password]", crate::signin::PASSWORD);
    wd.click("button[name=decision][value=link]");
    wd.element("button[name=decision][value=allow]");
    let claims = approve_and_redeem(&wd, &s, &id, &secret, &redirect);
    assert_eq!(claims["sub"], hana["id"]);

    // The provider declining shows our page with a way back to the login page.
    // (Still signed in and consented, so prompt=login brings the login page back.)
    github.set_fault(crate::common::upstream::Fault::Deny);
    let mut again = params.clone();
    again.push(("prompt".into(), "login".into()));
    wd.goto(&s.url(&format!("/authorize?{}", query(&again))));
    wd.click("button.upstream-github");
    wd.wait_text("h1", "Sign-in with GitHub was cancelled");
    wd.screenshot("upstream-cancelled.png");
    wd.click("a.button");
    wd.element("input[name=password]");
}

/// TOTP in Chromium: enrolment on the page (QR code, first code, recovery codes), then a
/// sign-in that asks for the next code after the password.
#[test]
fn chromium_enrols_totp_and_signs_in_with_a_code() {
    if !available() {
        return;
    }
    let (s, id, secret, redirect, params) = federated_setup(None, None);
    user(&s, "tomas", &["--name", "Tomás Example"]);
    let wd = WebDriver::start();
    wd.goto(&s.url(&format!("/authorize?{}", query(&params))));
    wd.type_into("input[name=username]", "tomas");
    wd.type_into("input[name=password]", crate::signin::PASSWORD);
    wd.click("button[type=submit]");
    wd.element("button[name=decision][value=allow]");
    let claims = approve_and_redeem(&wd, &s, &id, &secret, &redirect);
    assert_eq!(claims["amr"], json!(["pwd"]));

    wd.goto(&s.url("/account/totp"));
    wd.element(".qr svg");
    wd.screenshot("totp-enrol.png");
    let key = wd.text("code.secret");
    wd.type_into("input[name=code]", &crate::mfa::code_from_key(&key));
    wd.click("button[type=submit]");
    wd.wait_text("h1", "Two-step verification is on");
    wd.screenshot("recovery-codes.png");
    let recovery = wd.text("ul.codes li code");

    // The enrolment used this time step's code: the sign-in takes the next one.
    let step = |t: u64| t / 30;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let enrolled_at = step(now());
    let mut again = params.clone();
    again.push(("prompt".into(), "login".into()));
    wd.goto(&s.url(&format!("/authorize?{}", query(&again))));
    wd.type_into("input[name=username]", "tomas");
    wd.type_into("input[name=password]", crate::signin::PASSWORD);
    wd.click("button[type=submit]");
    wd.element("input[name=code][autocomplete=one-time-code][inputmode=numeric]");
    wd.screenshot("totp.png");
    while step(now()) <= enrolled_at {
        std::thread::sleep(Duration::from_millis(250));
    }
    wd.type_into("input[name=code]", &crate::mfa::code_from_key(&key));
    wd.click("button[type=submit]");
    let landed = wd.wait_for_url(&redirect);
    let url = url::Url::parse(&landed).unwrap();
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", q["code"].as_str()),
        ("redirect_uri", redirect.as_str()),
        ("code_verifier", VERIFIER),
    ];
    let r = s.post_form("/token", &form, Some((&id, &secret)));
    let claims = crate::refresh::payload(r.json()["id_token"].as_str().unwrap());
    assert_eq!(claims["amr"], json!(["pwd", "otp", "mfa"]));

    // A lost phone: the recovery-code form behind "Lost your phone?" (a text field, not the
    // numeric one) signs in once.
    wd.goto(&s.url(&format!("/authorize?{}", query(&again))));
    wd.type_into("input[name=username]", "tomas");
    wd.type_into("input[name=password]", crate::signin::PASSWORD);
    wd.click("button[type=submit]");
    wd.click("details.recovery summary");
    wd.type_into("#recovery", &recovery);
    wd.screenshot("totp-recovery.png");
    wd.click("details.recovery button[type=submit]");
    let landed = wd.wait_for_url(&redirect);
    assert!(landed.contains("code="), "{landed}");

    // The enrolment page now says the factor is on and offers a new set of recovery codes.
    wd.goto(&s.url("/account/totp"));
    wd.wait_text("h1", "Two-step verification is on");
    wd.element("form[action='/account/totp/recovery-codes'] input[name=code]");
    wd.screenshot("totp-on.png");
}

/// A reset link in Chromium: the form (screenshot), a new password, the confirmation.
#[test]
fn chromium_resets_a_password() {
    if !available() {
        return;
    }
    let s = Server::start(Backend::Sqlite);
    user(&s, "rosa", &["--name", "Rosa Example"]);
    let link = s.cli_json(&["user", "reset-link", "rosa", "--json"])["link"]
        .as_str()
        .unwrap()
        .to_owned();
    let wd = WebDriver::start();
    wd.goto(&link);
    wd.element("input[name=password][autocomplete=new-password]");
    wd.screenshot("reset.png");
    wd.type_into("input[name=password]", "harbour-lantern-mosaic");
    wd.type_into("input[name=confirm]", "harbour-lantern-mosaic");
    wd.click("button[type=submit]");
    wd.wait_text("h1", "Your password has been changed");
    wd.screenshot("password-changed.png");
}
