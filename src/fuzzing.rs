//! Entry points for the coverage-guided fuzz targets in `tests/fuzz` (`cargo fuzz`), and for
//! the unit test that replays their seeds and every input a fuzzer ever crashed on
//! (`tests/fuzz/regressions/<target>/`) under plain `cargo test`. Each feeds untrusted bytes to
//! one parser the way the HTTP layer does and checks what must hold besides "no panic".

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::sync::OnceLock;

use serde_json::Value;

use crate::clock::UnixTime;
use crate::crypto::jwt::{self, ACCESS_TOKEN_TYP};
use crate::crypto::keys::{KeySet, SigningAlg};
use crate::oauth::authorize::{AuthorizationRequest, AuthorizeError};
use crate::oauth::client::{valid_client_id, AuthMethod, Client, GrantType};
use crate::oauth::client_auth::Credentials;
use crate::oauth::issue::{AccessTokenClaims, IdTokenClaims};
use crate::oauth::request::{Params, TokenRequest};

/// The names of the targets, as in `tests/fuzz/fuzz_targets/<name>.rs`.
pub const TARGETS: &[&str] = &[
    "token_request",
    "authorization_request",
    "client_auth",
    "jwt_verification",
];

/// Run `target` on one input.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "token_request" => token_request(data),
        "authorization_request" => authorization_request(data),
        "client_auth" => client_auth(data),
        "jwt_verification" => jwt_verification(data),
        other => panic!("no fuzz target {other}"),
    }
}

/// A token request body (`POST /token`): form parsing, client credentials from the body, and
/// the grant's parameters.
pub fn token_request(data: &[u8]) {
    let Ok(params) = Params::parse(data) else {
        return;
    };
    if let Ok(c) = Credentials::extract(None, &params) {
        assert!(valid_client_id(c.client_id()), "{:?}", c.client_id());
    }
    if let Ok(request) = TokenRequest::from_params(&params) {
        assert_eq!(params.get("grant_type"), Some(request.grant_type()));
    }
}

const REDIRECT: &str = "https://app.example.com/cb";
const SECRET: &str = "the-real-secret";

/// An authorization request query (`GET /authorize`), for a registered client and for none.
/// A request may only ever send the browser to the registered redirect URI.
pub fn authorization_request(data: &[u8]) {
    let Ok(params) = Params::parse(data) else {
        return;
    };
    let mut client = sample_client(AuthMethod::None);
    client.grant_types = vec![GrantType::AuthorizationCode];
    client.redirect_uris = vec![REDIRECT.into()];
    client.scopes = vec!["api:read".into()];
    let named = params.get("client_id") == Some(client.client_id.as_str());
    match AuthorizationRequest::validate(&params, named.then_some(&client)) {
        Ok(request) => {
            assert_eq!(request.redirect_uri, REDIRECT);
            assert!(
                request.code_challenge.is_some(),
                "a public client needs PKCE"
            );
        }
        Err(AuthorizeError::Redirect { redirect_uri, .. }) => assert_eq!(redirect_uri, REDIRECT),
        Err(AuthorizeError::Page(_)) => {}
    }
    if !named {
        assert!(matches!(
            AuthorizationRequest::validate(&params, None),
            Err(AuthorizeError::Page(_))
        ));
    }
}

/// Client authentication at the token endpoint: the `Authorization` header (the first line of
/// the input) and the form body (the rest).
pub fn client_auth(data: &[u8]) {
    let (header, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    let params = Params::parse(body).unwrap_or_default();
    if let Ok(credentials) = Credentials::extract(Some(header), &params) {
        assert!(credentials.used_basic());
        assert!(valid_client_id(credentials.client_id()));
        // Only the registered secret authenticates, and nothing authenticates an unknown id.
        let client = sample_client(AuthMethod::ClientSecretBasic);
        if let Credentials::Basic { client_id, secret } = &credentials {
            if *client_id == client.client_id {
                let accepted = credentials.authenticate(Some(&client)).is_ok();
                assert_eq!(accepted, secret == SECRET);
            }
        }
        assert!(credentials.authenticate(None).is_err());
    }
}

const ISSUER: &str = "https://id.example.com";
const NOW: UnixTime = 1_800_000_000;

fn keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        // Generated into a folder of their own, kept in memory, the folder removed.
        let dir = std::env::temp_dir().join(format!("portcullis-fuzz-{}", std::process::id()));
        let set = KeySet::load_or_init(&dir, 600, NOW - 60).expect("fuzz keys");
        let _ = std::fs::remove_dir_all(&dir);
        set
    })
}

/// JWT verification as for access tokens (introspection, userinfo) and `id_token_hint`: no
/// input is accepted unless we signed it; claims we did sign verify exactly when `iss` is ours
/// and (for access tokens) `exp` is in the future.
pub fn jwt_verification(data: &[u8]) {
    let keys = keys();
    if let Ok(text) = std::str::from_utf8(data) {
        assert!(jwt::verify::<Value>(keys, text, ACCESS_TOKEN_TYP, ISSUER, NOW).is_err());
        assert!(
            jwt::verify::<AccessTokenClaims>(keys, text, ACCESS_TOKEN_TYP, ISSUER, NOW).is_err()
        );
        assert!(
            jwt::verify_ignoring_expiry::<IdTokenClaims>(keys, text, "JWT", ISSUER, NOW).is_err()
        );
    }
    let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let ours = claims.get("iss").and_then(Value::as_str) == Some(ISSUER);
    let exp = claims.get("exp").and_then(Value::as_i64);
    // jsonwebtoken reads the registered claims with their types before we see anything, so a
    // token whose `sub` is an array (say) is refused even if iss and exp are right: expect
    // acceptance only of well-typed registered claims. Refusal of a wrong iss or exp always.
    let typed = |k: &str, ok: fn(&Value) -> bool| claims.get(k).is_none_or(ok);
    let strings = |a: &Value| a.as_array().is_some_and(|v| v.iter().all(Value::is_string));
    let well_typed = typed("sub", Value::is_string)
        && typed("nbf", Value::is_u64)
        && typed("iat", Value::is_u64)
        && (typed("aud", Value::is_string) || claims.get("aud").is_some_and(strings))
        && exp.is_some_and(|e| e >= 0);
    for alg in SigningAlg::ALL {
        let token = jwt::sign(keys, alg, ACCESS_TOKEN_TYP, &claims).expect("signing");
        let verified = jwt::verify::<Value>(keys, &token, ACCESS_TOKEN_TYP, ISSUER, NOW);
        let expected = ours && exp.is_some_and(|e| e > NOW);
        assert!(verified.is_err() || expected, "accepted: {token}");
        assert!(
            verified.is_ok() || !(expected && well_typed),
            "refused: {token}"
        );
        if let Ok(v) = verified {
            assert_eq!(v["iss"], ISSUER);
            assert_eq!(v["exp"].as_i64(), exp);
        }
        let hint =
            jwt::verify_ignoring_expiry::<Value>(keys, &token, ACCESS_TOKEN_TYP, ISSUER, NOW);
        assert!(
            hint.is_err() || (ours && exp.is_some()),
            "hint accepted: {token}"
        );
        assert!(
            hint.is_ok() || !(ours && well_typed),
            "hint refused: {token}"
        );
        // The wrong `typ` is never accepted.
        assert!(jwt::verify::<Value>(keys, &token, "JWT", ISSUER, NOW).is_err());
    }
}

fn sample_client(auth_method: AuthMethod) -> Client {
    Client::sample("app", auth_method, Some(SECRET))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every seed and every input that once crashed a target still passes it.
    #[test]
    fn seeds_and_regressions_pass() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
        let mut ran = 0;
        for target in TARGETS {
            for kind in ["seeds", "regressions"] {
                let Ok(dir) = std::fs::read_dir(root.join(kind).join(target)) else {
                    continue;
                };
                for entry in dir {
                    let path = entry.unwrap().path();
                    let data = std::fs::read(&path).unwrap();
                    let outcome = std::panic::catch_unwind(|| run(target, &data));
                    assert!(outcome.is_ok(), "{target} fails on {}", path.display());
                    ran += 1;
                }
            }
        }
        assert!(ran >= TARGETS.len() * 3, "seeds found: {ran}");
    }
}
