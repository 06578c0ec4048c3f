//! The `user` commands: JSON shapes, password policy, locking, one-line errors.

use serde_json::Value;

use crate::both_backends;
use crate::common::{Backend, Server};
use crate::signin::{user, PASSWORD};

fn user_lifecycle(b: Backend) {
    let s = Server::start(b);
    let created = user(
        &s,
        "Grace",
        &[
            "--email",
            "grace@example.com",
            "--name",
            "Grace H",
            "--role",
            "admin",
            "--role",
            "ops",
        ],
    );
    assert_eq!(created["username"], "grace", "stored lower-case");
    assert_eq!(created["roles"], serde_json::json!(["admin", "ops"]));
    assert_eq!(created["has_password"], true);
    assert!(created.get("password_hash").is_none());
    let id = created["id"].as_str().unwrap().to_owned();

    let shown = s.cli_json(&["user", "show", "GRACE", "--json"]);
    assert_eq!(shown["id"], id.as_str());
    let listed = s.cli_json(&["user", "list", "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0], shown);

    // Only the Argon2id hash is stored, never the password.
    if b == Backend::Sqlite {
        let db = crate::common::sqlite_bytes(&s);
        assert!(!db.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()));
        assert!(db.windows(9).any(|w| w == b"$argon2id"));
    }

    assert_eq!(
        s.cli_json(&["user", "lock", "grace", "--json"])["locked"],
        true
    );
    assert_eq!(
        s.cli_json(&["user", "unlock", "grace", "--json"])["locked"],
        false
    );

    // Policy: too short, too common, the username; exit 2 and nothing changes.
    for weak in ["short\n", "password1\n", "grace\n", "Password1\n"] {
        let out = s.cli_stdin(&["user", "set-password", "grace", "--password-stdin"], weak);
        assert_eq!(out.status.code(), Some(2), "{weak:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    }
    let out = s.cli_stdin(
        &["user", "set-password", "grace", "--password-stdin"],
        "another-long-passphrase\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Duplicates, bad names, unknown users.
    let dup = s.cli_stdin(
        &["user", "create", "--username", "grace", "--password-stdin"],
        "x-unique-passphrase\n",
    );
    assert_eq!(dup.status.code(), Some(1));
    for bad in [
        &["user", "create", "--username", "bad name"][..],
        &["user", "create", "--username", "g", "--email", "nope"],
        &[
            "user",
            "create",
            "--username",
            "g",
            "--phone-number",
            "call me",
        ],
        &["user", "create", "--username", "g", "--phone-number", "+"],
    ] {
        assert_eq!(s.cli(bad).status.code(), Some(2), "{bad:?}");
    }
    assert_eq!(s.cli(&["user", "show", "nobody"]).status.code(), Some(1));

    let deleted = s.cli_json(&["user", "delete", "grace", "--json"]);
    assert_eq!(deleted["deleted"], true);
    assert_eq!(
        s.cli_json(&["user", "list", "--json"]),
        Value::Array(vec![])
    );
}

both_backends!(user_lifecycle);
