//! RP-initiated logout: with and without `id_token_hint`, registered post-logout URIs only,
//! the session and its online refresh tokens end, offline ones survive.

use crate::both_backends;
use crate::common::{execute_sql, Backend, Server};
use crate::refresh::{authorize_in_session, refresh, rp_client, tokens, BYE};
use crate::signin::{
    auth_params, hidden, location_params, login_attempt, query, user, Browser, VERIFIER,
};

fn q(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// `prompt=none` in this browser: the code's redirect, or the error's.
fn silent(b: &mut Browser, client_id: &str) -> std::collections::HashMap<String, String> {
    let params = auth_params(client_id, "openid", &[("prompt", "none")]);
    location_params(&b.get(&format!("/authorize?{}", query(&params)))).1
}

fn logout_with_hint_ends_session_and_online_refresh_tokens(b: Backend) {
    let s = Server::start(b);
    user(&s, "ivy", &[]);
    let (id, secret) = rp_client(&s, "Notes");
    let c = (id.as_str(), secret.as_str());
    let mut browser = Browser::new(&s);
    let online = tokens(&s, &mut browser, c, "ivy", "openid notes:read");
    let offline = tokens(&s, &mut browser, c, "ivy", "openid offline_access");
    let hint = online["id_token"].as_str().unwrap();
    assert!(silent(&mut browser, &id).contains_key("code"), "signed in");
    let old_cookies = browser.cookies.clone();

    let r = browser.get(&format!(
        "/logout?{}",
        q(&[
            ("id_token_hint", hint),
            ("post_logout_redirect_uri", BYE),
            ("state", "bye-1"),
        ])
    ));
    let (to, back) = location_params(&r);
    assert_eq!(to, BYE);
    assert_eq!(back.get("state").map(String::as_str), Some("bye-1"));
    assert_eq!(
        browser
            .cookies
            .get("portcullis_session")
            .map(String::as_str),
        Some(""),
        "session cookie cleared"
    );

    // The session is gone server-side too: replaying the old cookie does not help.
    browser.cookies = old_cookies;
    assert_eq!(
        silent(&mut browser, &id).get("error").map(String::as_str),
        Some("login_required")
    );
    let rt = |t: &serde_json::Value| t["refresh_token"].as_str().unwrap().to_owned();
    refresh(&s, c, &rt(&online), None).assert_error(400, "invalid_grant");
    let kept = refresh(&s, c, &rt(&offline), None);
    assert_eq!(
        kept.status, 200,
        "offline_access survives logout: {}",
        kept.body
    );
    let next = kept.json()["refresh_token"].as_str().unwrap().to_owned();
    let info = crate::refresh::introspect(&s, c, &next, "refresh_token");
    assert_eq!(
        info["exp"].as_i64().unwrap(),
        info["iat"].as_i64().unwrap() + 2_592_000,
        "offline: the configured 30 days"
    );

    // Logging out again without a session: nothing to end, the redirect still happens.
    let r = browser.get(&format!(
        "/logout?{}",
        q(&[("id_token_hint", hint), ("post_logout_redirect_uri", BYE)])
    ));
    assert_eq!(location_params(&r).0, BYE);
}

fn logout_without_hint_asks_first(b: Backend) {
    let s = Server::start(b);
    user(&s, "jay", &["--name", "Jay <i>Example</i>"]);
    let (id, secret) = rp_client(&s, "Notes");
    let c = (id.as_str(), secret.as_str());
    let mut browser = Browser::new(&s);
    tokens(&s, &mut browser, c, "jay", "openid");
    let ask = browser.get(&format!(
        "/logout?{}",
        q(&[
            ("client_id", &id),
            ("post_logout_redirect_uri", BYE),
            ("state", "s<1>"),
        ])
    ));
    assert_eq!(ask.status, 200, "{}", ask.body);
    assert!(ask.body.contains("Sign out?") && ask.body.contains("Notes"));
    assert!(ask.body.contains("Jay &#60;i&#62;Example") || ask.body.contains("Jay &lt;i&gt;"));
    assert!(!ask.body.contains("<i>Example"), "escaped");
    assert!(ask
        .header("content-security-policy")
        .unwrap()
        .contains("frame-ancestors 'none'"));
    let csrf = hidden(&ask.body, "csrf_token").unwrap();
    assert!(
        silent(&mut browser, &id).contains_key("code"),
        "asking ended nothing"
    );

    // No or wrong CSRF token: refused, still signed in.
    let mut form = vec![
        ("client_id", id.as_str()),
        ("post_logout_redirect_uri", BYE),
        ("state", "s<1>"),
        ("decision", "logout"),
    ];
    assert_eq!(browser.post("/logout/confirm", &form).status, 403);
    form.push(("csrf_token", "forged"));
    assert_eq!(browser.post("/logout/confirm", &form).status, 403);
    assert!(silent(&mut browser, &id).contains_key("code"));

    // Staying keeps the session.
    form.pop();
    form.push(("csrf_token", &csrf));
    form[3] = ("decision", "stay");
    let stay = browser.post("/logout/confirm", &form);
    assert_eq!(location_params(&stay).0, BYE);
    assert!(silent(&mut browser, &id).contains_key("code"));

    // Confirming ends it and returns with the state.
    form[3] = ("decision", "logout");
    let done = browser.post("/logout/confirm", &form);
    let (to, back) = location_params(&done);
    assert_eq!((to.as_str(), back["state"].as_str()), (BYE, "s<1>"));
    assert_eq!(silent(&mut browser, &id)["error"], "login_required");

    // Without a client or a redirect: our own signed-out page.
    tokens(&s, &mut browser, c, "jay", "openid");
    let ask = browser.get("/logout");
    let csrf = hidden(&ask.body, "csrf_token").unwrap();
    let done = browser.post(
        "/logout/confirm",
        &[("csrf_token", &csrf), ("decision", "logout")],
    );
    assert_eq!(done.status, 200);
    assert!(done.body.contains("You have signed out"), "{}", done.body);
    assert_eq!(silent(&mut browser, &id)["error"], "login_required");
}

fn bad_logout_requests_never_redirect(b: Backend) {
    let s = Server::start(b);
    user(&s, "kim", &[]);
    user(&s, "lee", &[]);
    let (id, secret) = rp_client(&s, "Notes");
    let (other, other_secret) = rp_client(&s, "Other");
    let c = (id.as_str(), secret.as_str());
    let mut browser = Browser::new(&s);
    let t = tokens(&s, &mut browser, c, "kim", "openid");
    let hint = t["id_token"].as_str().unwrap();
    let mut tampered = hint.to_owned();
    tampered.pop();
    tampered.push(if hint.ends_with('A') { 'B' } else { 'A' });
    let cases: Vec<Vec<(&str, &str)>> = vec![
        // an unregistered URI, even one that differs by a slash
        vec![
            ("id_token_hint", hint),
            ("post_logout_redirect_uri", "http://127.0.0.1:9/bye/"),
        ],
        vec![
            ("id_token_hint", hint),
            ("post_logout_redirect_uri", "https://evil.example/"),
        ],
        // a hint for one client, a client_id of another
        vec![
            ("id_token_hint", hint),
            ("client_id", &other),
            ("post_logout_redirect_uri", BYE),
        ],
        // a URI with no client to check it against, or an unknown client
        vec![("post_logout_redirect_uri", BYE)],
        vec![("client_id", "nobody"), ("post_logout_redirect_uri", BYE)],
    ];
    for case in &cases {
        for post in [false, true] {
            let r = if post {
                browser.post("/logout", case)
            } else {
                browser.get(&format!("/logout?{}", q(case)))
            };
            assert_eq!(r.status, 400, "{case:?}: {}", r.body);
            assert!(r.header("location").is_none(), "{case:?}");
            assert!(r.body.contains("not valid"), "{}", r.body);
        }
    }
    assert!(
        silent(&mut browser, &id).contains_key("code"),
        "still signed in"
    );

    // A hint that does not verify (garbage, tampered, or signed by a key since retired) counts
    // as none: the person is asked. Without a client id nothing vouches for the redirect, so
    // the form does not carry it.
    for bad in ["garbage", tampered.as_str()] {
        let case = [
            ("id_token_hint", bad),
            ("post_logout_redirect_uri", BYE),
            ("state", "s1"),
        ];
        for post in [false, true] {
            let r = if post {
                browser.post("/logout", &case)
            } else {
                browser.get(&format!("/logout?{}", q(&case)))
            };
            assert_eq!(r.status, 200, "{bad}: {}", r.body);
            assert!(r.body.contains("Sign out?"), "{}", r.body);
            assert!(r.header("location").is_none());
            assert!(hidden(&r.body, "post_logout_redirect_uri").is_none());
            assert!(hidden(&r.body, "state").is_none());
        }
    }
    assert!(
        silent(&mut browser, &id).contains_key("code"),
        "asking ended nothing"
    );

    // A valid hint for someone else than the signed-in person: asked, not signed out.
    let (o, os) = (other.as_str(), other_secret.as_str());
    let mut second = Browser::new(&s);
    let lee_hint = tokens(&s, &mut second, (o, os), "lee", "openid")["id_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = browser.get(&format!("/logout?{}", q(&[("id_token_hint", &lee_hint)])));
    assert_eq!(r.status, 200);
    assert!(r.body.contains("Sign out?"));
    assert!(silent(&mut browser, &id).contains_key("code"));
    // The hint's own person is signed out at once, in their browser.
    let r = second.get(&format!("/logout?{}", q(&[("id_token_hint", &lee_hint)])));
    assert_eq!(r.status, 200);
    assert!(r.body.contains("You have signed out"));
    let code = authorize_in_session(&mut browser, &auth_params(&id, "openid", &[]));
    assert!(!code.is_empty(), "the other browser is untouched");
    assert_eq!(silent(&mut second, o)["error"], "login_required");

    // Confirming after an unverifiable hint signs out; with the client named, its registered
    // redirect is followed as it would be without a hint.
    let ask = browser.get(&format!(
        "/logout?{}",
        q(&[
            ("id_token_hint", &tampered),
            ("client_id", &id),
            ("post_logout_redirect_uri", BYE),
            ("state", "s2"),
        ])
    ));
    assert_eq!(ask.status, 200, "{}", ask.body);
    let form: Vec<(String, String)> = [
        "client_id",
        "post_logout_redirect_uri",
        "state",
        "csrf_token",
    ]
    .iter()
    .map(|k| (k.to_string(), hidden(&ask.body, k).unwrap()))
    .chain([("decision".to_string(), "logout".to_string())])
    .collect();
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let done = browser.post("/logout/confirm", &form);
    let (to, back) = location_params(&done);
    assert_eq!((to.as_str(), back["state"].as_str()), (BYE, "s2"));
    assert_eq!(silent(&mut browser, &id)["error"], "login_required");
}

/// Signing in again in the same browser keeps the refresh tokens tied to the browser (its
/// logout ends them), and an ID token from the earlier sign-in no longer signs out silently.
fn signing_in_again_moves_tokens_and_retires_old_hints(b: Backend) {
    let s = Server::start(b);
    user(&s, "mo", &[]);
    let (id, secret) = rp_client(&s, "Notes");
    let c = (id.as_str(), secret.as_str());
    let mut browser = Browser::new(&s);
    let first = tokens(&s, &mut browser, c, "mo", "openid notes:read");
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    let params = auth_params(&id, "openid", &[("prompt", "login")]);
    let back = crate::signin::sign_in(&mut browser, &params, "mo", true);
    let r = crate::signin::redeem(
        &s,
        &id,
        &secret,
        &back["code"],
        Some(crate::signin::VERIFIER),
    );
    let second = r.json();
    let (old_hint, new_hint) = (
        first["id_token"].as_str().unwrap(),
        second["id_token"].as_str().unwrap(),
    );
    assert_ne!(
        crate::refresh::payload(old_hint)["auth_time"],
        crate::refresh::payload(new_hint)["auth_time"]
    );
    let ask = browser.get(&format!("/logout?{}", q(&[("id_token_hint", old_hint)])));
    assert_eq!(ask.status, 200);
    assert!(ask.body.contains("Sign out?"), "an old sign-in's hint asks");
    assert!(silent(&mut browser, &id).contains_key("code"));
    let done = browser.get(&format!("/logout?{}", q(&[("id_token_hint", new_hint)])));
    assert!(done.body.contains("You have signed out"), "{}", done.body);
    let rt = first["refresh_token"].as_str().unwrap();
    refresh(&s, c, rt, None).assert_error(400, "invalid_grant");
}

/// Someone guessing a password locks new sign-ins for a while, but ends nothing the person
/// already has: tokens, userinfo, the session, and signing out of it.
fn a_temporary_lockout_ends_nothing_the_person_has(b: Backend) {
    let s = Server::start(b);
    user(&s, "nell", &[]);
    let (id, secret) = rp_client(&s, "Notes");
    let c = (id.as_str(), secret.as_str());
    let mut browser = Browser::new(&s);
    let t = tokens(&s, &mut browser, c, "nell", "openid notes:read");
    // Someone else guesses at the password.
    let params = auth_params(&id, "openid", &[]);
    for _ in 0..5 {
        let r = login_attempt(&mut Browser::new(&s), &params, "nell", "a-wrong-guess");
        assert_eq!(r.status, 401);
    }
    let shown = s.cli_json(&["user", "show", "nell", "--json"]);
    assert!(shown["locked_until"].is_i64(), "locked out: {shown}");

    let at = t["access_token"].as_str().unwrap();
    let info = s.post_form("/userinfo", &[("access_token", at)], None);
    assert_eq!(info.status, 200, "{}", info.body);
    assert_eq!(info.json()["sub"], shown["id"]);
    let code = silent(&mut browser, &id);
    assert!(code.contains_key("code"), "the session goes on: {code:?}");
    let r = crate::signin::redeem(&s, &id, &secret, &code["code"], Some(VERIFIER));
    assert_eq!(r.status, 200, "{}", r.body);
    let rt = t["refresh_token"].as_str().unwrap();
    let next = refresh(&s, c, rt, None);
    assert_eq!(next.status, 200, "{}", next.body);

    // Signing out still ends the session and its tokens.
    let hint = t["id_token"].as_str().unwrap();
    let done = browser.get(&format!("/logout?{}", q(&[("id_token_hint", hint)])));
    assert!(done.body.contains("You have signed out"), "{}", done.body);
    let next = next.json()["refresh_token"].as_str().unwrap().to_owned();
    refresh(&s, c, &next, None).assert_error(400, "invalid_grant");
    assert_eq!(silent(&mut browser, &id)["error"], "login_required");
}

/// Turning on a second factor ends the sessions that began without it, and with each the
/// refresh tokens issued in it; `offline_access` ones stay.
fn enrolling_a_second_factor_ends_other_sessions_and_their_tokens(b: Backend) {
    let s = Server::start(b);
    user(&s, "kim", &[]);
    let (id, secret) = rp_client(&s, "Notes");
    let c = (id.as_str(), secret.as_str());
    let mut browser = Browser::new(&s);
    let online = tokens(&s, &mut browser, c, "kim", "openid notes:read");
    let offline = tokens(&s, &mut browser, c, "kim", "openid offline_access");
    s.cli_json(&["user", "totp", "kim", "--json"]);
    assert_eq!(silent(&mut browser, &id)["error"], "login_required");
    let rt = |t: &serde_json::Value| t["refresh_token"].as_str().unwrap().to_owned();
    refresh(&s, c, &rt(&online), None).assert_error(400, "invalid_grant");
    let kept = refresh(&s, c, &rt(&offline), None);
    assert_eq!(kept.status, 200, "{}", kept.body);
}

/// A session ends 12 hours after sign-in even while it is in use.
fn a_session_ends_at_its_absolute_limit(b: Backend) {
    let s = Server::start(b);
    user(&s, "abe", &[]);
    let (id, secret) = rp_client(&s, "Notes");
    let c = (id.as_str(), secret.as_str());
    let mut browser = Browser::new(&s);
    tokens(&s, &mut browser, c, "abe", "openid notes:read");
    assert!(silent(&mut browser, &id).contains_key("code"), "signed in");
    // Signed in 12 hours and a minute ago, used a moment ago.
    assert_eq!(
        execute_sql(
            &s,
            "UPDATE sessions SET auth_time = auth_time - 43260, expires_at = expires_at - 43260"
        ),
        1
    );
    assert_eq!(silent(&mut browser, &id)["error"], "login_required");
}

/// The same person signing in again in a browser whose session went idle keeps their apps'
/// refresh tokens (they move to the new session, whose logout ends them).
fn signing_in_again_after_an_idle_session_keeps_the_tokens(b: Backend) {
    let s = Server::start(b);
    user(&s, "lu", &[]);
    let (id, secret) = rp_client(&s, "Notes");
    let c = (id.as_str(), secret.as_str());
    let mut browser = Browser::new(&s);
    let first = tokens(&s, &mut browser, c, "lu", "openid notes:read");
    // Two hours and a bit without use.
    assert_eq!(
        execute_sql(&s, "UPDATE sessions SET last_seen = last_seen - 7300"),
        1
    );
    assert_eq!(silent(&mut browser, &id)["error"], "login_required");
    let params = auth_params(&id, "openid notes:read", &[]);
    let back = crate::signin::sign_in(&mut browser, &params, "lu", true);
    let second = crate::signin::redeem(&s, &id, &secret, &back["code"], Some(VERIFIER)).json();
    let kept = refresh(&s, c, first["refresh_token"].as_str().unwrap(), None);
    assert_eq!(kept.status, 200, "{}", kept.body);
    let hint = second["id_token"].as_str().unwrap();
    let done = browser.get(&format!("/logout?{}", q(&[("id_token_hint", hint)])));
    assert!(done.body.contains("You have signed out"), "{}", done.body);
    let next = kept.json()["refresh_token"].as_str().unwrap().to_owned();
    refresh(&s, c, &next, None).assert_error(400, "invalid_grant");
}

/// A session gone idle, or whose user an operator locked, no longer signs anyone in, but the
/// refresh tokens issued in it live on: signing out of it ends them, by the rules for a live
/// one (a hint naming it, or the confirmation page, which may go idle while it is shown).
fn signing_out_of_an_idle_or_locked_session_ends_its_tokens(b: Backend) {
    let s = Server::start(b);
    let (id, secret) = rp_client(&s, "Notes");
    let c = (id.as_str(), secret.as_str());
    let rt = |t: &serde_json::Value| t["refresh_token"].as_str().unwrap().to_owned();
    let idle = |who: &str| {
        let sql = format!(
            "UPDATE sessions SET last_seen = last_seen - 7300 \
             WHERE user_id = (SELECT id FROM users WHERE username = '{who}')"
        );
        assert_eq!(execute_sql(&s, &sql), 1);
    };

    user(&s, "ida", &[]);
    let mut browser = Browser::new(&s);
    let t = tokens(&s, &mut browser, c, "ida", "openid notes:read");
    idle("ida");
    // Without a hint the person is asked, idle or not: another site sending the browser here
    // ends nothing.
    let ask = browser.get("/logout");
    assert!(ask.body.contains("Sign out?"), "{}", ask.body);
    let still = crate::refresh::introspect(&s, c, &rt(&t), "refresh_token");
    assert_eq!(still["active"], true, "{still}");
    let hint = t["id_token"].as_str().unwrap();
    let done = browser.get(&format!("/logout?{}", q(&[("id_token_hint", hint)])));
    assert!(done.body.contains("You have signed out"), "{}", done.body);
    refresh(&s, c, &rt(&t), None).assert_error(400, "invalid_grant");

    user(&s, "lee", &[]);
    let mut browser = Browser::new(&s);
    let t = tokens(&s, &mut browser, c, "lee", "openid notes:read");
    s.cli_json(&["user", "lock", "lee", "--json"]);
    let hint = t["id_token"].as_str().unwrap();
    let done = browser.get(&format!("/logout?{}", q(&[("id_token_hint", hint)])));
    assert!(done.body.contains("You have signed out"), "{}", done.body);
    s.cli_json(&["user", "unlock", "lee", "--json"]);
    refresh(&s, c, &rt(&t), None).assert_error(400, "invalid_grant");

    user(&s, "mo", &[]);
    let mut browser = Browser::new(&s);
    let t = tokens(&s, &mut browser, c, "mo", "openid notes:read");
    let ask = browser.get(&format!("/logout?{}", q(&[("client_id", &id)])));
    assert!(ask.body.contains("Sign out?"), "{}", ask.body);
    let csrf = hidden(&ask.body, "csrf_token").unwrap();
    idle("mo");
    let form = [
        ("client_id", id.as_str()),
        ("decision", "logout"),
        ("csrf_token", csrf.as_str()),
    ];
    let done = browser.post("/logout/confirm", &form);
    assert!(done.body.contains("You have signed out"), "{}", done.body);
    refresh(&s, c, &rt(&t), None).assert_error(400, "invalid_grant");
}

/// A code issued in a session and not yet redeemed follows the session: it moves to the new
/// session when the person signs in again (whose logout then ends what it starts), and it is
/// spent when the session ends.
fn unredeemed_codes_follow_their_session(b: Backend) {
    let s = Server::start(b);
    user(&s, "nia", &[]);
    let (id, secret) = rp_client(&s, "Notes");
    let c = (id.as_str(), secret.as_str());
    let mut browser = Browser::new(&s);
    let first = tokens(&s, &mut browser, c, "nia", "openid notes:read");
    let params = auth_params(&id, "openid notes:read", &[]);
    let pending = authorize_in_session(&mut browser, &params);
    // Signed in again before the application redeemed it.
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    let again = auth_params(&id, "openid", &[("prompt", "login")]);
    let back = crate::signin::sign_in(&mut browser, &again, "nia", true);
    let second = crate::signin::redeem(&s, &id, &secret, &back["code"], Some(VERIFIER)).json();
    let late = crate::signin::redeem(&s, &id, &secret, &pending, Some(VERIFIER));
    assert_eq!(late.status, 200, "{}", late.body);
    let late = late.json();
    let hint = second["id_token"].as_str().unwrap();
    let done = browser.get(&format!("/logout?{}", q(&[("id_token_hint", hint)])));
    assert!(done.body.contains("You have signed out"), "{}", done.body);
    for t in [&first, &late] {
        let rt = t["refresh_token"].as_str().unwrap();
        refresh(&s, c, rt, None).assert_error(400, "invalid_grant");
    }

    // Signed out before the application redeemed it: the code is spent.
    let t = tokens(&s, &mut browser, c, "nia", "openid notes:read");
    let pending = authorize_in_session(&mut browser, &params);
    let hint = t["id_token"].as_str().unwrap();
    let done = browser.get(&format!("/logout?{}", q(&[("id_token_hint", hint)])));
    assert!(done.body.contains("You have signed out"), "{}", done.body);
    crate::signin::redeem(&s, &id, &secret, &pending, Some(VERIFIER))
        .assert_error(400, "invalid_grant");
}

/// A relying party's auto-submitted form is a cross-site POST, and the browser sends no
/// `SameSite=Lax` cookie with it: such a POST is answered with the same request as a GET, which
/// the browser follows with its cookies. With the cookie, a POST is served as it is.
fn cross_site_posts_are_retried_as_gets(b: Backend) {
    let s = Server::start(b);
    user(&s, "pia", &[]);
    let (id, secret) = rp_client(&s, "Notes");
    let c = (id.as_str(), secret.as_str());
    let mut browser = Browser::new(&s);
    let t = tokens(&s, &mut browser, c, "pia", "openid notes:read");
    let hint = t["id_token"].as_str().unwrap();

    let params = auth_params(&id, "openid notes:read", &[("prompt", "none")]);
    let form: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = s.post_form("/authorize", &form, None);
    assert_eq!(r.status, 303, "{}", r.body);
    let again = r.header("location").unwrap().to_owned();
    assert!(again.starts_with("/authorize?"), "{again}");
    let back = location_params(&browser.get(&again)).1;
    assert!(back.contains_key("code"), "signed in after all: {back:?}");
    let same_site = location_params(&browser.post("/authorize", &form)).1;
    assert!(same_site.contains_key("code"), "{same_site:?}");

    let form = [
        ("id_token_hint", hint),
        ("post_logout_redirect_uri", BYE),
        ("state", "s 1"),
    ];
    let r = s.post_form("/logout", &form, None);
    assert_eq!(r.status, 303, "{}", r.body);
    let again = r.header("location").unwrap().to_owned();
    assert!(again.starts_with("/logout?"), "{again}");
    let (to, back) = location_params(&browser.get(&again));
    assert_eq!((to.as_str(), back["state"].as_str()), (BYE, "s 1"));
    assert_eq!(silent(&mut browser, &id)["error"], "login_required");
    refresh(&s, c, t["refresh_token"].as_str().unwrap(), None).assert_error(400, "invalid_grant");
}

both_backends!(
    a_session_ends_at_its_absolute_limit,
    unredeemed_codes_follow_their_session,
    signing_out_of_an_idle_or_locked_session_ends_its_tokens,
    cross_site_posts_are_retried_as_gets,
    a_temporary_lockout_ends_nothing_the_person_has,
    enrolling_a_second_factor_ends_other_sessions_and_their_tokens,
    signing_in_again_after_an_idle_session_keeps_the_tokens,
    signing_in_again_moves_tokens_and_retires_old_hints,
    logout_with_hint_ends_session_and_online_refresh_tokens,
    logout_without_hint_asks_first,
    bad_logout_requests_never_redirect,
);
