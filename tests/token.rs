//! The token endpoint: client_credentials, client authentication, RFC 6749 5.2 errors.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::both_backends;
use crate::common::{Backend, Server, ServerBuilder};

/// Verify `token` the way a resource server would: discovery, then jwks_uri, then the key named
/// by `kid`, with the algorithm pinned to `alg` (jsonwebtoken, not our code).
pub fn verify_independently(server: &Server, token: &str, alg: Algorithm) -> Value {
    let disco = server.get("/.well-known/openid-configuration").json();
    let jwks_uri = disco["jwks_uri"].as_str().expect("jwks_uri");
    let jwks: JwkSet = crate::common::agent()
        .get(jwks_uri)
        .call()
        .expect("jwks")
        .into_json()
        .expect("jwks json");
    let header = jsonwebtoken::decode_header(token).expect("header");
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.alg, alg);
    let jwk = jwks
        .find(header.kid.as_deref().expect("kid"))
        .expect("kid in JWKS");
    let key = DecodingKey::from_jwk(jwk).expect("decoding key");
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[disco["issuer"].as_str().expect("issuer")]);
    validation.set_audience(&[server.base.as_str()]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "sub", "aud"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .expect("token verifies")
        .claims
}

fn client_credentials_es256(b: Backend) {
    let s = Server::start(b);
    let (id, secret) = s.client(&["--scope", "api:read", "--scope", "api:write"]);
    let r = s.post_form(
        "/token",
        &[("grant_type", "client_credentials"), ("scope", "api:read")],
        Some((&id, &secret)),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let body = r.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 600);
    assert_eq!(body["scope"], "api:read");
    let claims = verify_independently(&s, body["access_token"].as_str().unwrap(), Algorithm::ES256);
    assert_eq!(claims["sub"], id.as_str());
    assert_eq!(claims["client_id"], id.as_str());
    assert_eq!(claims["scope"], "api:read");
    assert_eq!(claims["iss"], s.base.as_str());
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 600);
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 22));

    // Two tokens never share a jti.
    let again = s.cc_token(&id, &secret, None);
    let claims2 = verify_independently(&s, &again, Algorithm::ES256);
    assert_ne!(claims["jti"], claims2["jti"]);
    assert_eq!(
        claims2["scope"], "api:read api:write",
        "default: every registered scope"
    );
}

fn client_credentials_rs256_and_ttl_from_env(b: Backend) {
    let s = ServerBuilder::new(b)
        .env("PORTCULLIS_TOKENS__ACCESS_TOKEN_ALG", "RS256")
        .env("PORTCULLIS_TOKENS__ACCESS_TOKEN_TTL_SECS", "77")
        .start();
    let (id, secret) = s.client(&[]);
    let r = s.post_form(
        "/token",
        &[("grant_type", "client_credentials")],
        Some((&id, &secret)),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["expires_in"], 77);
    assert!(
        r.json().get("scope").is_none(),
        "no scope registered, none granted"
    );
    let claims = verify_independently(
        &s,
        r.json()["access_token"].as_str().unwrap(),
        Algorithm::RS256,
    );
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        77
    );
    let metrics = s.get("/metrics").body;
    assert!(
        metrics.contains(
            r#"portcullis_tokens_issued_total{alg="RS256",grant_type="client_credentials"} 1"#
        ),
        "{metrics}"
    );
}

fn client_secret_post_and_method_pinning(b: Backend) {
    let s = Server::start(b);
    let (id, secret) = s.client(&["--auth-method", "client_secret_post"]);
    let ok = s.post_form(
        "/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
        None,
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    // The right secret by the wrong method is refused: the registered method is binding.
    let basic = s.post_form(
        "/token",
        &[("grant_type", "client_credentials")],
        Some((&id, &secret)),
    );
    basic.assert_error(401, "invalid_client");
    assert!(basic
        .header("www-authenticate")
        .is_some_and(|h| h.starts_with("Basic")));
    // Without Basic too, a 401 carries a challenge (RFC 9110 15.5.2).
    let wrong = s.post_form(
        "/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", "nope"),
        ],
        None,
    );
    wrong.assert_error(401, "invalid_client");
    assert!(wrong
        .header("www-authenticate")
        .is_some_and(|h| h.starts_with("Basic")));
}

fn client_authentication_failures(b: Backend) {
    let s = Server::start(b);
    let (id, secret) = s.client(&[]);
    let cc = [("grant_type", "client_credentials")];
    s.post_form("/token", &cc, Some((&id, "wrong")))
        .assert_error(401, "invalid_client");
    let unknown = s.post_form("/token", &cc, Some(("nobody", &secret)));
    unknown.assert_error(401, "invalid_client");
    assert!(unknown.header("www-authenticate").is_some());
    s.post_form("/token", &cc, None)
        .assert_error(401, "invalid_client");
    // Basic and client_secret together: two methods at once (RFC 6749 2.3).
    s.post_form(
        "/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_secret", &secret),
        ],
        Some((&id, &secret)),
    )
    .assert_error(400, "invalid_request");
    // Secrets with characters that need form-encoding inside Basic (RFC 6749 2.3.1) work:
    // generated secrets are base64url, so check the id side with a chosen id.
    let (odd, odd_secret) = s.client(&["--client-id", "svc.name~1"]);
    assert_eq!(odd, "svc.name~1");
    s.cc_token(&odd, &odd_secret, None);
}

fn grant_and_scope_errors(b: Backend) {
    let s = Server::start(b);
    let (id, secret) = s.client(&["--scope", "api:read"]);
    let auth = Some((id.as_str(), secret.as_str()));
    s.post_form(
        "/token",
        &[
            ("grant_type", "client_credentials"),
            ("scope", "api:read admin"),
        ],
        auth,
    )
    .assert_error(400, "invalid_scope");
    s.post_form(
        "/token",
        &[("grant_type", "password"), ("username", "u")],
        auth,
    )
    .assert_error(400, "unsupported_grant_type");
    s.post_form("/token", &[("scope", "api:read")], auth)
        .assert_error(400, "invalid_request");
    s.post_form(
        "/token",
        &[
            ("grant_type", "client_credentials"),
            ("resource", "https://api.example.com"),
        ],
        auth,
    )
    .assert_error(400, "invalid_target");

    // A client registered for authorization_code only may not use client_credentials.
    let (web, web_secret) = s.client(&["--redirect-uri", "https://app.example.com/cb"]);
    s.post_form(
        "/token",
        &[("grant_type", "client_credentials")],
        Some((&web, &web_secret)),
    )
    .assert_error(400, "unauthorized_client");

    // Resource indicators registered for the client become the audience.
    let (rs, rs_secret) = s.client(&["--resource", "https://api.example.com"]);
    let r = s.post_form(
        "/token",
        &[
            ("grant_type", "client_credentials"),
            ("resource", "https://api.example.com"),
        ],
        Some((&rs, &rs_secret)),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.json()["access_token"].as_str().unwrap().to_owned();
    let payload = token.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], "https://api.example.com");
}

fn malformed_requests(b: Backend) {
    let s = Server::start(b);
    let (id, secret) = s.client(&[]);
    let auth = Some((id.as_str(), secret.as_str()));
    // A NUL byte in any parameter is invalid_request, never a database error (PostgreSQL
    // refuses it in text); in the Basic credentials it names no client: invalid_client.
    for body in [
        &b"grant_type=client_credentials&client_id=a%00b&client_secret=x"[..],
        b"grant_type=client_credentials&scope=a%00b",
        b"grant_type=authorization_code&code=a%00&redirect_uri=http://x/",
        b"grant_type=refresh_token&refresh_token=%00",
        b"grant_type=client_credentials&a%00=b",
    ] {
        let r = s.post_raw("/token", "application/x-www-form-urlencoded", body, auth);
        r.assert_error(400, "invalid_request");
        assert!(r.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("NUL"));
    }
    s.post_form(
        "/token",
        &[("grant_type", "client_credentials")],
        Some(("a\u{0}b", "x")),
    )
    .assert_error(401, "invalid_client");
    // Repeated parameter.
    s.post_raw(
        "/token",
        "application/x-www-form-urlencoded",
        b"grant_type=client_credentials&grant_type=client_credentials",
        auth,
    )
    .assert_error(400, "invalid_request");
    // Wrong or missing content type.
    s.post_raw(
        "/token",
        "application/json",
        br#"{"grant_type":"client_credentials"}"#,
        auth,
    )
    .assert_error(400, "invalid_request");
    s.post_raw("/token", "", b"grant_type=client_credentials", auth)
        .assert_error(400, "invalid_request");
    // Body over 64 KiB.
    let mut big = b"grant_type=client_credentials&scope=".to_vec();
    big.extend(std::iter::repeat_n(b'a', 70 * 1024));
    s.post_raw("/token", "application/x-www-form-urlencoded", &big, auth)
        .assert_error(413, "invalid_request");
    // Content type with a charset parameter is fine.
    let ok = s.post_raw(
        "/token",
        "application/x-www-form-urlencoded; charset=UTF-8",
        b"grant_type=client_credentials",
        auth,
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    // GET is not how tokens are fetched.
    let get = s.get("/token?grant_type=client_credentials");
    assert_eq!(get.status, 405);
    assert_eq!(get.header("allow"), Some("POST"));
}

both_backends!(
    client_credentials_es256,
    client_credentials_rs256_and_ttl_from_env,
    client_secret_post_and_method_pinning,
    client_authentication_failures,
    grant_and_scope_errors,
    malformed_requests,
);
