//! Password reset: single-use links from the CLI and by mail, expiry, what a reset ends, and a
//! "forgot password" page that answers the same whether or not the account exists.

use std::time::Duration;

use crate::both_backends;
use crate::common::smtp::SmtpSink;
use crate::common::{execute_sql, Backend, Resp, Server, ServerBuilder};
use crate::refresh::{refresh, rp_client, tokens};
use crate::signin::{auth_params, hidden, login_attempt, query, user, Browser, PASSWORD};

const NEW_PASSWORD: &str = "lantern-quarry-velvet";

fn link_for(s: &Server, username: &str) -> String {
    let out = s.cli_json(&["user", "reset-link", username, "--json"]);
    let link = out["link"].as_str().unwrap().to_owned();
    assert!(
        link.starts_with(&format!("{}/password/reset?token=", s.base)),
        "{link}"
    );
    let ttl = out["expires_at"].as_i64().unwrap()
        - std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
    assert!((1780..=1800).contains(&ttl), "30 minutes: {ttl}");
    link
}

/// Open the link, fill in the form; returns the answer.
fn use_link(b: &mut Browser, link: &str, password: &str, confirm: &str) -> Resp {
    let path = link.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap();
    let form = b.get(&path);
    if form.status != 200 {
        return form;
    }
    assert!(form.body.contains(r#"autocomplete="new-password""#));
    let csrf = hidden(&form.body, "csrf_token").unwrap();
    let token = hidden(&form.body, "token").unwrap();
    b.post(
        "/password/reset",
        &[
            ("csrf_token", &csrf),
            ("token", &token),
            ("password", password),
            ("confirm", confirm),
        ],
    )
}

fn password_works(s: &Server, id: &str, username: &str, password: &str) -> bool {
    let mut b = Browser::new(s);
    let params = auth_params(id, "openid", &[("prompt", "login")]);
    let r = login_attempt(&mut b, &params, username, password);
    r.status == 303 || (r.status == 200 && r.body.contains("decision"))
}

fn reset_link_is_single_use_and_ends_everything(b: Backend) {
    let s = Server::start(b);
    user(&s, "alice", &[]);
    let (id, secret) = rp_client(&s, "Notes");
    let c = (id.as_str(), secret.as_str());
    let mut session = Browser::new(&s);
    let t = tokens(&s, &mut session, c, "alice", "openid notes:read");
    let link = link_for(&s, "alice");

    let mut b1 = Browser::new(&s);
    let path = link.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap();
    b1.get(&path);
    let r = b1.post(
        "/password/reset",
        &[("token", "x"), ("password", NEW_PASSWORD)],
    );
    assert_eq!(r.status, 403, "CSRF first: {}", r.body);
    let r = use_link(&mut b1, &link, NEW_PASSWORD, "something-else-entirely");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("not the same"), "{}", r.body);
    let r = use_link(&mut b1, &link, "password1", "password1");
    assert_eq!(r.status, 400, "the policy applies: {}", r.body);
    let r = use_link(&mut b1, &link, NEW_PASSWORD, NEW_PASSWORD);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("has been changed"));

    // Once only.
    let again = use_link(
        &mut b1,
        &link,
        "another-fine-passphrase",
        "another-fine-passphrase",
    );
    assert_eq!(again.status, 400);
    assert!(again.body.contains("no longer works"));

    // Sessions and refresh tokens are over; the old password too.
    let r = session.get(&format!(
        "/authorize?{}",
        query(&auth_params(&id, "openid", &[("prompt", "none")]))
    ));
    let (_, q) = crate::signin::location_params(&r);
    assert_eq!(q["error"], "login_required");
    refresh(&s, c, t["refresh_token"].as_str().unwrap(), None).assert_error(400, "invalid_grant");
    assert!(!password_works(&s, &id, "alice", PASSWORD));
    assert!(password_works(&s, &id, "alice", NEW_PASSWORD));

    // Expired: a link past its 30 minutes (its expiry moved into the past in the database).
    let link = link_for(&s, "alice");
    let sql = "UPDATE password_resets SET expires_at = expires_at - 1800 WHERE used_at IS NULL";
    assert_eq!(execute_sql(&s, sql), 1);
    let r = use_link(
        &mut Browser::new(&s),
        &link,
        "yet-another-passphrase",
        "yet-another-passphrase",
    );
    assert_eq!(r.status, 400);
    assert!(password_works(&s, &id, "alice", NEW_PASSWORD));

    let logs = s.logs();
    let token = link.split("token=").nth(1).unwrap();
    assert!(!logs.contains(token), "reset token logged");
    let audit = s
        .cli_json(&["audit", "list", "--json", "--user", "alice"])
        .to_string();
    assert!(audit.contains("password.reset_link_created") && audit.contains("\"password.reset\""));
    assert!(!audit.contains(token) && !audit.contains(NEW_PASSWORD));
}

/// The access tokens a person's codes issued to a client without refresh tokens end with the
/// password too (they have no family to be reached through); so does everything else when the
/// operator sets the password with `user set-password`.
fn a_new_password_ends_code_issued_access_tokens(b: Backend) {
    let s = Server::start(b);
    user(&s, "ana", &[]);
    let (web, web_secret) = s.client(&[
        "--name",
        "Web",
        "--redirect-uri",
        crate::signin::REDIRECT,
        "--grant-type",
        "authorization_code",
        "--scope",
        "notes:read",
    ]);
    let (rp, rp_secret) = rp_client(&s, "Notes");
    let userinfo = |t: &serde_json::Value| {
        let r = crate::common::agent()
            .get(&s.url("/userinfo"))
            .set(
                "Authorization",
                &format!("Bearer {}", t["access_token"].as_str().unwrap()),
            )
            .call();
        Resp::from(r).status
    };
    let prompt_none = |b: &mut Browser| {
        let params = auth_params(&rp, "openid", &[("prompt", "none")]);
        let r = b.get(&format!("/authorize?{}", query(&params)));
        crate::signin::location_params(&r).1["error"].clone()
    };

    let mut browser = Browser::new(&s);
    let code_only = tokens(&s, &mut browser, (&web, &web_secret), "ana", "openid");
    assert!(code_only.get("refresh_token").is_none());
    assert_eq!(userinfo(&code_only), 200);
    let link = link_for(&s, "ana");
    let r = use_link(&mut Browser::new(&s), &link, NEW_PASSWORD, NEW_PASSWORD);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(userinfo(&code_only), 401, "the reset ends it");

    let mut browser = Browser::new(&s);
    let rp_tokens = |b: &mut Browser| {
        let params = auth_params(&rp, "openid notes:read", &[]);
        let r = login_attempt(b, &params, "ana", NEW_PASSWORD);
        let r = if r.status == 200 {
            let csrf = hidden(&r.body, "csrf_token").unwrap();
            let mut form: Vec<(&str, &str)> = params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            form.extend([("csrf_token", csrf.as_str()), ("decision", "allow")]);
            b.post("/consent", &form)
        } else {
            r
        };
        let code = crate::signin::location_params(&r).1["code"].clone();
        crate::signin::redeem(&s, &rp, &rp_secret, &code, Some(crate::signin::VERIFIER)).json()
    };
    let t = rp_tokens(&mut browser);
    assert_eq!(userinfo(&t), 200);
    let out = s.cli_stdin(
        &["user", "set-password", "ana", "--password-stdin"],
        "operator-chosen-passphrase\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(prompt_none(&mut browser), "login_required");
    assert_eq!(userinfo(&t), 401);
    let c = (rp.as_str(), rp_secret.as_str());
    refresh(&s, c, t["refresh_token"].as_str().unwrap(), None).assert_error(400, "invalid_grant");
    assert!(password_works(&s, &rp, "ana", "operator-chosen-passphrase"));
}

both_backends!(
    reset_link_is_single_use_and_ends_everything,
    a_new_password_ends_code_issued_access_tokens,
);

/// A SQLite server that mails through `sink`.
fn with_smtp(sink: &SmtpSink) -> ServerBuilder {
    ServerBuilder::new(Backend::Sqlite)
        .env("PORTCULLIS_SMTP__HOST", "127.0.0.1")
        .env("PORTCULLIS_SMTP__PORT", &sink.port.to_string())
        .env("PORTCULLIS_SMTP__TLS", "none")
        .env("PORTCULLIS_SMTP__FROM", "Portcullis <no-reply@example.com>")
}

#[test]
fn forgot_password_mails_a_link_and_tells_nobody_whether_the_account_exists() {
    let sink = SmtpSink::start();
    let s = with_smtp(&sink)
        .env("PORTCULLIS_LOGIN__IP_MAX_FAILURES", "6")
        .start();
    user(
        &s,
        "bob",
        &["--email", "bob@example.com", "--name", "Bob Example"],
    );
    user(&s, "nomail", &[]);
    let (id, _) = rp_client(&s, "Notes");
    let mut b = Browser::new(&s);
    let login = b.get(&format!(
        "/authorize?{}",
        query(&auth_params(&id, "openid", &[]))
    ));
    assert!(login.body.contains("href=\"/password/forgot\""));

    let ask = |b: &mut Browser, account: &str| -> Resp {
        let form = b.get("/password/forgot");
        assert_eq!(form.status, 200);
        let csrf = hidden(&form.body, "csrf_token").unwrap();
        b.post(
            "/password/forgot",
            &[("csrf_token", &csrf), ("account", account)],
        )
    };
    let known = ask(&mut b, "bob");
    let unknown = ask(&mut b, "nobody-here");
    let no_email = ask(&mut b, "nomail");
    let by_email = ask(&mut b, "BOB@example.com");
    assert_eq!(known.status, 200);
    for other in [&unknown, &no_email, &by_email] {
        assert_eq!(other.status, known.status);
        assert_eq!(
            other.body, known.body,
            "the same answer whether or not the account exists"
        );
    }
    let r = b.post("/password/forgot", &[("account", "bob")]);
    assert_eq!(r.status, 403, "CSRF");

    // Bob asked twice (by name, by email): one mail, the second asking came too soon after.
    let mail = sink.wait_for(1);
    // Each request is audited once its lookup and any mail are done: after four, no mail is
    // still on its way.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let rows = s.cli_json(&["audit", "list", "--json"]);
        let done = rows
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == "password.reset_requested")
            .count();
        if done >= 4 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{rows}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        sink.count(),
        1,
        "mail only for the account that exists, once"
    );
    let message = &quoted_printable(&mail[0]);
    assert!(message.contains("To: bob@example.com"), "{message}");
    assert!(message.contains("From: Portcullis <no-reply@example.com>"));
    let start = message
        .find(&format!("{}/password/reset?token=", s.base))
        .expect("link in mail");
    let link: String = message[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    let r = use_link(&mut Browser::new(&s), &link, NEW_PASSWORD, NEW_PASSWORD);
    assert_eq!(r.status, 200, "{}", r.body);

    // The address's budget for asking (6 here) runs out; signing in from it still works.
    assert_eq!(ask(&mut b, "nobody-1").status, 200);
    assert_eq!(ask(&mut b, "nobody-2").status, 200);
    assert_eq!(ask(&mut b, "nobody-3").status, 429);
    assert!(password_works(&s, &id, "bob", NEW_PASSWORD));
}

/// A reset mail the relay refused was never delivered: asking again mails a link at once,
/// instead of "a link was mailed moments ago".
#[test]
fn a_refused_mail_does_not_hold_the_next_one_back() {
    let sink = SmtpSink::start();
    let s = with_smtp(&sink).start();
    user(&s, "carl", &["--email", "carl@example.com"]);
    sink.refuse_next(1);
    let mut b = Browser::new(&s);
    let mut ask = || {
        let form = b.get("/password/forgot");
        let csrf = hidden(&form.body, "csrf_token").unwrap();
        let r = b.post(
            "/password/forgot",
            &[("csrf_token", &csrf), ("account", "carl")],
        );
        assert_eq!(r.status, 200, "{}", r.body);
    };
    ask();
    // The first attempt is over (and failed) once its audit row is there.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let rows = s.cli_json(&["audit", "list", "--json"]);
        if rows
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["detail"] == "mail failed")
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{rows}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(sink.count(), 0);
    ask();
    let mail = sink.wait_for(1);
    assert!(quoted_printable(&mail[0]).contains("/password/reset?token="));
}

/// Undo quoted-printable (RFC 2045 6.7), as a mail client would.
fn quoted_printable(s: &str) -> String {
    let joined = s.replace("=\r\n", "");
    let mut out = Vec::new();
    let bytes = joined.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn without_smtp_there_is_no_forgot_page() {
    let s = Server::start(Backend::Sqlite);
    let (id, _) = s.client(&["--redirect-uri", crate::signin::REDIRECT]);
    let mut b = Browser::new(&s);
    let login = b.get(&format!(
        "/authorize?{}",
        query(&auth_params(&id, "openid", &[]))
    ));
    assert!(!login.body.contains("/password/forgot"));
    assert_eq!(b.get("/password/forgot").status, 404);
}
