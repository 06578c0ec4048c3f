//! Sign-in throughput: complete browser sign-ins per second (login POST with Argon2id, consent,
//! code, token exchange), beside the raw Argon2id verification rate with the same parameters;
//! and refresh-token rotation: chains of refreshes, each using the token the last one returned.
//!
//!   signin_bench raw SECONDS THREADS
//!   signin_bench flow BASE CLIENT_ID CLIENT_SECRET REDIRECT_URI USERNAME PASSWORD FLOWS THREADS
//!   signin_bench refresh BASE CLIENT_ID CLIENT_SECRET REDIRECT_URI USERNAME PASSWORD SECONDS CHAINS
//!   signin_bench soak BASE CLIENT_ID CLIENT_SECRET REDIRECT_URI USERNAME PASSWORD CC_ID CC_SECRET SECONDS SERVER_PID
//!
//! All are bounded (by time, or by a count of flows) and stop by themselves. Loopback only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::Digest;

fn raw(seconds: u64, threads: usize) {
    let hash = portcullis::crypto::password::hash_password("tulip-granite-oboe").expect("hash");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (hash, done) = (hash.clone(), done.clone());
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    assert!(portcullis::crypto::password::verify_password(
                        "tulip-granite-oboe",
                        Some(&hash)
                    ));
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    let n = done.load(Ordering::Relaxed);
    println!(
        "raw argon2id verify: {n} in {:.1} s = {:.1}/s ({threads} threads)",
        start.elapsed().as_secs_f64(),
        n as f64 / start.elapsed().as_secs_f64()
    );
}

fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_owned())
}

struct Flow<'a> {
    base: &'a str,
    client_id: &'a str,
    secret: &'a str,
    redirect: &'a str,
    username: &'a str,
    password: &'a str,
}

fn call(
    req: ureq::Request,
    form: Option<&[(&str, &str)]>,
    jar: &mut HashMap<String, String>,
) -> ureq::Response {
    let cookie: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let req = if cookie.is_empty() {
        req
    } else {
        req.set("Cookie", &cookie.join("; "))
    };
    let r = match form {
        Some(f) => req.send_form(f),
        None => req.call(),
    };
    let r = match r {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    for h in r.all("set-cookie") {
        if let Some((k, v)) = h.split(';').next().and_then(|p| p.split_once('=')) {
            jar.insert(k.to_owned(), v.to_owned());
        }
    }
    r
}

/// The body of a step's answer, or which step failed and how (status and the page's error).
fn body(step: &str, r: ureq::Response) -> Result<String, String> {
    let status = r.status();
    let text = r.into_string().unwrap_or_default();
    if status < 400 {
        return Ok(text);
    }
    let start = text.find("<main").unwrap_or(0);
    let gist: String = text[start..].chars().take(300).collect();
    Err(format!("{step}: {status} {gist}"))
}

/// One complete sign-in: the token response, or which step failed.
fn one_flow(agent: &ureq::Agent, f: &Flow, scope: &str) -> Result<serde_json::Value, String> {
    let verifier = format!("{:0>64}", rand_suffix());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let params = [
        ("client_id", f.client_id),
        ("redirect_uri", f.redirect),
        ("response_type", "code"),
        ("scope", scope),
        ("state", "s"),
        ("prompt", "consent"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.extend_pairs(params);
    let mut jar = HashMap::new();
    let login = call(
        agent.get(&format!("{}/authorize?{}", f.base, q.finish())),
        None,
        &mut jar,
    );
    let csrf = hidden(&body("authorize", login)?, "csrf_token")
        .ok_or("authorize: no csrf_token on the login page")?;
    let mut form: Vec<(&str, &str)> = params.to_vec();
    form.extend([
        ("csrf_token", csrf.as_str()),
        ("username", f.username),
        ("password", f.password),
    ]);
    let consent = call(
        agent.post(&format!("{}/login", f.base)),
        Some(&form),
        &mut jar,
    );
    let csrf2 = hidden(&body("login", consent)?, "csrf_token")
        .ok_or("login: no csrf_token on the consent page")?;
    let mut form: Vec<(&str, &str)> = params.to_vec();
    form.extend([("csrf_token", csrf2.as_str()), ("decision", "allow")]);
    let back = call(
        agent.post(&format!("{}/consent", f.base)),
        Some(&form),
        &mut jar,
    );
    let location = back.header("location").map(str::to_owned);
    body("consent", back)?;
    let code = location
        .and_then(|l| url::Url::parse(&l).ok())
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "code")
                .map(|(_, v)| v.into_owned())
        })
        .ok_or("consent: no code in the redirect")?;
    let token = agent
        .post(&format!("{}/token", f.base))
        .set("Authorization", &basic(f))
        .send_form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", f.redirect),
            ("code_verifier", &verifier),
        ]);
    match token {
        Ok(r) => r.into_json().map_err(|e| format!("token: {e}")),
        Err(ureq::Error::Status(status, r)) => Err(format!(
            "token: {status} {}",
            r.into_string().unwrap_or_default()
        )),
        Err(e) => Err(format!("token: {e}")),
    }
}

fn basic(f: &Flow) -> String {
    let pair = format!("{}:{}", f.client_id, f.secret);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// `chains` connections, each signing in once and then refreshing for `seconds`, every request
/// with the refresh token the previous response returned.
fn refresh_chains(f: &Flow, seconds: u64, chains: usize) {
    let agent = || {
        ureq::AgentBuilder::new()
            .redirects(0)
            .timeout(Duration::from_secs(30))
            .build()
    };
    let starts: Vec<String> = (0..chains)
        .map(|_| {
            let t = one_flow(&agent(), f, "api:read")
                .unwrap_or_else(|why| panic!("sign-in for a refresh token: {why}"));
            t["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_owned()
        })
        .collect();
    let errors = AtomicUsize::new(0);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut latencies: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = starts
            .into_iter()
            .map(|mut rt| {
                let errors = &errors;
                scope.spawn(move || {
                    let agent = agent();
                    let auth = basic(f);
                    let url = format!("{}/token", f.base);
                    let mut seen = Vec::new();
                    while Instant::now() < deadline {
                        let t0 = Instant::now();
                        let r = agent
                            .post(&url)
                            .set("Authorization", &auth)
                            .send_form(&[("grant_type", "refresh_token"), ("refresh_token", &rt)]);
                        let next = r.ok().and_then(|r| r.into_json::<serde_json::Value>().ok());
                        match next.as_ref().and_then(|v| v["refresh_token"].as_str()) {
                            Some(n) => {
                                rt = n.to_owned();
                                seen.push(t0.elapsed());
                            }
                            None => {
                                // A broken chain cannot continue: count it and stop this chain.
                                errors.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                    seen
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("chain"))
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p) as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "refresh rotations: {} in {secs:.1} s = {:.1}/s ({chains} chains), p50 {:.2} ms, p99 {:.2} ms, broken chains {}",
        latencies.len(),
        latencies.len() as f64 / secs,
        pct(0.5),
        pct(0.99),
        errors.load(Ordering::Relaxed)
    );
}

/// Counts of a soak run: requests, and the ones that were not 2xx (with the first few).
#[derive(Default)]
struct Tally {
    requests: AtomicUsize,
    flows: AtomicUsize,
    bad: AtomicUsize,
    first_bad: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn check(&self, what: &str, r: Result<ureq::Response, ureq::Error>) -> Option<ureq::Response> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match r {
            Ok(r) if (200..300).contains(&r.status()) => Some(r),
            Ok(r) | Err(ureq::Error::Status(_, r)) => {
                self.bad(format!(
                    "{what}: {} {}",
                    r.status(),
                    r.into_string().unwrap_or_default()
                ));
                None
            }
            Err(e) => {
                self.bad(format!("{what}: {e}"));
                None
            }
        }
    }

    fn bad(&self, what: String) {
        self.bad.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_bad.lock().expect("tally");
        if first.len() < 10 {
            first.push(what);
        }
    }
}

fn proc_status_kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Every grant and endpoint for `seconds`, at a steady pace (not flat out): sign-ins with code
/// exchange, userinfo, introspection, refreshes and revocation; client-credentials tokens with
/// introspection and revocation; JWKS and discovery. Prints the server's RSS every 30 s and
/// every non-2xx answer; exits 1 if there was any.
fn soak(f: &Flow, cc: (&str, &str), seconds: u64, pid: &str) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let tally = Tally::default();
    let agent = || {
        ureq::AgentBuilder::new()
            .redirects(0)
            .timeout(Duration::from_secs(30))
            .build()
    };
    let cc_auth = {
        let pair = format!("{}:{}", cc.0, cc.1);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    };
    let start = Instant::now();
    std::thread::scope(|scope| {
        // People: sign in, use and refresh their tokens, sign out of the app.
        for _ in 0..2 {
            scope.spawn(|| {
                let agent = agent();
                let url = |p: &str| format!("{}{p}", f.base);
                while Instant::now() < deadline {
                    tally.requests.fetch_add(4, Ordering::Relaxed);
                    let t = match one_flow(&agent, f, "openid profile") {
                        Ok(t) => t,
                        Err(why) => {
                            tally.bad(format!("sign-in flow, {why}"));
                            continue;
                        }
                    };
                    tally.flows.fetch_add(1, Ordering::Relaxed);
                    let at = t["access_token"].as_str().unwrap_or_default().to_owned();
                    let mut rt = t["refresh_token"].as_str().unwrap_or_default().to_owned();
                    tally.check(
                        "userinfo",
                        agent
                            .get(&url("/userinfo"))
                            .set("Authorization", &format!("Bearer {at}"))
                            .call(),
                    );
                    tally.check(
                        "introspect",
                        agent
                            .post(&url("/introspect"))
                            .set("Authorization", &basic(f))
                            .send_form(&[("token", &at)]),
                    );
                    for _ in 0..3 {
                        let r = tally.check(
                            "refresh",
                            agent
                                .post(&url("/token"))
                                .set("Authorization", &basic(f))
                                .send_form(&[
                                    ("grant_type", "refresh_token"),
                                    ("refresh_token", &rt),
                                ]),
                        );
                        match r.and_then(|r| r.into_json::<serde_json::Value>().ok()) {
                            Some(v) => {
                                rt = v["refresh_token"].as_str().unwrap_or_default().to_owned()
                            }
                            None => break,
                        }
                    }
                    tally.check(
                        "revoke",
                        agent
                            .post(&url("/revoke"))
                            .set("Authorization", &basic(f))
                            .send_form(&[("token", &rt), ("token_type_hint", "refresh_token")]),
                    );
                    // A steady pace: Argon2id would otherwise take both cores.
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        // Machines: client-credentials tokens, introspected, some revoked; key and metadata reads.
        scope.spawn(|| {
            let agent = agent();
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let token = tally
                    .check(
                        "client_credentials",
                        agent
                            .post(&format!("{}/token", f.base))
                            .set("Authorization", &cc_auth)
                            .send_form(&[("grant_type", "client_credentials")]),
                    )
                    .and_then(|r| r.into_json::<serde_json::Value>().ok());
                if let Some(at) = token.as_ref().and_then(|v| v["access_token"].as_str()) {
                    tally.check(
                        "introspect",
                        agent
                            .post(&format!("{}/introspect", f.base))
                            .set("Authorization", &cc_auth)
                            .send_form(&[("token", at)]),
                    );
                    if n.is_multiple_of(10) {
                        tally.check(
                            "revoke",
                            agent
                                .post(&format!("{}/revoke", f.base))
                                .set("Authorization", &cc_auth)
                                .send_form(&[("token", at)]),
                        );
                    }
                }
                tally.check("jwks", agent.get(&format!("{}/jwks", f.base)).call());
                tally.check(
                    "discovery",
                    agent
                        .get(&format!("{}/.well-known/openid-configuration", f.base))
                        .call(),
                );
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        // The report: RSS every 30 s.
        scope.spawn(|| {
            println!(
                "{:>6} {:>10} {:>8} {:>9} {:>9} {:>8}",
                "secs", "requests", "sign-ins", "RSS MiB", "peak MiB", "non-2xx"
            );
            let mut next = Instant::now();
            loop {
                if Instant::now() >= next {
                    println!(
                        "{:>6} {:>10} {:>8} {:>9.1} {:>9.1} {:>8}",
                        start.elapsed().as_secs(),
                        tally.requests.load(Ordering::Relaxed),
                        tally.flows.load(Ordering::Relaxed),
                        proc_status_kib(pid, "VmRSS:") as f64 / 1024.0,
                        proc_status_kib(pid, "VmHWM:") as f64 / 1024.0,
                        tally.bad.load(Ordering::Relaxed)
                    );
                    next += Duration::from_secs(30);
                }
                if Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
    });
    let bad = tally.bad.load(Ordering::Relaxed);
    println!(
        "soak: {} requests ({} sign-ins) in {:.0} s, {bad} not 2xx; server RSS {:.1} MiB, peak {:.1} MiB",
        tally.requests.load(Ordering::Relaxed),
        tally.flows.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64(),
        proc_status_kib(pid, "VmRSS:") as f64 / 1024.0,
        proc_status_kib(pid, "VmHWM:") as f64 / 1024.0
    );
    for b in tally.first_bad.lock().expect("tally").iter() {
        println!("  not 2xx: {b}");
    }
    if bad > 0 {
        std::process::exit(1);
    }
}

fn rand_suffix() -> String {
    portcullis::crypto::opaque::random_token()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("raw") => raw(args[2].parse().expect("seconds"), args[3].parse().expect("threads")),
        Some("flow") => {
            let base = &args[2];
            assert!(base.starts_with("http://127.") || base.starts_with("http://localhost"), "loopback only");
            let f = Flow { base, client_id: &args[3], secret: &args[4], redirect: &args[5], username: &args[6], password: &args[7] };
            let flows: usize = args[8].parse().expect("flows");
            let threads: usize = args[9].parse().expect("threads");
            let next = AtomicUsize::new(0);
            let ok = AtomicUsize::new(0);
            let start = Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..threads {
                    scope.spawn(|| {
                        let agent = ureq::AgentBuilder::new().redirects(0).timeout(Duration::from_secs(30)).build();
                        while next.fetch_add(1, Ordering::Relaxed) < flows {
                            if one_flow(&agent, &f, "openid profile").is_ok() {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
            });
            let secs = start.elapsed().as_secs_f64();
            let n = ok.load(Ordering::Relaxed);
            println!("complete sign-ins: {n}/{flows} in {secs:.1} s = {:.1}/s ({threads} threads)", n as f64 / secs);
        }
        Some("refresh") => {
            let base = &args[2];
            assert!(base.starts_with("http://127.") || base.starts_with("http://localhost"), "loopback only");
            let f = Flow { base, client_id: &args[3], secret: &args[4], redirect: &args[5], username: &args[6], password: &args[7] };
            refresh_chains(&f, args[8].parse().expect("seconds"), args[9].parse().expect("chains"));
        }
        Some("soak") => {
            let base = &args[2];
            assert!(base.starts_with("http://127.") || base.starts_with("http://localhost"), "loopback only");
            let f = Flow { base, client_id: &args[3], secret: &args[4], redirect: &args[5], username: &args[6], password: &args[7] };
            soak(&f, (&args[8], &args[9]), args[10].parse().expect("seconds"), &args[11]);
        }
        _ => eprintln!("usage: signin_bench raw SECONDS THREADS | flow BASE ID SECRET REDIRECT USER PASSWORD FLOWS THREADS | refresh BASE ID SECRET REDIRECT USER PASSWORD SECONDS CHAINS | soak BASE ID SECRET REDIRECT USER PASSWORD CC_ID CC_SECRET SECONDS SERVER_PID"),
    }
}
