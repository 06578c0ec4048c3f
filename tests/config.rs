//! Configuration: file, environment layering, and one-line errors that name the key.

use crate::common::{portcullis_command, write_file, Backend, Server, ServerBuilder};

fn run(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = portcullis_command();
    cmd.current_dir(dir).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run portcullis")
}

fn one_line_error(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "should fail: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(stderr.starts_with("error: "), "{stderr:?}");
    stderr
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let e = one_line_error(&run(
        d,
        &["--config", "missing.toml", "client", "list"],
        &[],
    ));
    assert!(e.contains("missing.toml"), "{e}");
    let e = one_line_error(&run(
        d,
        &["client", "list"],
        &[("PORTCULLIS_CONFIG", "nope.toml")],
    ));
    assert!(e.contains("nope.toml"), "{e}");

    write_file(
        d,
        "unknown.toml",
        "[tokens]\naccess_token_ttl_secs = 60\nfrobnicate = 1\n",
    );
    let e = one_line_error(&run(
        d,
        &["--config", "unknown.toml", "client", "list"],
        &[],
    ));
    assert!(e.contains("frobnicate"), "{e}");

    write_file(
        d,
        "type.toml",
        "[tokens]\naccess_token_ttl_secs = \"ten\"\n",
    );
    let e = one_line_error(&run(d, &["--config", "type.toml", "client", "list"], &[]));
    assert!(e.contains("access_token_ttl_secs"), "{e}");

    let e = one_line_error(&run(
        d,
        &["client", "list"],
        &[("PORTCULLIS_TOKENS__ACCESS_TOKEN_ALG", "HS256")],
    ));
    assert!(e.contains("access_token_alg"), "{e}");
    let e = one_line_error(&run(
        d,
        &["client", "list"],
        &[("PORTCULLIS_LOGIN__BOGUS", "1")],
    ));
    assert!(e.contains("bogus"), "{e}");

    for bad in [
        "not a url",
        "https://id.example.com/?x=1",
        "https://id.example.com/#f",
        "ftp://x",
        // Cookies are Secure only for an issuer spelled "https://": no other spelling.
        "HTTPS://id.example.com",
        "https://id.example.com:443",
    ] {
        let e = one_line_error(&run(d, &["client", "list"], &[("PORTCULLIS_ISSUER", bad)]));
        assert!(e.contains("issuer"), "{bad}: {e}");
    }
    // SMTP credentials in the clear only to a relay on this machine.
    let e = one_line_error(&run(
        d,
        &["client", "list"],
        &[
            ("PORTCULLIS_SMTP__HOST", "mail.example.com"),
            ("PORTCULLIS_SMTP__TLS", "none"),
            ("PORTCULLIS_SMTP__FROM", "a <a@example.com>"),
            ("PORTCULLIS_SMTP__USERNAME", "mailer"),
            ("PORTCULLIS_SMTP__PASSWORD", "mail-secret"),
        ],
    ));
    assert!(e.contains("smtp.tls") && !e.contains("mail-secret"), "{e}");
    let e = one_line_error(&run(
        d,
        &["client", "list"],
        &[("PORTCULLIS_DATABASE_URL", "mysql://x")],
    ));
    assert!(e.contains("database_url"), "{e}");
    for key in ["AAAA", "not base64!"] {
        let e = one_line_error(&run(
            d,
            &["serve"],
            &[("PORTCULLIS_LOGIN__TOTP_ENCRYPTION_KEY", key)],
        ));
        assert!(e.contains("login.totp_encryption_key"), "{e}");
    }
    // Nothing was created by the failed commands.
    assert!(!d.join("portcullis.db").exists());
}

/// A mistake in the file next to a secret: the error names the place and the key, never the
/// secret (a TOML syntax error quoted the line; a wrong type quoted the value).
#[test]
fn config_errors_do_not_repeat_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, body, says) in [
        (
            "escape.toml",
            "[smtp]\nhost = \"127.0.0.1\"\nfrom = \"a <a@example.com>\"\npassword = \"hunter2\\q-secret\"\n",
            "line 4",
        ),
        (
            "number.toml",
            "[smtp]\nhost = \"127.0.0.1\"\nfrom = \"a <a@example.com>\"\npassword = 9817263544\n",
            "smtp.password",
        ),
        ("metrics.toml", "metrics_token = 9817263544981726\n", "metrics_token"),
    ] {
        write_file(d, name, body);
        let e = one_line_error(&run(d, &["--config", name, "client", "list"], &[]));
        assert!(e.contains(says), "{name}: {e}");
        assert!(!e.contains("hunter2") && !e.contains("98172635"), "{name}: {e}");
    }
}

/// Other programs' `PORTCULLIS_*` variables (Kubernetes sets `PORTCULLIS_PORT` and more for a
/// service of that name) are ignored with a note; a secret that looks like a number stays text
/// and is never echoed.
#[test]
fn stray_and_number_like_environment_values() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &["client", "list", "--json"],
        &[
            ("PORTCULLIS_SERVICE_HOST", "10.0.0.1"),
            ("PORTCULLIS_PORT", "tcp://10.0.0.1:8080"),
            ("PORTCULLIS_SMTP__HOST", "127.0.0.1"),
            ("PORTCULLIS_SMTP__TLS", "none"),
            ("PORTCULLIS_SMTP__FROM", "Portcullis <no-reply@example.com>"),
            ("PORTCULLIS_SMTP__USERNAME", "1234"),
            ("PORTCULLIS_SMTP__PASSWORD", "12345678"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("12345678"), "{stderr}");
    assert!(
        stderr.contains("PORTCULLIS_SERVICE_HOST") && stderr.contains("PORTCULLIS_PORT"),
        "{stderr}"
    );
    // A failing command still says exactly one line.
    let e = one_line_error(&run(
        dir.path(),
        &["client", "show", "no-such-client"],
        &[("PORTCULLIS_PORT", "tcp://10.0.0.1:8080")],
    ));
    assert!(e.contains("no client no-such-client"), "{e}");
    // A misspelt key inside a known section is still an error.
    let e = one_line_error(&run(
        dir.path(),
        &["client", "list"],
        &[
            ("PORTCULLIS_SMTP__PASWORD", "x"),
            ("PORTCULLIS_SMTP__HOST", "h"),
            ("PORTCULLIS_SMTP__FROM", "Portcullis <no-reply@example.com>"),
        ],
    ));
    assert!(e.contains("pasword"), "{e}");
}

#[test]
fn file_then_environment_layering() {
    let dir = tempfile::tempdir().unwrap();
    // The server's address, database and keys come from the harness's environment; the file
    // sets the token settings.
    let file = write_file(
        dir.path(),
        "portcullis.toml",
        "[tokens]\naccess_token_ttl_secs = 120\naccess_token_alg = \"RS256\"\n",
    );
    // The environment wins over the file for the key it names; the file's others stay.
    let s = ServerBuilder::new(Backend::Sqlite)
        .env("PORTCULLIS_CONFIG", file.to_str().unwrap())
        .env("PORTCULLIS_TOKENS__ACCESS_TOKEN_TTL_SECS", "90")
        .start();
    let (id, secret) = s.client(&[]);
    let r = s.post_form(
        "/token",
        &[("grant_type", "client_credentials")],
        Some((&id, &secret)),
    );
    assert_eq!(r.json()["expires_in"], 90);
    let token = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().alg,
        jsonwebtoken::Algorithm::RS256
    );
}

/// Behind a TLS proxy (an https issuer, plain http on the socket): HSTS on every response and
/// `__Host-` cookies; with an http issuer neither.
#[test]
fn https_issuer_sends_hsts() {
    let s = ServerBuilder::new(Backend::Sqlite)
        .env("PORTCULLIS_ISSUER", "https://id.example.com")
        .start();
    let (id, _) = s.client(&["--redirect-uri", "https://app.example/cb"]);
    let page = s.get(&format!(
        "/authorize?response_type=code&client_id={id}&redirect_uri=https%3A%2F%2Fapp.example%2Fcb\
         &scope=openid&state=s&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSW4VdIM\
         &code_challenge_method=S256"
    ));
    assert_eq!(page.status, 200, "{}", page.body);
    for r in [&page, &s.get("/jwks")] {
        assert_eq!(
            r.header("strict-transport-security"),
            Some("max-age=31536000")
        );
    }
    assert!(page
        .header("set-cookie")
        .is_some_and(|c| c.starts_with("__Host-") && c.contains("Secure")));
    let plain = Server::start(Backend::Sqlite);
    assert_eq!(plain.get("/jwks").header("strict-transport-security"), None);
}

#[test]
fn defaults_without_any_file() {
    // No file, no environment: the documented defaults, with the database and keys created in
    // the working directory.
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &["client", "create", "--name", "d", "--json"],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("portcullis.db").exists());
    let out = run(dir.path(), &["migrate"], &[]);
    assert!(out.status.success());
}
