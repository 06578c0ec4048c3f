//! A relying-party library we did not write, Python `authlib`, runs the whole sign-in against
//! the server. Skipped with a notice when authlib is not installed, unless `REQUIRE_AUTHLIB=1`.

use std::process::Command;

use serde_json::Value;

use crate::common::{Backend, Server};
use crate::signin::{user, PASSWORD, REDIRECT};

fn authlib_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import authlib, requests"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("REQUIRE_AUTHLIB").as_deref() != Ok("1"),
            "REQUIRE_AUTHLIB=1 but python3 cannot import authlib and requests"
        );
        eprintln!("NOTICE: authlib test skipped (pip install authlib requests)");
    }
    ok
}

#[test]
fn authlib_relying_party_signs_in() {
    if !authlib_available() {
        return;
    }
    let s = Server::start(Backend::Sqlite);
    let created = user(
        &s,
        "frank",
        &["--name", "Frank Example", "--email", "frank@example.com"],
    );
    let (id, secret) = s.client(&["--name", "Authlib RP", "--redirect-uri", REDIRECT]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/rp/authlib_flow.py");
    let out = Command::new("python3")
        .args([script, &s.base, &id, &secret, REDIRECT, "frank", PASSWORD])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "authlib flow failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(seen["sub"], created["id"]);
    assert_eq!(seen["userinfo"]["email"], "frank@example.com");
    assert_eq!(seen["userinfo"]["name"], "Frank Example");
    assert_eq!(seen["iss_in_callback"], true);
}
