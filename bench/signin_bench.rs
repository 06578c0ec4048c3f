//! Sign-in throughput: complete browser sign-ins per second (login POST with Argon2id, consent,
//! code, token exchange), beside the raw Argon2id verification rate with the same parameters;
//! and refresh-token rotation: chains of refreshes, each using the token the last one returned.
//!
//!   signin_bench raw SECONDS THREADS
//!   signin_bench flow BASE CLIENT_ID CLIENT_SECRET REDIRECT_URI USERNAME PASSWORD FLOWS THREADS
//!   signin_bench refresh BASE CLIENT_ID CLIENT_SECRET REDIRECT_URI USERNAME PASSWORD SECONDS CHAINS
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

/// One complete sign-in; the token response, if it succeeded.
fn one_flow(agent: &ureq::Agent, f: &Flow, scope: &str) -> Option<serde_json::Value> {
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
    let csrf = hidden(&login.into_string().unwrap_or_default(), "csrf_token")?;
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
    let csrf2 = hidden(&consent.into_string().unwrap_or_default(), "csrf_token")?;
    let mut form: Vec<(&str, &str)> = params.to_vec();
    form.extend([("csrf_token", csrf2.as_str()), ("decision", "allow")]);
    let back = call(
        agent.post(&format!("{}/consent", f.base)),
        Some(&form),
        &mut jar,
    );
    let location = back.header("location").map(str::to_owned)?;
    let code = url::Url::parse(&location).ok().and_then(|u| {
        u.query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
    })?;
    let token = agent
        .post(&format!("{}/token", f.base))
        .set("Authorization", &basic(f))
        .send_form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", f.redirect),
            ("code_verifier", &verifier),
        ]);
    token.ok().filter(|r| r.status() == 200)?.into_json().ok()
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
            let t = one_flow(&agent(), f, "api:read").expect("sign-in for a refresh token");
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
                            if one_flow(&agent, &f, "openid profile").is_some() {
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
        _ => eprintln!("usage: signin_bench raw SECONDS THREADS | flow BASE ID SECRET REDIRECT USER PASSWORD FLOWS THREADS | refresh BASE ID SECRET REDIRECT USER PASSWORD SECONDS CHAINS"),
    }
}
