//! Local stand-ins for Google and GitHub on 127.0.0.1 that speak the real protocols: a minimal
//! OpenID provider (discovery, JWKS, authorize, token issuing RS256 ID tokens) and a
//! GitHub-shaped OAuth server (`/login/oauth/authorize`, `/login/oauth/access_token`, `/user`,
//! `/user/emails`). Each checks what a real provider checks (client credentials, redirect URI,
//! single-use codes, PKCE S256) and can be told to misbehave.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use base64::Engine;
use rsa::pkcs8::EncodePrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const CLIENT_ID: &str = "portcullis-test-client";
pub const CLIENT_SECRET: &str = "upstream-secret-3f9a1c";

/// Who signs in upstream next.
#[derive(Clone, Debug)]
pub struct Person {
    pub subject: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub email_verified: bool,
}

impl Person {
    pub fn new(subject: &str, email: Option<&str>, verified: bool) -> Self {
        Self {
            subject: subject.into(),
            name: Some(format!("Person {subject}")),
            email: email.map(str::to_owned),
            email_verified: verified,
        }
    }
}

/// How the stand-in misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// The person clicks "Cancel": `error=access_denied`.
    Deny,
    /// The token endpoint answers 500.
    Token500,
    /// The token endpoint answers after 12 s.
    TokenSlow,
    /// The ID token is signed with a key not in the JWKS.
    WrongSignature,
    /// The ID token's `aud` is another client.
    WrongAudience,
    /// The ID token's `azp` is another client (its `aud` is ours).
    OtherAuthorizedParty,
    /// The ID token carries another nonce.
    WrongNonce,
    /// The ID token expired this many seconds ago.
    ExpiredBy(i64),
    /// GitHub's API answers 500.
    Api500,
    /// GitHub's API answers each call after 8 s.
    ApiSlow,
    /// The ID token names another issuer.
    WrongIssuer,
    /// The ID token was issued five minutes in the future.
    IssuedInFuture,
    /// The ID token is unsigned (`alg: none`).
    Unsigned,
    /// The ID token has no `email_verified` claim.
    NoEmailVerified,
    /// The token endpoint answers 200 with an error body, as GitHub does.
    ErrorWith200,
}

struct Grant {
    person: Person,
    nonce: Option<String>,
    challenge: Option<String>,
    redirect_uri: String,
}

struct Shared {
    base: String,
    person: Mutex<Person>,
    fault: Mutex<Fault>,
    codes: Mutex<HashMap<String, Grant>>,
    tokens: Mutex<HashMap<String, Person>>,
    /// Every authorization request's query, as seen.
    pub authorize_requests: Mutex<Vec<HashMap<String, String>>>,
    /// Token requests answered 200.
    token_requests: Mutex<usize>,
    /// Token requests received, counted on arrival (before any fault's delay).
    token_arrivals: Mutex<usize>,
    /// Discovery documents served.
    discovery_hits: Mutex<usize>,
    /// Keys rotated: key 2 (kid k2) is published and signs.
    rotated: Mutex<bool>,
    /// Access tokens issued and PKCE verifiers received: none may reach a log.
    secrets: Mutex<Vec<String>>,
}

/// A running stand-in.
pub struct Upstream {
    pub base: String,
    shared: Arc<Shared>,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

impl Upstream {
    /// Google stand-in (OpenID provider).
    pub fn google() -> Self {
        Self::start(true)
    }

    /// GitHub stand-in.
    pub fn github() -> Self {
        Self::start(false)
    }

    fn start(oidc: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let shared = Arc::new(Shared {
            base: base.clone(),
            person: Mutex::new(Person::new("1001", None, false)),
            fault: Mutex::new(Fault::None),
            codes: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            authorize_requests: Mutex::new(Vec::new()),
            token_requests: Mutex::new(0),
            token_arrivals: Mutex::new(0),
            discovery_hits: Mutex::new(0),
            rotated: Mutex::new(false),
            secrets: Mutex::new(Vec::new()),
        });
        let data = web::Data::from(shared.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    let app = App::new().app_data(data.clone());
                    if oidc {
                        app.route(
                            "/.well-known/openid-configuration",
                            web::get().to(discovery),
                        )
                        .route("/jwks", web::get().to(jwks))
                        .route("/authorize", web::get().to(authorize))
                        .route("/token", web::post().to(token))
                    } else {
                        app.route("/login/oauth/authorize", web::get().to(authorize))
                            .route("/login/oauth/access_token", web::post().to(token))
                            .route("/user", web::get().to(github_user))
                            .route("/user/emails", web::get().to(github_emails))
                    }
                })
                .workers(2)
                .listen(listener)
                .expect("listen")
                .run();
                tx.send(server.handle()).expect("handle");
                server.await
            })
        });
        let handle = rx.recv().expect("stand-in started");
        Self {
            base,
            shared,
            handle,
        }
    }

    /// The person who signs in next.
    pub fn set_person(&self, p: Person) {
        *self.shared.person.lock().unwrap() = p;
    }

    pub fn set_fault(&self, f: Fault) {
        *self.shared.fault.lock().unwrap() = f;
    }

    /// The last authorization request's parameters.
    pub fn last_authorize(&self) -> HashMap<String, String> {
        self.shared
            .authorize_requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("an authorization request")
    }

    pub fn token_requests(&self) -> usize {
        *self.shared.token_requests.lock().unwrap()
    }

    /// Token requests that have arrived, answered or not.
    pub fn token_arrivals(&self) -> usize {
        *self.shared.token_arrivals.lock().unwrap()
    }

    pub fn discovery_hits(&self) -> usize {
        *self.shared.discovery_hits.lock().unwrap()
    }

    /// Publish a new signing key (kid k2) in place of the old one, and sign with it.
    pub fn rotate_keys(&self) {
        *self.shared.rotated.lock().unwrap() = true;
    }

    /// Access tokens issued and PKCE verifiers received so far.
    pub fn secrets(&self) -> Vec<String> {
        self.shared.secrets.lock().unwrap().clone()
    }

    /// The environment that points Portcullis at this stand-in as Google.
    pub fn google_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "PORTCULLIS_UPSTREAM__GOOGLE__CLIENT_ID".into(),
                CLIENT_ID.into(),
            ),
            (
                "PORTCULLIS_UPSTREAM__GOOGLE__CLIENT_SECRET".into(),
                CLIENT_SECRET.into(),
            ),
            (
                "PORTCULLIS_UPSTREAM__GOOGLE__ISSUER".into(),
                self.base.clone(),
            ),
        ]
    }

    /// The environment that points Portcullis at this stand-in as GitHub.
    pub fn github_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "PORTCULLIS_UPSTREAM__GITHUB__CLIENT_ID".into(),
                CLIENT_ID.into(),
            ),
            (
                "PORTCULLIS_UPSTREAM__GITHUB__CLIENT_SECRET".into(),
                CLIENT_SECRET.into(),
            ),
            (
                "PORTCULLIS_UPSTREAM__GITHUB__AUTHORIZE_URL".into(),
                format!("{}/login/oauth/authorize", self.base),
            ),
            (
                "PORTCULLIS_UPSTREAM__GITHUB__TOKEN_URL".into(),
                format!("{}/login/oauth/access_token", self.base),
            ),
            (
                "PORTCULLIS_UPSTREAM__GITHUB__API_URL".into(),
                self.base.clone(),
            ),
        ]
    }
}

/// The provider's signing key, and another one that is not published.
fn keys() -> &'static (rsa::RsaPrivateKey, rsa::RsaPrivateKey) {
    static KEYS: OnceLock<(rsa::RsaPrivateKey, rsa::RsaPrivateKey)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = rand::thread_rng();
        (
            rsa::RsaPrivateKey::new(&mut rng, 2048).expect("rsa"),
            rsa::RsaPrivateKey::new(&mut rng, 2048).expect("rsa"),
        )
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn random() -> String {
    use rand::RngCore;
    let mut b = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut b);
    B64.encode(b)
}

fn query(req: &HttpRequest) -> HashMap<String, String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect()
}

async fn discovery(s: web::Data<Shared>) -> HttpResponse {
    *s.discovery_hits.lock().unwrap() += 1;
    let b = &s.base;
    HttpResponse::Ok().json(json!({
        "issuer": b,
        "authorization_endpoint": format!("{b}/authorize"),
        "token_endpoint": format!("{b}/token"),
        "jwks_uri": format!("{b}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
    }))
}

/// The published key and its kid, and the unpublished one.
fn signing(
    s: &Shared,
) -> (
    &'static rsa::RsaPrivateKey,
    &'static str,
    &'static rsa::RsaPrivateKey,
) {
    let (k1, k2) = keys();
    if *s.rotated.lock().unwrap() {
        (k2, "k2", k1)
    } else {
        (k1, "k1", k2)
    }
}

async fn jwks(s: web::Data<Shared>) -> HttpResponse {
    let (key, kid, _) = signing(&s);
    let public = key.to_public_key();
    HttpResponse::Ok().json(json!({"keys": [{
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
        "n": B64.encode(public.n().to_bytes_be()),
        "e": B64.encode(public.e().to_bytes_be()),
    }]}))
}

/// The person approves at once (or declines), and is sent back with a code.
async fn authorize(s: web::Data<Shared>, req: HttpRequest) -> HttpResponse {
    let q = query(&req);
    s.authorize_requests.lock().unwrap().push(q.clone());
    let redirect_uri = q.get("redirect_uri").cloned().unwrap_or_default();
    let state = q.get("state").cloned().unwrap_or_default();
    if q.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return HttpResponse::BadRequest().body("unknown client");
    }
    let mut target = url::Url::parse(&redirect_uri).expect("redirect_uri");
    if *s.fault.lock().unwrap() == Fault::Deny {
        target
            .query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair("state", &state);
    } else {
        let code = random();
        s.codes.lock().unwrap().insert(
            code.clone(),
            Grant {
                person: s.person.lock().unwrap().clone(),
                nonce: q.get("nonce").cloned(),
                challenge: q.get("code_challenge").cloned(),
                redirect_uri: redirect_uri.clone(),
            },
        );
        target
            .query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", &state);
    }
    HttpResponse::Found()
        .insert_header(("location", target.to_string()))
        .finish()
}

fn token_error(code: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({"error": code}))
}

/// The token endpoint: client authentication (Basic or form), the code once, its redirect URI,
/// PKCE S256.
async fn token(s: web::Data<Shared>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    *s.token_arrivals.lock().unwrap() += 1;
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let fault = *s.fault.lock().unwrap();
    if fault == Fault::Token500 {
        return HttpResponse::InternalServerError().body("upstream is down");
    }
    if fault == Fault::TokenSlow {
        // Well past the server's 10 s timeout, so a wait for the answer shows.
        actix_web::rt::time::sleep(Duration::from_secs(20)).await;
    }
    if fault == Fault::ErrorWith200 {
        return HttpResponse::Ok().json(json!({
            "error": "bad_verification_code",
            "error_description": "The code passed is incorrect or expired."
        }));
    }
    let basic = req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let (id, secret) = match basic {
        Some(pair) => {
            let (i, s) = pair.split_once(':').unwrap_or_default();
            let dec = |v: &str| {
                url::form_urlencoded::parse(format!("x={v}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            (dec(i), dec(s))
        }
        None => (
            form.get("client_id").cloned().unwrap_or_default(),
            form.get("client_secret").cloned().unwrap_or_default(),
        ),
    };
    if id != CLIENT_ID || secret != CLIENT_SECRET {
        return HttpResponse::Unauthorized().json(json!({"error": "invalid_client"}));
    }
    let Some(grant) = form
        .get("code")
        .and_then(|c| s.codes.lock().unwrap().remove(c))
    else {
        return token_error("invalid_grant");
    };
    if form.get("redirect_uri") != Some(&grant.redirect_uri) {
        return token_error("invalid_grant");
    }
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    s.secrets.lock().unwrap().push(verifier.clone());
    let expected = B64.encode(Sha256::digest(verifier.as_bytes()));
    if grant.challenge.as_deref() != Some(expected.as_str()) {
        return token_error("invalid_grant");
    }
    *s.token_requests.lock().unwrap() += 1;
    let access_token = random();
    s.secrets.lock().unwrap().push(access_token.clone());
    s.tokens
        .lock()
        .unwrap()
        .insert(access_token.clone(), grant.person.clone());
    let Some(nonce) = grant.nonce else {
        // GitHub: no ID token.
        return HttpResponse::Ok().json(json!({
            "access_token": access_token, "token_type": "bearer", "scope": "read:user,user:email"
        }));
    };
    let t = now();
    let p = &grant.person;
    let mut claims = json!({
        "iss": s.base, "sub": p.subject, "aud": CLIENT_ID, "azp": CLIENT_ID,
        "iat": t, "exp": t + 3600, "nonce": nonce,
    });
    if fault != Fault::NoEmailVerified {
        claims["email_verified"] = json!(p.email_verified);
    }
    if let Some(e) = &p.email {
        claims["email"] = json!(e);
    }
    if let Some(n) = &p.name {
        claims["name"] = json!(n);
    }
    let (published, kid, unpublished) = signing(&s);
    let mut key = published;
    match fault {
        Fault::WrongSignature => key = unpublished,
        Fault::WrongIssuer => claims["iss"] = json!("https://issuer.invalid"),
        Fault::IssuedInFuture => claims["iat"] = json!(t + 300),
        Fault::WrongAudience => claims["aud"] = json!("someone-else"),
        Fault::OtherAuthorizedParty => claims["azp"] = json!("someone-else"),
        Fault::WrongNonce => claims["nonce"] = json!("not-the-nonce"),
        Fault::ExpiredBy(secs) => {
            claims["exp"] = json!(t - secs);
            claims["iat"] = json!(t - secs - 600);
        }
        _ => {}
    }
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.into());
    let pem = key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
    let id_token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let id_token = if fault == Fault::Unsigned {
        let body = id_token.split('.').nth(1).unwrap();
        format!("{}.{body}.", B64.encode(br#"{"alg":"none","typ":"JWT"}"#))
    } else {
        id_token
    };
    HttpResponse::Ok().json(json!({
        "access_token": access_token, "token_type": "Bearer", "expires_in": 3600,
        "id_token": id_token, "scope": "openid email profile",
    }))
}

fn bearer(s: &Shared, req: &HttpRequest) -> Option<Person> {
    let h = req.headers().get("authorization")?.to_str().ok()?;
    let t = h
        .strip_prefix("Bearer ")
        .or_else(|| h.strip_prefix("token "))?;
    s.tokens.lock().unwrap().get(t).cloned()
}

/// Each API call, under `Fault::ApiSlow`, answers after 8 s: two of them take longer than one
/// sign-in may.
async fn api_delay(s: &Shared) {
    if *s.fault.lock().unwrap() == Fault::ApiSlow {
        actix_web::rt::time::sleep(Duration::from_secs(8)).await;
    }
}

async fn github_user(s: web::Data<Shared>, req: HttpRequest) -> HttpResponse {
    if *s.fault.lock().unwrap() == Fault::Api500 {
        return HttpResponse::InternalServerError().finish();
    }
    api_delay(&s).await;
    if req.headers().get("user-agent").is_none() {
        return HttpResponse::Forbidden().body("User-Agent required");
    }
    let Some(p) = bearer(&s, &req) else {
        return HttpResponse::Unauthorized().json(json!({"message": "Bad credentials"}));
    };
    let id: u64 = p.subject.parse().expect("numeric GitHub id");
    HttpResponse::Ok().json(json!({
        "id": id, "login": format!("octo{id}"), "name": p.name, "email": Value::Null,
    }))
}

async fn github_emails(s: web::Data<Shared>, req: HttpRequest) -> HttpResponse {
    api_delay(&s).await;
    let Some(p) = bearer(&s, &req) else {
        return HttpResponse::Unauthorized().json(json!({"message": "Bad credentials"}));
    };
    let mut emails = vec![json!({
        "email": format!("noreply-{}@users.noreply.example", p.subject),
        "primary": false, "verified": true, "visibility": null,
    })];
    if let Some(e) = &p.email {
        emails.push(json!({
            "email": e, "primary": true, "verified": p.email_verified, "visibility": "private",
        }));
    }
    HttpResponse::Ok().json(emails)
}
