//! Secrets, tokens and Authorization headers never reach the logs, even at debug level.

use crate::common::{Backend, Server};

#[test]
fn no_secrets_or_tokens_in_logs() {
    let s = Server::start(Backend::Sqlite);
    let (id, secret) = s.client(&["--scope", "api:read"]);
    let token = s.cc_token(&id, &secret, Some("api:read"));
    let basic = crate::common::basic_header(&id, &secret);
    // Failures too: a wrong secret, a secret in the body, a token to introspect and revoke.
    s.post_form(
        "/token",
        &[("grant_type", "client_credentials")],
        Some((&id, "wrong-secret-value")),
    );
    s.post_form(
        "/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
        None,
    );
    s.post_form("/introspect", &[("token", &token)], Some((&id, &secret)));
    s.post_form("/revoke", &[("token", &token)], Some((&id, &secret)));
    s.get(&format!(
        "/token?client_secret={secret}&access_token={token}"
    ));
    let logs = s.logs();
    assert!(
        logs.contains("request"),
        "the server does log requests: {logs}"
    );
    let signature = token.rsplit('.').next().unwrap();
    let b64_credentials = basic.trim_start_matches("Basic ");
    for (what, needle) in [
        ("client secret", secret.as_str()),
        ("wrong secret", "wrong-secret-value"),
        ("access token", token.as_str()),
        ("token signature", signature),
        ("Basic credentials", b64_credentials),
    ] {
        assert!(!logs.contains(needle), "{what} found in the log");
    }
    assert!(
        !logs.to_ascii_lowercase().contains("authorization:"),
        "an Authorization header was logged"
    );
}
