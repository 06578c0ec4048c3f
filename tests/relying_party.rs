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
    let (id, secret) = s.client(&[
        "--name",
        "Authlib RP",
        "--redirect-uri",
        REDIRECT,
        "--grant-type",
        "authorization_code",
        "--grant-type",
        "refresh_token",
    ]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/rp/authlib_flow.py");
    // -E: no PYTHONOPTIMIZE from the environment may strip the script's asserts.
    let out = Command::new("python3")
        .args([
            "-E", script, &s.base, &id, &secret, REDIRECT, "frank", PASSWORD,
        ])
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
    assert_eq!(seen["iss_in_callback"], s.base.as_str());
    assert_eq!(seen["refreshed_iss"], s.base.as_str());
    assert_eq!(seen["rotated"], true);
    assert_eq!(seen["refresh_after_revoke"], "invalid_grant");
}

/// openidconnect's HTTP client, over ureq (the library takes any `Fn(HttpRequest)`).
fn oidc_http(
    req: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, std::io::Error> {
    use std::io::Read;
    let mut r = crate::common::agent().request(req.method().as_str(), &req.uri().to_string());
    for (k, v) in req.headers() {
        r = r.set(k.as_str(), v.to_str().unwrap_or_default());
    }
    let sent = if req.body().is_empty() && req.method() == openidconnect::http::Method::GET {
        r.call()
    } else {
        r.send_bytes(req.body())
    };
    let resp = match sent {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(std::io::Error::other(e.to_string())),
    };
    let mut builder = openidconnect::http::Response::builder().status(resp.status());
    for name in resp.headers_names() {
        if let Some(v) = resp.header(&name) {
            builder = builder.header(name.as_str(), v);
        }
    }
    let mut body = Vec::new();
    resp.into_reader().read_to_end(&mut body)?;
    builder.body(body).map_err(std::io::Error::other)
}

/// The `openidconnect` crate as the relying party: discovery, PKCE, code exchange, ID token
/// verification (signature, iss, aud, azp, exp, nonce, at_hash), userinfo, refresh with
/// rotation.
#[test]
fn openidconnect_crate_relying_party() {
    use openidconnect::core::{
        CoreAuthenticationFlow, CoreClient, CoreProviderMetadata, CoreUserInfoClaims,
    };
    use openidconnect::{
        AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
        OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
    };

    let s = Server::start(Backend::Sqlite);
    let created = user(
        &s,
        "heidi",
        &["--name", "Heidi Example", "--email", "heidi@example.com"],
    );
    let (id, secret) = s.client(&[
        "--name",
        "OIDC RP",
        "--redirect-uri",
        REDIRECT,
        "--grant-type",
        "authorization_code",
        "--grant-type",
        "refresh_token",
    ]);

    let issuer = IssuerUrl::new(s.base.clone()).unwrap();
    let provider = CoreProviderMetadata::discover(&issuer, &oidc_http).expect("discovery");
    let client = CoreClient::from_provider_metadata(
        provider,
        ClientId::new(id.clone()),
        Some(ClientSecret::new(secret.clone())),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT.to_owned()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, csrf, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge)
        .url();

    // The browser's part: the pages, with the parameters the library put in the URL.
    let params: Vec<(String, String)> = auth_url.query_pairs().into_owned().collect();
    let mut browser = crate::signin::Browser::new(&s);
    let back = crate::signin::sign_in(&mut browser, &params, "heidi", true);
    assert_eq!(&back["state"], csrf.secret());

    let token = client
        .exchange_code(AuthorizationCode::new(back["code"].clone()))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request(&oidc_http)
        .expect("code exchange");
    let id_token = token.id_token().expect("id_token");
    let id_verifier = client.id_token_verifier();
    let claims = id_token
        .claims(&id_verifier, &nonce)
        .expect("ID token verifies");
    assert_eq!(claims.subject().as_str(), created["id"].as_str().unwrap());
    let expected = claims.access_token_hash().expect("at_hash");
    let actual = AccessTokenHash::from_token(
        token.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(&id_verifier).unwrap(),
    )
    .unwrap();
    assert_eq!(&actual, expected);
    // The wrong nonce is caught by the library.
    assert!(id_token
        .claims(&id_verifier, &Nonce::new("other".into()))
        .is_err());

    let info: CoreUserInfoClaims = client
        .user_info(token.access_token().to_owned(), None)
        .unwrap()
        .request(&oidc_http)
        .expect("userinfo");
    assert_eq!(info.subject().as_str(), created["id"].as_str().unwrap());
    assert_eq!(info.email().map(|e| e.as_str()), Some("heidi@example.com"));

    // Refresh: a rotated refresh token and a new ID token for the same person.
    let first_refresh = token.refresh_token().expect("refresh_token").clone();
    let refreshed = client
        .exchange_refresh_token(&first_refresh)
        .unwrap()
        .request(&oidc_http)
        .expect("refresh");
    let second_refresh = refreshed.refresh_token().expect("rotated").clone();
    assert_ne!(second_refresh.secret(), first_refresh.secret());
    let refreshed_claims = refreshed
        .id_token()
        .expect("id_token on refresh")
        .claims(&id_verifier, |n: Option<&Nonce>| {
            n.is_none()
                .then_some(())
                .ok_or("no nonce on refresh".to_owned())
        })
        .expect("refreshed ID token verifies");
    assert_eq!(refreshed_claims.subject(), claims.subject());
    assert_eq!(refreshed_claims.auth_time(), claims.auth_time());
    // The client moves on; the first one is spent: using it again fails (and revokes the family).
    client
        .exchange_refresh_token(&second_refresh)
        .unwrap()
        .request(&oidc_http)
        .expect("second refresh");
    assert!(client
        .exchange_refresh_token(&first_refresh)
        .unwrap()
        .request(&oidc_http)
        .is_err());
    // Revocation is shown with authlib: this library refuses a revocation endpoint that is not
    // https (RFC 7009 2), and the tests run on plain http over loopback.
}
