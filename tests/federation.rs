//! Sign in with Google (OpenID Connect) and GitHub (OAuth 2.0) against local stand-ins that
//! speak the real protocols; Portcullis runs its production code with only the upstream URLs
//! changed by configuration.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::both_backends;
use crate::common::upstream::{Fault, Person, Upstream, CLIENT_SECRET};
use crate::common::{execute_sql, Backend, Resp, Server, ServerBuilder};
use crate::refresh::payload;
use crate::signin::{
    auth_params, csrf_token_for, location_params, login_attempt, query, redeem, user, Browser,
    PASSWORD, REDIRECT, VERIFIER,
};

fn server(b: Backend, upstreams: &[&Upstream], github: bool) -> Server {
    server_with(b, upstreams, github, &[])
}

fn server_with(
    b: Backend,
    upstreams: &[&Upstream],
    github: bool,
    extra: &[(&str, &str)],
) -> Server {
    let mut sb = ServerBuilder::new(b);
    for (i, up) in upstreams.iter().enumerate() {
        let env = if github && i == upstreams.len() - 1 {
            up.github_env()
        } else {
            up.google_env()
        };
        for (k, v) in env {
            sb = sb.env(&k, &v);
        }
    }
    for (k, v) in extra {
        sb = sb.env(k, v);
    }
    sb.start()
}

/// A first-party client (no consent page) unless `consent`.
fn app(s: &Server, consent: bool) -> (String, String) {
    let mut args = vec![
        "--name",
        "Gallery",
        "--redirect-uri",
        REDIRECT,
        "--grant-type",
        "authorization_code",
        "--scope",
        "photos:read",
    ];
    if !consent {
        args.push("--skip-consent");
    }
    s.client(&args)
}

/// The hidden fields of the form posting to `action` on `html`.
fn form_fields(html: &str, action: &str) -> Vec<(String, String)> {
    let start = html
        .find(&format!("action=\"{action}\""))
        .unwrap_or_else(|| panic!("no form for {action}: {html}"));
    let end = start + html[start..].find("</form>").expect("form end");
    let form = &html[start..end];
    let mut fields = Vec::new();
    let mut rest = form;
    while let Some(i) = rest.find("<input type=\"hidden\" name=\"") {
        rest = &rest[i + 27..];
        let name_end = rest.find('"').unwrap();
        let name = rest[..name_end].to_owned();
        let v = rest.find("value=\"").unwrap() + 7;
        let v_end = v + rest[v..].find('"').unwrap();
        let value = rest[v..v_end]
            .replace("&#43;", "+")
            .replace("&#34;", "\"")
            .replace("&#39;", "'")
            .replace("&amp;", "&");
        fields.push((name, value));
        rest = &rest[v_end..];
    }
    fields
}

fn post_fields(
    b: &mut Browser,
    path: &str,
    fields: &[(String, String)],
    extra: &[(&str, &str)],
) -> Resp {
    let mut form: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    form.extend_from_slice(extra);
    b.post(path, &form)
}

/// Click "Sign in with <slug>" on the login page; returns the redirect to the provider.
fn begin(b: &mut Browser, params: &[(String, String)], slug: &str) -> Resp {
    let login = b.get(&format!("/authorize?{}", query(params)));
    assert_eq!(login.status, 200, "{}", login.body);
    let fields = form_fields(&login.body, &format!("/login/{slug}"));
    let r = post_fields(b, &format!("/login/{slug}"), &fields, &[]);
    assert_eq!(r.status, 303, "{}", r.body);
    r
}

/// The person at the provider approves (or not); returns our callback URL.
fn at_provider(b: &mut Browser, to_provider: &Resp) -> String {
    let r = b.get_url(to_provider.header("location").expect("location"));
    assert_eq!(r.status, 302, "{}", r.body);
    r.header("location").expect("callback").to_owned()
}

/// What the provider was sent, with our callback URL under `__callback`.
fn sent_upstream(up: &Upstream, to_provider: &Resp, b: &mut Browser) -> HashMap<String, String> {
    let callback = at_provider(b, to_provider);
    let mut sent = up.last_authorize();
    sent.insert("__callback".into(), callback);
    sent
}

/// The whole round trip through the provider: our callback's response and its URL.
fn through(b: &mut Browser, params: &[(String, String)], slug: &str) -> (Resp, String) {
    let to_provider = begin(b, params, slug);
    let callback = at_provider(b, &to_provider);
    (b.get_url(&callback), callback)
}

/// The code in a redirect to the client.
fn code_of(r: &Resp) -> String {
    let (base, q) = location_params(r);
    assert_eq!(base, REDIRECT);
    assert_eq!(q.get("state").map(String::as_str), Some("st-123"));
    q["code"].clone()
}

fn users(s: &Server) -> Vec<Value> {
    s.cli_json(&["user", "list", "--json"])
        .as_array()
        .cloned()
        .unwrap()
}

fn by_username<'a>(all: &'a [Value], name: &str) -> Option<&'a Value> {
    all.iter().find(|u| u["username"] == name)
}

/// An error page: not a redirect, with a way back to the login page of the same request.
fn assert_page_with_way_back(r: &Resp, status: u16, words: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert!(r.header("location").is_none(), "never a redirect");
    assert!(r.body.contains(words), "expected {words:?}: {}", r.body);
    assert!(
        r.body.contains("href=\"/authorize?") && r.body.contains("Back to sign in"),
        "a way back to the login page: {}",
        r.body
    );
}

fn google_sign_in_creates_then_recognises_the_user(b: Backend) {
    let google = Upstream::google();
    let s = server(b, &[&google], false);
    let (id, secret) = app(&s, true);
    let params = auth_params(&id, "openid profile email photos:read", &[]);

    let mut browser = Browser::new(&s);
    let login = browser.get(&format!("/authorize?{}", query(&params)));
    assert!(login.body.contains("Sign in with Google"), "{}", login.body);
    assert!(!login.body.contains("GitHub"), "GitHub is not configured");

    google.set_person(Person::new(
        "110169484474386276334",
        Some("Ada@Example.com"),
        true,
    ));
    let to_provider = begin(&mut browser, &params, "google");
    let sent = sent_upstream(&google, &to_provider, &mut browser);
    assert_eq!(sent["client_id"], crate::common::upstream::CLIENT_ID);
    assert_eq!(sent["redirect_uri"], s.url("/login/google/callback"));
    assert_eq!(sent["response_type"], "code");
    assert_eq!(sent["code_challenge_method"], "S256");
    for k in ["state", "nonce", "code_challenge"] {
        assert!(sent[k].len() >= 22, "{k} is random: {sent:?}");
    }
    let scopes: Vec<&str> = sent["scope"].split(' ').collect();
    for sc in ["openid", "email", "profile"] {
        assert!(scopes.contains(&sc), "{sent:?}");
    }
    assert!(!sent.contains_key("code_verifier"));

    // New person: consent, then back to the client with a code.
    let consent = browser.get_url(&sent["__callback"]);
    assert_eq!(consent.status, 200, "{}", consent.body);
    assert!(consent.body.contains("name=\"decision\" value=\"allow\""));
    let fields = form_fields(&consent.body, "/consent");
    let back = post_fields(&mut browser, "/consent", &fields, &[("decision", "allow")]);
    let t = redeem(&s, &id, &secret, &code_of(&back), Some(VERIFIER)).json();
    let claims = payload(t["id_token"].as_str().unwrap());
    assert_eq!(claims["amr"], serde_json::json!(["fed"]));
    assert_eq!(claims["iss"], s.base);
    let all = users(&s);
    let ada = by_username(&all, "google:110169484474386276334").expect("created");
    assert_eq!(claims["sub"], ada["id"], "our sub, not Google's");
    assert_ne!(claims["sub"], "110169484474386276334");
    assert_eq!(ada["email"], "Ada@Example.com", "verified email copied");
    assert_eq!(ada["name"], "Person 110169484474386276334");
    let info = crate::common::agent()
        .get(&s.url("/userinfo"))
        .set(
            "Authorization",
            &format!("Bearer {}", t["access_token"].as_str().unwrap()),
        )
        .call()
        .unwrap()
        .into_json::<Value>()
        .unwrap();
    assert_eq!(info["sub"], ada["id"]);
    assert_eq!(info["email"], "Ada@Example.com");

    // The same Google subject in a new browser: the same local user, consent remembered.
    let mut again = Browser::new(&s);
    let (r, _) = through(&mut again, &params, "google");
    let t2 = redeem(&s, &id, &secret, &code_of(&r), Some(VERIFIER)).json();
    assert_eq!(payload(t2["id_token"].as_str().unwrap())["sub"], ada["id"]);

    // Another Google person: another local user.
    google.set_person(Person::new("2002", Some("grace@example.com"), true));
    let mut other = Browser::new(&s);
    let (r, _) = through(&mut other, &params, "google");
    assert_eq!(r.status, 200, "consent for a new person: {}", r.body);
    let all = users(&s);
    let grace = by_username(&all, "google:2002").expect("second user");
    assert_ne!(grace["id"], ada["id"]);
    assert_eq!(all.len(), 2);

    // Upstream secrets and codes never reach the log.
    let logs = s.logs();
    assert!(!logs.contains(CLIENT_SECRET), "client secret logged");
    assert!(!logs.contains(&sent["state"]), "upstream state logged");
    let callback = url::Url::parse(&sent["__callback"]).unwrap();
    let (_, code) = callback.query_pairs().find(|(k, _)| k == "code").unwrap();
    assert!(!logs.contains(code.as_ref()), "upstream code logged");
    assert!(!logs.contains(&sent["nonce"]), "nonce logged");
    for secret in google.secrets() {
        assert!(
            !logs.contains(&secret),
            "upstream access token or verifier logged"
        );
    }

    // state, nonce and PKCE differ on every start.
    let mut fresh = Browser::new(&s);
    let to_provider = begin(&mut fresh, &params, "google");
    let next = sent_upstream(&google, &to_provider, &mut fresh);
    for k in ["state", "nonce", "code_challenge"] {
        assert_ne!(next[k], sent[k], "{k} repeated");
    }

    // A locked account does not get in through Google either.
    s.cli(&["user", "lock", "google:2002"]);
    let (r, _) = through(&mut Browser::new(&s), &params, "google");
    assert_page_with_way_back(&r, 403, "locked");
}

fn github_sign_in_uses_only_a_primary_verified_email(b: Backend) {
    let github = Upstream::github();
    let s = server(b, &[&github], true);
    let (id, secret) = app(&s, false);
    let params = auth_params(&id, "openid email photos:read", &[]);

    let mut browser = Browser::new(&s);
    let login = browser.get(&format!("/authorize?{}", query(&params)));
    assert!(login.body.contains("Sign in with GitHub"), "{}", login.body);
    assert!(!login.body.contains("Google"), "Google is not configured");

    github.set_person(Person::new("583231", Some("octo@example.com"), true));
    let to_provider = begin(&mut browser, &params, "github");
    let sent = sent_upstream(&github, &to_provider, &mut browser);
    assert_eq!(sent["redirect_uri"], s.url("/login/github/callback"));
    assert_eq!(sent["code_challenge_method"], "S256");
    assert!(sent["state"].len() >= 22);
    let r = browser.get_url(&sent["__callback"]);
    let t = redeem(&s, &id, &secret, &code_of(&r), Some(VERIFIER)).json();
    let claims = payload(t["id_token"].as_str().unwrap());
    assert_eq!(claims["amr"], serde_json::json!(["fed"]));
    let all = users(&s);
    let octo = by_username(&all, "github:583231").expect("created");
    assert_eq!(claims["sub"], octo["id"]);
    assert_eq!(octo["email"], "octo@example.com");
    assert_eq!(github.token_requests(), 1);

    // A primary email GitHub has not verified is not copied (nor is a verified secondary one).
    github.set_person(Person::new("9001", Some("unverified@example.com"), false));
    let mut other = Browser::new(&s);
    let (r, _) = through(&mut other, &params, "github");
    assert_eq!(r.status, 303, "{}", r.body);
    let all = users(&s);
    let second = by_username(&all, "github:9001").expect("created");
    assert!(second["email"].is_null(), "{second}");

    // GitHub's API failing: our page, no user.
    github.set_person(Person::new("9002", None, false));
    github.set_fault(Fault::Api500);
    let mut third = Browser::new(&s);
    let (r, _) = through(&mut third, &params, "github");
    assert_page_with_way_back(&r, 502, "GitHub could not sign you in");
    assert!(by_username(&users(&s), "github:9002").is_none());
    // A slow API: the calls of one sign-in share one 10 s budget (each call alone would answer
    // within 10 s; the two take 16).
    github.set_fault(Fault::ApiSlow);
    let started = Instant::now();
    let (r, _) = through(&mut Browser::new(&s), &params, "github");
    let took = started.elapsed();
    assert_page_with_way_back(&r, 504, "did not answer");
    assert!(
        took < Duration::from_secs(15),
        "{took:?} (16 s without the shared budget)"
    );
    assert!(by_username(&users(&s), "github:9002").is_none());
    // GitHub reports a bad code with HTTP 200 and an error body.
    github.set_fault(Fault::ErrorWith200);
    let (r, _) = through(&mut Browser::new(&s), &params, "github");
    assert_page_with_way_back(&r, 502, "GitHub could not sign you in");
    assert!(by_username(&users(&s), "github:9002").is_none());
    assert!(!s.logs().contains(CLIENT_SECRET));
}

fn email_links_only_after_the_local_password(b: Backend) {
    let google = Upstream::google();
    let s = server(b, &[&google], false);
    let alice = user(&s, "alice", &["--email", "alice@example.com"]);
    let (id, secret) = app(&s, false);
    let params = auth_params(&id, "openid photos:read", &[]);

    // Unverified: never offered, never linked; a separate user without the email.
    google.set_person(Person::new("3001", Some("alice@example.com"), false));
    let mut browser = Browser::new(&s);
    let (r, _) = through(&mut browser, &params, "google");
    let t = redeem(&s, &id, &secret, &code_of(&r), Some(VERIFIER)).json();
    let sub = payload(t["id_token"].as_str().unwrap())["sub"].clone();
    assert_ne!(
        sub, alice["id"],
        "unverified email must not sign in as alice"
    );
    let all = users(&s);
    let separate = by_username(&all, "google:3001").expect("separate user");
    assert!(separate["email"].is_null());

    // Verified: the linking page, which takes alice's password.
    google.set_person(Person::new("3002", Some("ALICE@example.com"), true));
    let mut browser = Browser::new(&s);
    let (page, _) = through(&mut browser, &params, "google");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("Link your Google account"),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"autocomplete="current-password""#));
    let fields = form_fields(&page.body, "/login/link");
    assert!(fields.iter().any(|(k, _)| k == "csrf_token"));

    // No CSRF token: refused before anything else.
    let no_csrf: Vec<(String, String)> = fields
        .iter()
        .filter(|(k, _)| k != "csrf_token")
        .cloned()
        .collect();
    let r = post_fields(
        &mut browser,
        "/login/link",
        &no_csrf,
        &[("decision", "link"), ("password", PASSWORD)],
    );
    assert_eq!(r.status, 403, "{}", r.body);
    // Wrong password: the page again, nothing linked.
    let r = post_fields(
        &mut browser,
        "/login/link",
        &fields,
        &[("decision", "link"), ("password", "not-her-password")],
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("incorrect"));
    assert!(by_username(&users(&s), "google:3002").is_none());
    // Another browser, with a valid CSRF token of its own, cannot use the linking form.
    let mut stranger = Browser::new(&s);
    stranger.get(&format!("/authorize?{}", query(&params)));
    let their_csrf = csrf_token_for(&stranger, "link");
    let stolen: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| {
            let v = if k == "csrf_token" {
                their_csrf.clone()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect();
    let r = post_fields(
        &mut stranger,
        "/login/link",
        &stolen,
        &[("decision", "link"), ("password", PASSWORD)],
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("expired"), "{}", r.body);
    assert!(by_username(&users(&s), "google:3002").is_none());
    // The right password links, and signs in as alice.
    let r = post_fields(
        &mut browser,
        "/login/link",
        &fields,
        &[("decision", "link"), ("password", PASSWORD)],
    );
    let t = redeem(&s, &id, &secret, &code_of(&r), Some(VERIFIER)).json();
    let claims = payload(t["id_token"].as_str().unwrap());
    assert_eq!(claims["sub"], alice["id"]);
    assert_eq!(claims["amr"], serde_json::json!(["fed"]));
    // Used once.
    let r = post_fields(
        &mut browser,
        "/login/link",
        &fields,
        &[("decision", "link"), ("password", PASSWORD)],
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let logs = s.logs();
    let link_token = &fields.iter().find(|(k, _)| k == "link_token").unwrap().1;
    assert!(!logs.contains(link_token.as_str()), "link token logged");

    // From now on that Google account signs in to alice directly.
    let mut later = Browser::new(&s);
    let (r, _) = through(&mut later, &params, "google");
    let t = redeem(&s, &id, &secret, &code_of(&r), Some(VERIFIER)).json();
    assert_eq!(payload(t["id_token"].as_str().unwrap())["sub"], alice["id"]);
    assert!(by_username(&users(&s), "google:3002").is_none());

    // A stranger's wrong guesses lock alice's password out, not her Google sign-in.
    for _ in 0..5 {
        let r = login_attempt(&mut Browser::new(&s), &params, "alice", "a-wrong-guess");
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let r = login_attempt(&mut Browser::new(&s), &params, "alice", PASSWORD);
    assert_eq!(r.status, 401, "the password is locked out: {}", r.body);
    let (r, _) = through(&mut Browser::new(&s), &params, "google");
    let t = redeem(&s, &id, &secret, &code_of(&r), Some(VERIFIER)).json();
    assert_eq!(payload(t["id_token"].as_str().unwrap())["sub"], alice["id"]);
    s.cli(&["user", "unlock", "alice"]);

    // alice then turns on TOTP: Google alone no longer signs her in; the code follows it.
    let enrolled = s.cli_json(&["user", "totp", "alice", "--json"]);
    let mut with_code = Browser::new(&s);
    let (page, _) = through(&mut with_code, &params, "google");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(r#"name="mfa_token""#), "{}", page.body);
    assert!(!with_code.cookies.keys().any(|k| k.contains("session")));
    let fields = form_fields(&page.body, "/login/totp");
    let code = totp_rs::Totp::from_url(enrolled["otpauth_uri"].as_str().unwrap())
        .unwrap()
        .generate_current()
        .to_string();
    let r = post_fields(&mut with_code, "/login/totp", &fields, &[("code", &code)]);
    let t = redeem(&s, &id, &secret, &code_of(&r), Some(VERIFIER)).json();
    let claims = payload(t["id_token"].as_str().unwrap());
    assert_eq!(claims["sub"], alice["id"]);
    assert_eq!(claims["amr"], serde_json::json!(["fed", "otp", "mfa"]));

    // Declining to link keeps the accounts apart.
    user(&s, "bob", &["--email", "bob@example.com"]);
    google.set_person(Person::new("3003", Some("bob@example.com"), true));
    let mut b3 = Browser::new(&s);
    let (page, _) = through(&mut b3, &params, "google");
    let fields = form_fields(&page.body, "/login/link");
    let r = post_fields(&mut b3, "/login/link", &fields, &[("decision", "new")]);
    let t = redeem(&s, &id, &secret, &code_of(&r), Some(VERIFIER)).json();
    let all = users(&s);
    let apart = by_username(&all, "google:3003").expect("a new account");
    assert_eq!(payload(t["id_token"].as_str().unwrap())["sub"], apart["id"]);
    assert_ne!(apart["id"], by_username(&all, "bob").unwrap()["id"]);
}

fn state_is_single_use_bound_to_the_browser_and_short_lived(b: Backend) {
    let google = Upstream::google();
    let s = server(b, &[&google], false);
    let (id, _) = app(&s, false);
    let params = auth_params(&id, "openid photos:read", &[]);
    google.set_person(Person::new("4001", None, false));

    // Replayed: the second use of a callback fails, with a way back.
    let mut browser = Browser::new(&s);
    let (first, callback) = through(&mut browser, &params, "google");
    assert_eq!(first.status, 303, "{}", first.body);
    let tokens_before = google.token_requests();
    let again = browser.get_url(&callback);
    assert_page_with_way_back(&again, 400, "already used");

    // Mismatched: a state nobody issued.
    let mut browser = Browser::new(&s);
    let to_provider = begin(&mut browser, &params, "google");
    let callback = at_provider(&mut browser, &to_provider);
    let forged = callback.replace("state=", "state=x");
    let r = browser.get_url(&forged);
    assert_page_with_way_back(&r, 400, "does not match");
    let r = browser.get_url(&s.url("/login/google/callback?code=abc"));
    assert_page_with_way_back(&r, 400, "incomplete");

    // Another browser: refused, and it does not burn the state for the right browser.
    let mut thief = Browser::new(&s);
    let own = auth_params(&id, "openid", &[("state", "thief-state")]);
    thief.get(&format!("/authorize?{}", query(&own)));
    assert!(
        !thief.cookies.is_empty(),
        "the thief has a CSRF cookie of its own"
    );
    let r = thief.get_url(&callback);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("another browser"), "{}", r.body);
    assert!(
        !r.body.contains("st-123"),
        "the victim's request is not shown: {}",
        r.body
    );
    assert_eq!(
        google.token_requests(),
        tokens_before,
        "no code redeemed for them"
    );
    let r = browser.get_url(&callback);
    assert_eq!(
        r.status, 303,
        "the starting browser still finishes: {}",
        r.body
    );

    // Expired: slower than upstream_state_ttl_secs.
    let mut slow = Browser::new(&s);
    let to_provider = begin(&mut slow, &params, "google");
    let callback = at_provider(&mut slow, &to_provider);
    // Aged in the database rather than waited out: a short TTL would also race the steps
    // above on a slow machine.
    assert!(
        execute_sql(
            &s,
            "UPDATE upstream_logins SET expires_at = expires_at - 600"
        ) >= 1,
        "the state is stored"
    );
    let before = google.token_requests();
    let r = slow.get_url(&callback);
    assert_page_with_way_back(&r, 400, "took too long");
    assert_eq!(google.token_requests(), before);

    // The linking page expires as fast.
    user(&s, "ivy", &["--email", "ivy@example.com"]);
    google.set_person(Person::new("4002", Some("ivy@example.com"), true));
    let mut linker = Browser::new(&s);
    let (page, _) = through(&mut linker, &params, "google");
    assert!(
        page.body.contains("Link your Google account"),
        "{}",
        page.body
    );
    let fields = form_fields(&page.body, "/login/link");
    assert_eq!(
        execute_sql(&s, "UPDATE pending_links SET expires_at = expires_at - 600"),
        1
    );
    let r = post_fields(
        &mut linker,
        "/login/link",
        &fields,
        &[("decision", "link"), ("password", PASSWORD)],
    );
    assert_page_with_way_back(&r, 400, "expired");
}

fn upstream_denial_errors_and_timeouts_show_our_page(b: Backend) {
    let google = Upstream::google();
    let s = server(b, &[&google], false);
    let (id, _) = app(&s, false);
    let params = auth_params(&id, "openid photos:read", &[]);
    google.set_person(Person::new("5001", Some("x@example.com"), true));

    google.set_fault(Fault::Deny);
    let (r, _) = through(&mut Browser::new(&s), &params, "google");
    assert_page_with_way_back(&r, 403, "cancelled");

    google.set_fault(Fault::Token500);
    let (r, _) = through(&mut Browser::new(&s), &params, "google");
    assert_page_with_way_back(&r, 502, "could not sign you in");

    google.set_fault(Fault::TokenSlow);
    let started = Instant::now();
    let (r, _) = through(&mut Browser::new(&s), &params, "google");
    let took = started.elapsed();
    assert_page_with_way_back(&r, 504, "did not answer");
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(17),
        "outbound calls time out after 10 s: {took:?}"
    );
    assert!(by_username(&users(&s), "google:5001").is_none());
}

fn tampered_upstream_id_tokens_are_refused(b: Backend) {
    let google = Upstream::google();
    let s = server(b, &[&google], false);
    let (id, _) = app(&s, false);
    let params = auth_params(&id, "openid photos:read", &[]);
    for (n, fault) in [
        Fault::WrongSignature,
        Fault::WrongAudience,
        Fault::OtherAuthorizedParty,
        Fault::WrongNonce,
        Fault::ExpiredBy(120),
        Fault::WrongIssuer,
        Fault::IssuedInFuture,
        Fault::Unsigned,
    ]
    .into_iter()
    .enumerate()
    {
        google.set_person(Person::new(&format!("600{n}"), Some("t@example.com"), true));
        google.set_fault(fault);
        let (r, _) = through(&mut Browser::new(&s), &params, "google");
        assert_page_with_way_back(&r, 502, "could not be verified");
    }
    assert!(users(&s).is_empty(), "no user from a rejected token");
    // Within the 60 s leeway an expired token is still accepted.
    google.set_person(Person::new("6100", None, false));
    google.set_fault(Fault::ExpiredBy(30));
    let (r, _) = through(&mut Browser::new(&s), &params, "google");
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(by_username(&users(&s), "google:6100").is_some());
    // An email without `email_verified` is not copied.
    google.set_person(Person::new("6101", Some("maybe@example.com"), true));
    google.set_fault(Fault::NoEmailVerified);
    let (r, _) = through(&mut Browser::new(&s), &params, "google");
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(by_username(&users(&s), "google:6101").unwrap()["email"].is_null());
}

/// Discovery is cached; a signature by a key the cache does not know fetches the keys again.
fn discovery_is_cached_and_key_rotation_followed(b: Backend) {
    let google = Upstream::google();
    let s = server(b, &[&google], false);
    let (id, _) = app(&s, false);
    let params = auth_params(&id, "openid photos:read", &[]);
    google.set_person(Person::new("7001", None, false));
    for _ in 0..2 {
        let (r, _) = through(&mut Browser::new(&s), &params, "google");
        assert_eq!(r.status, 303, "{}", r.body);
    }
    assert_eq!(google.discovery_hits(), 1, "discovery cached");
    google.rotate_keys();
    let (r, _) = through(&mut Browser::new(&s), &params, "google");
    assert_eq!(r.status, 303, "new key followed: {}", r.body);
    assert_eq!(google.discovery_hits(), 2);
}

/// The client is deleted while the person is at the provider: a page, no code redeemed, no
/// user created.
fn request_checked_again_when_the_person_returns(b: Backend) {
    let google = Upstream::google();
    let s = server(b, &[&google], false);
    let (id, _) = app(&s, false);
    let params = auth_params(&id, "openid photos:read", &[]);
    google.set_person(Person::new("8001", None, false));
    let mut browser = Browser::new(&s);
    let to_provider = begin(&mut browser, &params, "google");
    let callback = at_provider(&mut browser, &to_provider);
    s.cli(&["client", "delete", &id]);
    // Clients are cached for up to 5 s (README, Scale-out).
    std::thread::sleep(Duration::from_millis(5_200));
    let r = browser.get_url(&callback);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("no longer valid"), "{}", r.body);
    assert!(r.header("location").is_none());
    assert_eq!(google.token_requests(), 0);
    assert!(users(&s).is_empty());
}

/// Each start stores a row until it expires: an address gets `login.ip_max_failures` starts
/// that bring back no identity; one the provider vouches for is given back.
fn unfinished_starts_are_limited_per_address(b: Backend) {
    let google = Upstream::google();
    let s = server_with(
        b,
        &[&google],
        false,
        &[("PORTCULLIS_LOGIN__IP_MAX_FAILURES", "3")],
    );
    let (id, _) = app(&s, false);
    let params = auth_params(&id, "openid photos:read", &[]);
    google.set_person(Person::new("4002", None, false));
    let mut browser = Browser::new(&s);
    let first = begin(&mut browser, &params, "google");
    let second = begin(&mut browser, &params, "google");
    // A callback that brings no identity (it costs nothing to send) gives nothing back.
    let state_of = |r: &Resp| location_params(r).1["state"].clone();
    let declined = browser.get(&format!(
        "/login/google/callback?state={}&error=access_denied",
        state_of(&second)
    ));
    assert_eq!(declined.status, 403, "{}", declined.body);
    // Another browser on the same address shares the budget.
    begin(&mut Browser::new(&s), &params, "google");
    let login = browser.get(&format!("/authorize?{}", query(&params)));
    let fields = form_fields(&login.body, "/login/google");
    let refused = post_fields(&mut browser, "/login/google", &fields, &[]);
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert!(
        refused.body.contains("Too many unfinished"),
        "{}",
        refused.body
    );
    assert!(refused.header("location").is_none());
    // The first one comes back: signed in, and a start is free again.
    let callback = at_provider(&mut browser, &first);
    assert_eq!(browser.get_url(&callback).status, 303);
    begin(&mut Browser::new(&s), &params, "google");
}

both_backends!(
    unfinished_starts_are_limited_per_address,
    google_sign_in_creates_then_recognises_the_user,
    github_sign_in_uses_only_a_primary_verified_email,
    email_links_only_after_the_local_password,
    state_is_single_use_bound_to_the_browser_and_short_lived,
    upstream_denial_errors_and_timeouts_show_our_page,
    tampered_upstream_id_tokens_are_refused,
    discovery_is_cached_and_key_rotation_followed,
    request_checked_again_when_the_person_returns,
);

/// Without `[upstream]` sections there are no buttons and no federation routes.
#[test]
fn unconfigured_upstreams_are_absent() {
    let s = Server::start(Backend::Sqlite);
    let (id, _) = app(&s, false);
    let params = auth_params(&id, "openid", &[]);
    let mut browser = Browser::new(&s);
    let login = browser.get(&format!("/authorize?{}", query(&params)));
    assert_eq!(login.status, 200);
    assert!(!login.body.contains("Google") && !login.body.contains("GitHub"));
    let fields: Vec<(String, String)> = form_fields(&login.body, "/login");
    let r = post_fields(&mut browser, "/login/google", &fields, &[]);
    assert_eq!(r.status, 404, "{}", r.body);
    let r = browser.get("/login/github/callback?code=a&state=b");
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("not available"));
}

/// Both upstreams at once, and a CSRF-less start is refused.
#[test]
fn both_upstreams_and_csrf_on_start() {
    let google = Upstream::google();
    let github = Upstream::github();
    let s = server(Backend::Sqlite, &[&google, &github], true);
    let (id, _) = app(&s, false);
    let params = auth_params(&id, "openid", &[]);
    let mut browser = Browser::new(&s);
    let login = browser.get(&format!("/authorize?{}", query(&params)));
    assert!(
        login.body.contains("Sign in with Google") && login.body.contains("Sign in with GitHub")
    );
    let fields = form_fields(&login.body, "/login/github");
    let without: Vec<(String, String)> = fields
        .iter()
        .filter(|(k, _)| k != "csrf_token")
        .cloned()
        .collect();
    let r = post_fields(&mut browser, "/login/github", &without, &[]);
    assert_eq!(r.status, 403, "{}", r.body);
    // A Google state is no good at GitHub's callback.
    let to_google = begin(&mut browser, &params, "google");
    let callback = at_provider(&mut browser, &to_google);
    let r = browser.get_url(&callback.replace("/login/google/", "/login/github/"));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("different sign-in provider"), "{}", r.body);
}
