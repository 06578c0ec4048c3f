//! The `client` commands: JSON shapes, one-line errors, and their effect on a running server.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::both_backends;
use crate::common::{Backend, Server};

fn assert_one_line_error(out: &std::process::Output, code: i32) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr:?}");
    assert!(stderr.starts_with("error: "), "stderr: {stderr:?}");
}

fn client_lifecycle(b: Backend) {
    let s = Server::start(b);
    let created = s.cli_json(&[
        "client",
        "create",
        "--name",
        "Billing",
        "--client-id",
        "billing",
        "--grant-type",
        "client_credentials",
        "--scope",
        "invoices:read",
        "--scope",
        "invoices:write",
        "--auth-method",
        "client_secret_post",
        "--json",
    ]);
    assert_eq!(created["client_id"], "billing");
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 43, "256-bit base64url secret");

    let shown = s.cli_json(&["client", "show", "billing", "--json"]);
    assert_eq!(shown["name"], "Billing");
    assert_eq!(shown["auth_method"], "client_secret_post");
    assert_eq!(
        shown["scopes"],
        serde_json::json!(["invoices:read", "invoices:write"])
    );
    assert_eq!(shown["public"], false);
    assert!(
        shown.get("client_secret").is_none(),
        "secret is shown only at creation"
    );
    let text = serde_json::to_string(&shown).unwrap();
    assert!(!text.contains(&secret));

    let listed = s.cli_json(&["client", "list", "--json"]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0], shown, "list prints the show objects");

    // The secret is stored hashed: it appears nowhere in the database file (SQLite).
    if b == Backend::Sqlite {
        let db = crate::common::sqlite_bytes(&s);
        let needle = secret.as_bytes();
        assert!(!db.windows(needle.len()).any(|w| w == needle));
        use sha2::Digest;
        let hash: String = sha2::Sha256::digest(needle)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(
            db.windows(64).any(|w| w == hash.as_bytes()),
            "the SHA-256 is what is stored"
        );
    }

    let post = |secret: &str| {
        s.post_form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "billing"),
                ("client_secret", secret),
            ],
            None,
        )
    };
    assert_eq!(post(&secret).status, 200);

    // Rotation: the new secret works at once, the old one stops at once.
    let rotated = s.cli_json(&["client", "rotate-secret", "billing", "--json"]);
    assert_eq!(rotated["client_id"], "billing");
    let new_secret = rotated["client_secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert_eq!(post(&new_secret).status, 200);
    post(&secret).assert_error(401, "invalid_client");

    // Deletion: the client stops working within the cache window (5 s).
    let deleted = s.cli_json(&["client", "delete", "billing", "--json"]);
    assert_eq!(deleted["deleted"], true);
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let r = post(&new_secret);
        if r.status == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "deleted client still accepted");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        s.cli_json(&["client", "list", "--json"]),
        Value::Array(vec![])
    );
    assert_one_line_error(&s.cli(&["client", "show", "billing"]), 1);
}

fn client_create_rejects_bad_input_and_changes_nothing(b: Backend) {
    let s = Server::start(b);
    // Bad arguments: usage errors, exit 2.
    let bad_arguments: &[&str] = &[
        "--redirect-uri http://app.example.com/cb",
        "--redirect-uri https://a.example.com/cb#f",
        "--redirect-uri not-a-uri",
        // The URL parser would drop the newline; the header could not carry it.
        "--redirect-uri https://a.example.com/b%0Aye",
        "--post-logout-redirect-uri https://a.example.com/b%0Aye",
        "--redirect-uri https://a.example.com/b%20ye",
        "--public --grant-type client_credentials",
        "--grant-type authorization_code",
        "--client-id has%20space",
        "--scope bad\"scope",
        "--grant-type password",
        "--auth-method private_key_jwt",
        "--frobnicate",
    ];
    for extra in bad_arguments {
        let mut args = vec!["client", "create", "--name", "x"];
        args.extend(extra.split(' '));
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("%20", " ").replace("%0A", "\n"))
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_one_line_error(&s.cli(&args), 2);
    }
    for args in [&["client", "create"][..], &["nonsense"], &["client"], &[]] {
        assert_one_line_error(&s.cli(args), 2);
    }
    // A missing argument is named on that one line.
    let out = s.cli(&["client", "create"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--name"));
    let out = s.cli(&["user", "set-password", "nobody"]);
    assert_one_line_error(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--password-stdin"));
    // A federated account has no password to set, and is told so by name.
    let out = s.cli_stdin(
        &["user", "set-password", "google:1234", "--password-stdin"],
        "long enough passphrase",
    );
    assert_one_line_error(&out, 2);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("google:1234 names an account that signs in through Google or GitHub"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Failures: exit 1.
    assert_one_line_error(&s.cli(&["client", "rotate-secret", "missing"]), 1);
    assert_one_line_error(&s.cli(&["client", "delete", "missing"]), 1);
    assert_eq!(
        s.cli_json(&["client", "list", "--json"]),
        Value::Array(vec![])
    );

    // Ids may start with '-' (generated ids and key ids are base64url): still an id, not a flag.
    s.cli_json(&[
        "client",
        "create",
        "--name",
        "Dash",
        "--client-id",
        "-dash",
        "--json",
    ]);
    assert_eq!(
        s.cli_json(&["client", "show", "-dash", "--json"])["name"],
        "Dash"
    );
    assert_eq!(
        s.cli_json(&["client", "delete", "-dash", "--json"])["deleted"],
        true
    );

    // Duplicate id: the first stays as it was.
    s.cli_json(&[
        "client",
        "create",
        "--name",
        "One",
        "--client-id",
        "dup",
        "--json",
    ]);
    assert_one_line_error(
        &s.cli(&["client", "create", "--name", "Two", "--client-id", "dup"]),
        1,
    );
    assert_eq!(
        s.cli_json(&["client", "show", "dup", "--json"])["name"],
        "One"
    );

    // A public client has no secret to rotate.
    s.cli_json(&[
        "client",
        "create",
        "--name",
        "SPA",
        "--client-id",
        "spa",
        "--public",
        "--redirect-uri",
        "http://localhost:3000/cb",
        "--json",
    ]);
    assert_one_line_error(&s.cli(&["client", "rotate-secret", "spa"]), 1);
    let spa = s.cli_json(&["client", "show", "spa", "--json"]);
    assert_eq!(spa["auth_method"], "none");
    assert_eq!(spa["public"], true);
    assert_eq!(
        spa["grant_types"],
        serde_json::json!(["authorization_code"])
    );
}

both_backends!(
    client_lifecycle,
    client_create_rejects_bad_input_and_changes_nothing
);

/// `portcullis client list | head -1`: output to a closed pipe is a failure like any other (one
/// `error:` line, status 1), not a panic.
#[test]
fn a_closed_standard_output_is_one_error_line() {
    let s = Server::start(Backend::Sqlite);
    s.client(&[]);
    for args in [&["client", "list"][..], &["keys", "list"]] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = s.cli_to(args, writer.into());
        assert_one_line_error(&out, 1);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("standard output"),
            "{args:?}"
        );
    }
}
