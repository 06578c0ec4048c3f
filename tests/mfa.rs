//! The second factor: TOTP enrolment by the CLI and on a page, the code after the password,
//! replays, recovery codes, lockout, and `amr`/`acr`.

use serde_json::Value;

use crate::both_backends;
use crate::common::{execute_sql, sqlite_bytes, Backend, Resp, Server, ServerBuilder};
use crate::refresh::payload;
use crate::signin::{
    auth_params, csrf_token_for, hidden, location_params, query, redeem, user, Browser, PASSWORD,
    REDIRECT, VERIFIER,
};

fn app(s: &Server) -> (String, String) {
    s.client(&[
        "--name",
        "Ledger",
        "--redirect-uri",
        REDIRECT,
        "--scope",
        "ledger:read",
        "--skip-consent",
    ])
}

/// The code an authenticator app shows now, from the otpauth URI it scanned.
fn code_from_uri(uri: &str) -> String {
    totp_rs::Totp::from_url(uri)
        .expect("an otpauth URI an app accepts")
        .generate_current()
        .to_string()
}

/// The code now for a base32 key typed by hand.
pub fn code_from_key(key: &str) -> String {
    code_from_key_in(key, 0)
}

/// The code `secs` from now for a base32 key (a step ahead is within the one step of
/// tolerance, and later than a step just used).
fn code_from_key_in(key: &str, secs: i64) -> String {
    let secret = totp_rs::Secret::try_from_base32(key.replace(' ', "")).expect("base32");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    portcullis::oauth::totp::code_at(secret.as_ref(), now + secs).unwrap()
}

fn enrol_by_cli(s: &Server, username: &str) -> Value {
    s.cli_json(&["user", "totp", username, "--json"])
}

/// Password on the login page; returns the second-factor page.
fn password_step(b: &mut Browser, params: &[(String, String)], username: &str) -> Resp {
    let page = b.get(&format!("/authorize?{}", query(params)));
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = hidden(&page.body, "csrf_token").unwrap();
    let mut form: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    form.push(("csrf_token", &csrf));
    form.push(("username", username));
    form.push(("password", PASSWORD));
    b.post("/login", &form)
}

/// Submit `code` on the second-factor page `page`.
fn code_step(b: &mut Browser, page: &Resp, code: &str) -> Resp {
    let fields: Vec<(String, String)> = [
        "csrf_token",
        "mfa_token",
        "client_id",
        "redirect_uri",
        "response_type",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
    ]
    .iter()
    .filter_map(|k| hidden(&page.body, k).map(|v| ((*k).to_owned(), v)))
    .collect();
    let mut form: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    form.push(("code", code));
    b.post("/login/totp", &form)
}

fn assert_totp_page(r: &Resp) {
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains(
            r#"name="code" type="text" autocomplete="one-time-code" inputmode="numeric""#
        ),
        "{}",
        r.body
    );
    assert!(r.body.contains(r#"name="mfa_token""#));
}

fn cli_enrolment_then_code_after_password(b: Backend) {
    let s = Server::start(b);
    user(&s, "alice", &[]);
    let (id, secret) = app(&s);
    let enrolled = enrol_by_cli(&s, "alice");
    let key = enrolled["secret"].as_str().unwrap();
    let uri = enrolled["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/Portcullis:alice?"), "{uri}");
    assert!(uri.contains(&format!("secret={key}")));
    let recovery: Vec<String> = enrolled["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(recovery.len(), 10);
    if b == Backend::Sqlite {
        let db = sqlite_bytes(&s);
        let raw = totp_rs::Secret::try_from_base32(key).unwrap();
        assert!(
            !db.windows(key.len()).any(|w| w == key.as_bytes()),
            "seed stored in clear"
        );
        assert!(
            !db.windows(raw.as_ref().len()).any(|w| w == raw.as_ref()),
            "seed stored in clear"
        );
        for c in &recovery {
            assert!(
                !db.windows(c.len()).any(|w| w == c.as_bytes()),
                "recovery code stored in clear"
            );
        }
    }
    let params = auth_params(&id, "openid ledger:read", &[]);

    // Password, then a wrong code, then the right one.
    let mut browser = Browser::new(&s);
    let page = password_step(&mut browser, &params, "alice");
    assert_totp_page(&page);
    assert!(
        !browser.cookies.keys().any(|k| k.contains("session")),
        "no session before the second factor"
    );
    let wrong = code_step(&mut browser, &page, "000000");
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(wrong.body.contains("not right"));
    let code = code_from_uri(uri);
    let done = code_step(&mut browser, &wrong, &code);
    let (_, q) = location_params(&done);
    let t = redeem(&s, &id, &secret, &q["code"], Some(VERIFIER)).json();
    let claims = payload(t["id_token"].as_str().unwrap());
    assert_eq!(claims["amr"], serde_json::json!(["pwd", "otp", "mfa"]));
    assert_eq!(claims["acr"], "urn:portcullis:acr:mfa");
    assert_eq!(
        payload(t["access_token"].as_str().unwrap())["amr"],
        claims["amr"]
    );

    // The same code again, in another browser: refused (accepted once).
    let mut again = Browser::new(&s);
    let page = password_step(&mut again, &params, "alice");
    let replay = code_step(&mut again, &page, &code);
    assert_eq!(
        replay.status, 401,
        "a code is accepted once: {}",
        replay.body
    );

    // A recovery code works once, typed loosely.
    let loose = recovery[0].to_uppercase().replace('-', " ");
    let done = code_step(&mut again, &replay, &loose);
    assert_eq!(done.status, 303, "{}", done.body);
    let mut third = Browser::new(&s);
    let page = password_step(&mut third, &params, "alice");
    let used = code_step(&mut third, &page, &recovery[0]);
    assert_eq!(used.status, 401, "{}", used.body);

    // The second-factor form belongs to the browser that gave the password.
    let mut stranger = Browser::new(&s);
    stranger.get(&format!("/authorize?{}", query(&params)));
    let page = password_step(&mut third, &params, "alice");
    let mut form: Vec<(String, String)> = vec![
        ("mfa_token".into(), hidden(&page.body, "mfa_token").unwrap()),
        ("code".into(), recovery[1].clone()),
    ];
    form.push(("csrf_token".into(), csrf_token_for(&stranger, "totp")));
    for (k, v) in &params {
        form.push((k.clone(), v.clone()));
    }
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = stranger.post("/login/totp", &pairs);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("expired"), "{}", r.body);
    assert!(!stranger.cookies.keys().any(|k| k.contains("session")));
    // ...and the recovery code it tried is still unused.
    let done = code_step(&mut third, &page, &recovery[1]);
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(!s.logs().contains(key), "seed logged");

    // A seed this server cannot open (a changed totp key, say): recovery codes, which are
    // hashes, still work.
    execute_sql(&s, "UPDATE user_totp SET secret_sealed = 'unreadable'");
    let mut fourth = Browser::new(&s);
    let page = password_step(&mut fourth, &params, "alice");
    let done = code_step(&mut fourth, &page, &recovery[2]);
    assert_eq!(done.status, 303, "{}", done.body);
}

fn wrong_codes_count_toward_lockout(b: Backend) {
    let s = ServerBuilder::new(b)
        .env("PORTCULLIS_LOGIN__MAX_FAILED_ATTEMPTS", "3")
        .start();
    user(&s, "bob", &[]);
    let (id, _) = app(&s);
    let enrolled = enrol_by_cli(&s, "bob");
    let uri = enrolled["otpauth_uri"].as_str().unwrap().to_owned();
    let params = auth_params(&id, "openid ledger:read", &[]);
    // A right password before each wrong code does not clear the count.
    for _ in 0..3 {
        let mut browser = Browser::new(&s);
        let page = password_step(&mut browser, &params, "bob");
        assert_totp_page(&page);
        let r = code_step(&mut browser, &page, "123456");
        assert_eq!(r.status, 401, "{}", r.body);
    }
    // Locked: the right password is refused like a wrong one, and no code is asked.
    let mut browser = Browser::new(&s);
    let r = password_step(&mut browser, &params, "bob");
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("incorrect"));
    assert!(!r.body.contains("mfa_token"));
    // Unlocked by the operator, the code works.
    s.cli(&["user", "unlock", "bob"]);
    let mut browser = Browser::new(&s);
    let page = password_step(&mut browser, &params, "bob");
    let r = code_step(&mut browser, &page, &code_from_uri(&uri));
    assert_eq!(r.status, 303, "{}", r.body);
}

fn enrolment_on_the_page(b: Backend) {
    let s = Server::start(b);
    user(&s, "carol", &[]);
    let (id, _) = app(&s);
    let params = auth_params(&id, "openid ledger:read", &[]);

    // Not signed in: no enrolment.
    let mut anon = Browser::new(&s);
    let r = anon.get("/account/totp");
    assert_eq!(r.status, 401, "{}", r.body);

    let mut browser = Browser::new(&s);
    let mut elsewhere = Browser::new(&s);
    let r = password_step(&mut elsewhere, &params, "carol");
    assert_eq!(r.status, 303, "{}", r.body);
    let r = password_step(&mut browser, &params, "carol");
    assert_eq!(r.status, 303, "no second factor yet: {}", r.body);
    let secret_of = |body: &str| {
        let start = body.find(r#"<code class="secret">"#).unwrap() + 21;
        let end = start + body[start..].find("</code>").unwrap();
        body[start..end].to_owned()
    };
    // Another session of the account (someone else holding the password, say) opens the page
    // first: it is shown a seed of its own, never the one this browser will confirm.
    let theirs = secret_of(&elsewhere.get("/account/totp").body);
    let page = browser.get("/account/totp");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("<svg"), "QR code rendered server-side");
    assert!(page.body.contains(r#"autocomplete="one-time-code""#));
    let key = secret_of(&page.body);
    assert_ne!(key, theirs);
    // Opening the page again (a reload, or a link from another site) shows the same seed: the
    // one being scanned stays the one to confirm.
    let reload = browser.get("/account/totp");
    assert!(reload.body.contains(&key), "{}", reload.body);
    let csrf = hidden(&page.body, "csrf_token").unwrap();

    let r = browser.post("/account/totp", &[("code", "000000")]);
    assert_eq!(r.status, 403, "CSRF first: {}", r.body);
    let r = browser.post(
        "/account/totp",
        &[("csrf_token", &csrf), ("code", "000000")],
    );
    assert_eq!(r.status, 401, "{}", r.body);
    let code = code_from_key(&key);
    let r = browser.post("/account/totp", &[("csrf_token", &csrf), ("code", &code)]);
    assert_eq!(r.status, 200, "{}", r.body);
    let codes: Vec<&str> = r
        .body
        .split("<li><code>")
        .skip(1)
        .filter_map(|p| p.split("</code>").next())
        .collect();
    assert_eq!(codes.len(), 10, "{}", r.body);
    // The other browser's session began without a code: it ended; this one stays.
    let silent = auth_params(&id, "openid ledger:read", &[("prompt", "none")]);
    let r = elsewhere.get(&format!("/authorize?{}", query(&silent)));
    assert_eq!(location_params(&r).1["error"], "login_required");
    let r = browser.get(&format!("/authorize?{}", query(&silent)));
    assert!(location_params(&r).1.contains_key("code"));

    // Enrolled: the page no longer offers a new seed, and sign-in asks for a code.
    let again = browser.get("/account/totp");
    assert!(again.body.contains("is on"), "{}", again.body);
    assert!(!again.body.contains("<svg"));
    let mut later = Browser::new(&s);
    let page = password_step(&mut later, &params, "carol");
    assert_totp_page(&page);
    // The other session's seed is worth nothing.
    let r = code_step(&mut later, &page, &code_from_key(&theirs));
    assert_eq!(r.status, 401, "{}", r.body);
    let r = code_step(&mut later, &page, codes[3]);
    assert_eq!(r.status, 303, "{}", r.body);

    // A new set of recovery codes: offered on the "is on" page, for a code checked as at
    // sign-in; the old set stops working.
    let on = browser.get("/account/totp");
    assert!(on.body.contains("9 recovery codes are left"), "{}", on.body);
    let csrf = hidden(&on.body, "csrf_token").unwrap();
    let new_codes =
        |b: &mut Browser, fields: &[(&str, &str)]| b.post("/account/totp/recovery-codes", fields);
    let r = new_codes(&mut browser, &[("code", codes[5])]);
    assert_eq!(r.status, 403, "CSRF first: {}", r.body);
    let r = new_codes(&mut browser, &[("csrf_token", &csrf), ("code", "000000")]);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("not right"), "{}", r.body);
    // A recovery code, even unused, is not taken here: one that leaked must not become ten.
    let r = new_codes(&mut browser, &[("csrf_token", &csrf), ("code", codes[5])]);
    assert_eq!(r.status, 401, "{}", r.body);
    // Another browser without a session gets nothing.
    let ahead = code_from_key_in(&key, 30);
    let r = new_codes(&mut anon, &[("csrf_token", &csrf), ("code", &ahead)]);
    assert!(r.status == 401 || r.status == 403, "{}", r.body);
    // The next step's code (the confirmation used this one's).
    let r = new_codes(&mut browser, &[("csrf_token", &csrf), ("code", &ahead)]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("no longer work"), "{}", r.body);
    let fresh: Vec<String> = r
        .body
        .split("<li><code>")
        .skip(1)
        .filter_map(|p| p.split("</code>").next().map(str::to_owned))
        .collect();
    assert_eq!(fresh.len(), 10, "{}", r.body);
    assert!(fresh.iter().all(|c| !codes.contains(&c.as_str())));
    let mut next = Browser::new(&s);
    let page = password_step(&mut next, &params, "carol");
    assert_totp_page(&page);
    let r = code_step(&mut next, &page, codes[6]);
    assert_eq!(r.status, 401, "an old code: {}", r.body);
    let r = code_step(&mut next, &page, &fresh[0]);
    assert_eq!(r.status, 303, "{}", r.body);
}

/// A session begun through a linked Google or GitHub identity cannot set the factor that the
/// account's password sign-ins will ask for.
fn enrolment_needs_a_password_sign_in(b: Backend) {
    let s = Server::start(b);
    let u = user(&s, "dora", &[]);
    // A session whose sign-in was not by password (as a linked identity's is).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    execute_sql(
        &s,
        &format!(
            "INSERT INTO sessions (id_hash, user_id, auth_time, amr, last_seen, expires_at) \
             VALUES ('{}', '{}', {now}, '[\"fed\"]', {now}, {})",
            portcullis::crypto::opaque::hash_secret("upstream-session"),
            u["id"].as_str().unwrap(),
            now + 3600,
        ),
    );
    let mut browser = Browser::new(&s);
    browser
        .cookies
        .insert("portcullis_session".into(), "upstream-session".into());
    let r = browser.get("/account/totp");
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("password first"), "{}", r.body);
}

both_backends!(
    enrolment_needs_a_password_sign_in,
    cli_enrolment_then_code_after_password,
    wrong_codes_count_toward_lockout,
    enrolment_on_the_page,
);
