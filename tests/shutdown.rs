//! Graceful shutdown: SIGTERM or SIGINT (Ctrl-C) stops accepting, lets a request in flight
//! finish, writes the queued audit rows and exits 0; a second signal stops at once.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::upstream::{Fault, Person, Upstream};
use crate::common::{Backend, ServerBuilder};
use crate::signin::{auth_params, Browser, REDIRECT};

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    stop_with(&["TERM"]);
}

#[test]
fn ctrl_c_finishes_in_flight_requests_and_exits_zero() {
    stop_with(&["INT"]);
}

#[test]
fn a_second_signal_stops_at_once() {
    stop_with(&["INT", "TERM"]);
}

/// Send `signals` one after another while a request is in flight; with one, the request gets its
/// answer and the exit status is 0; with two, the process ends with status 1 without waiting.
fn stop_with(signals: &[&str]) {
    // A request that stays in flight for 10 s: a sign-in waiting on a slow upstream.
    let google = Upstream::google();
    let mut sb = ServerBuilder::new(Backend::Sqlite);
    for (k, v) in google.google_env() {
        sb = sb.env(&k, &v);
    }
    let mut s = sb.start();
    let (id, _) = s.client(&["--redirect-uri", REDIRECT, "--skip-consent"]);
    let params = auth_params(&id, "openid", &[]);
    google.set_person(Person::new("9100", None, false));
    google.set_fault(Fault::TokenSlow);
    let mut browser = Browser::new(&s);
    let login = browser.get(&format!("/authorize?{}", crate::signin::query(&params)));
    let csrf = crate::signin::hidden(
        &login.body[login.body.find("action=\"/login/google\"").unwrap()..],
        "csrf_token",
    )
    .unwrap();
    let mut form: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    form.push(("csrf_token", &csrf));
    let to_google = browser.post("/login/google", &form);
    let at_google = browser.get_url(to_google.header("location").unwrap());
    let callback = at_google.header("location").unwrap().to_owned();
    let cookies = browser.cookie_header();
    let in_flight = std::thread::spawn(move || {
        let started = Instant::now();
        let r = crate::common::agent()
            .get(&callback)
            .set("Cookie", &cookies)
            .call();
        let status = match r {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(code, _)) => code,
            Err(e) => return Err(e.to_string()),
        };
        Ok((status, started.elapsed()))
    });

    // In flight: the server has called the upstream, which holds the answer for 20 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    while google.token_arrivals() == 0 {
        assert!(
            Instant::now() < deadline,
            "the callback never reached the upstream"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let signalled = Instant::now();
    s.signal(signals[0]);
    // No new connections once stopping (the listener closes).
    let deadline = Instant::now() + Duration::from_secs(3);
    while TcpStream::connect(("127.0.0.1", s.port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting after SIG{}",
            signals[0]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(second) = signals.get(1) {
        s.signal(second);
        let Some(exit) = s.wait_exit(Duration::from_secs(3)) else {
            panic!("a second signal did not stop it at once: {}", s.logs());
        };
        assert_eq!(exit.code(), Some(1), "cut short: {exit:?}");
        assert!(
            signalled.elapsed() < Duration::from_secs(8),
            "not after the grace"
        );
        // Cut: the connection was there and ended without an answer.
        let cut = in_flight.join().unwrap().expect_err("not waited for");
        assert!(!cut.contains("refused"), "{cut}");
        return;
    }
    let (status, took) = in_flight
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("the request in flight was cut: {e}"));
    assert_eq!(
        status, 504,
        "the request in flight finished with its answer"
    );
    assert!(took >= Duration::from_secs(9), "{took:?}");
    let exit = s
        .wait_exit(Duration::from_secs(20))
        .expect("exits by itself");
    assert!(exit.success(), "exit status {exit:?}");
    assert!(signalled.elapsed() < Duration::from_secs(20));
    let logs = s.logs();
    assert!(logs.contains("stopped"), "{logs}");
    // The sign-in's audit rows were written before exit.
    let rows = s.cli_json(&["audit", "list", "--json"]);
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "login.failure"),
        "{rows}"
    );
}
