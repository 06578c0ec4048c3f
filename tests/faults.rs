//! Database faults under load: a TCP proxy between the server and PostgreSQL is cut while
//! clients refresh and take client-credentials tokens, then restored. While it is cut the only
//! failures are 503s with an RFC error; nothing is half-written (every refresh chain still works
//! afterwards and each family has exactly one current token); service returns within 2 s; the
//! audit rows of the tokens issued around the cut are all written once it is over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
use serde_json::Value;

use crate::common::{pgproxy::PgProxy, postgres_available, Backend, Resp, ServerBuilder};
use crate::refresh::{refresh, rp_client, tokens};
use crate::signin::{user, Browser};

const WORKERS: usize = 3;

/// What the load saw: per status, and every response that was neither 200 nor a clean 503.
#[derive(Default)]
struct Seen {
    ok: usize,
    unavailable: usize,
    unexpected: Vec<String>,
    last_ok: Option<Instant>,
}

impl Seen {
    fn record(&mut self, what: &str, r: &Resp) -> bool {
        match r.status {
            200 => {
                self.ok += 1;
                self.last_ok = Some(Instant::now());
                true
            }
            503 if r.body.contains("\"temporarily_unavailable\"") => {
                self.unavailable += 1;
                false
            }
            _ => {
                self.unexpected
                    .push(format!("{what}: {} {}", r.status, r.body));
                false
            }
        }
    }
}

#[derive(QueryableByName)]
struct FamilyCount {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    current: i64,
}

#[test]
fn database_cut_under_load_loses_and_duplicates_nothing() {
    if !postgres_available() {
        return;
    }
    let builder = ServerBuilder::new(Backend::Postgres);
    let direct_url = builder.pg().unwrap().url.clone();
    let proxy = PgProxy::start(&builder.pg().unwrap().server_addr());
    let via_proxy = builder.pg().unwrap().url_via(proxy.port);
    let s = builder.database_url(via_proxy).start();
    user(&s, "load", &[]);
    let (id, secret) = rp_client(&s, "Notes");
    let c = (id.as_str(), secret.as_str());
    let (cc_id, cc_secret) = s.client(&[]);
    let mut browser = Browser::new(&s);
    let chains: Vec<String> = (0..WORKERS)
        .map(|_| {
            let t = tokens(&s, &mut browser, c, "load", "notes:read");
            t["refresh_token"].as_str().unwrap().to_owned()
        })
        .collect();

    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Seen::default());
    let (cut_at, restored_at, recovered_at, final_chains) = std::thread::scope(|scope| {
        let workers: Vec<_> = chains
            .into_iter()
            .map(|mut rt| {
                let (s, stop, seen) = (&s, &stop, &seen);
                scope.spawn(move || {
                    let mut rotations = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let r = refresh(s, c, &rt, None);
                        if seen.lock().unwrap().record("refresh", &r) {
                            let v: Value = r.json();
                            rt = v["refresh_token"].as_str().unwrap().to_owned();
                            rotations += 1;
                        } else {
                            // A failed rotation is retried with the same token.
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                    (rt, rotations)
                })
            })
            .collect();
        let cc = {
            let (s, stop, seen) = (&s, &stop, &seen);
            let (id, secret) = (cc_id.as_str(), cc_secret.as_str());
            scope.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let r = s.post_form(
                        "/token",
                        &[("grant_type", "client_credentials")],
                        Some((id, secret)),
                    );
                    seen.lock().unwrap().record("client_credentials", &r);
                }
            })
        };

        // A failed assertion below must still stop the load, or the scope waits for it forever.
        let _stop = StopOnDrop(&stop);
        let warm = Instant::now() + Duration::from_secs(20);
        while seen.lock().unwrap().ok <= 20 {
            let before = seen.lock().unwrap().ok;
            assert!(
                Instant::now() < warm,
                "the load is running: {before} successes"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        proxy.cut();
        let cut_at = Instant::now();
        std::thread::sleep(Duration::from_millis(1000));
        let r = s.get("/readyz");
        assert_eq!(r.status, 503, "{}", r.body);
        std::thread::sleep(Duration::from_millis(1500));
        proxy.restore();
        let restored_at = Instant::now();
        // Recovery: the time until the server answers a token request that needs the database.
        let recovered_at = loop {
            let r = s.post_form(
                "/token",
                &[("grant_type", "client_credentials")],
                Some((&cc_id, &cc_secret)),
            );
            if r.status == 200 {
                break Instant::now();
            }
            assert!(
                restored_at.elapsed() < Duration::from_secs(10),
                "never recovered"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_millis(1000));
        stop.store(true, Ordering::SeqCst);
        let finals: Vec<(String, usize)> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        cc.join().unwrap();
        (cut_at, restored_at, recovered_at, finals)
    });

    let seen = seen.into_inner().unwrap();
    assert!(
        seen.unexpected.is_empty(),
        "only 200 and 503 under the fault: {:#?}",
        seen.unexpected
    );
    assert!(seen.unavailable > 0, "the cut was felt");
    assert!(seen.last_ok.unwrap() > recovered_at, "load resumed");
    let recovery = recovered_at - restored_at;
    eprintln!(
        "fault test: {} ok, {} 503 over a {:?} cut; recovered {recovery:?} after restoring; \
         {} rotation(s) whose response was lost were retried",
        seen.ok,
        seen.unavailable,
        restored_at - cut_at,
        s.logs()
            .matches("refresh retried within the grace period")
            .count()
    );
    assert!(
        recovery <= Duration::from_secs(2),
        "recovery took {recovery:?}"
    );
    assert_eq!(s.get("/readyz").status, 200);

    // No lost rotation: every chain's latest token still refreshes.
    for (rt, rotations) in &final_chains {
        assert!(*rotations > 0);
        let r = refresh(&s, c, rt, None);
        assert_eq!(
            r.status, 200,
            "chain lost after {rotations} rotations: {}",
            r.body
        );
    }
    // No duplicated rotation, nothing half-written: each family has exactly one current token.
    let mut db = PgConnection::establish(&direct_url).expect("connect to the test database");
    let families: Vec<FamilyCount> = diesel::sql_query(
        "SELECT count(*) FILTER (WHERE used_at IS NULL AND NOT revoked) AS current \
         FROM refresh_tokens GROUP BY family_id",
    )
    .load(&mut db)
    .unwrap();
    assert_eq!(families.len(), WORKERS);
    for f in &families {
        assert_eq!(f.current, 1, "exactly one current token per family");
    }

    // The audit log lost nothing to the cut: one `token.issued` row per token handed out (the
    // sign-ins' code exchanges, the load's successes, the recovery probe, the final refreshes),
    // written once the writer's retries got through.
    let expected = (WORKERS + seen.ok + 1 + WORKERS) as i64;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows: Vec<EventCount> = diesel::sql_query(
            "SELECT count(*) AS n FROM audit_events WHERE event = 'token.issued'",
        )
        .load(&mut db)
        .unwrap();
        if rows[0].n == expected {
            break;
        }
        assert!(
            rows[0].n < expected && Instant::now() < deadline,
            "{} token.issued rows for {expected} tokens",
            rows[0].n
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[derive(QueryableByName)]
struct EventCount {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// SQLite under concurrent writers (rotations, client-credentials tokens and their audit rows):
/// every request succeeds; `database is locked` never reaches a client or the log.
#[test]
fn sqlite_concurrent_writers_never_see_a_locked_database() {
    let s = ServerBuilder::new(Backend::Sqlite).start();
    user(&s, "load", &[]);
    let (id, secret) = rp_client(&s, "Notes");
    let c = (id.as_str(), secret.as_str());
    let (cc_id, cc_secret) = s.client(&[]);
    let mut browser = Browser::new(&s);
    let chains: Vec<String> = (0..6)
        .map(|_| {
            let t = tokens(&s, &mut browser, c, "load", "notes:read");
            t["refresh_token"].as_str().unwrap().to_owned()
        })
        .collect();
    let failures: Vec<String> = std::thread::scope(|scope| {
        let mut handles: Vec<_> = chains
            .into_iter()
            .map(|mut rt| {
                let s = &s;
                scope.spawn(move || {
                    let mut bad = Vec::new();
                    for _ in 0..40 {
                        let r = refresh(s, c, &rt, None);
                        if r.status == 200 {
                            rt = r.json()["refresh_token"].as_str().unwrap().to_owned();
                        } else {
                            bad.push(format!("refresh: {} {}", r.status, r.body));
                        }
                    }
                    bad
                })
            })
            .collect();
        for _ in 0..2 {
            let (s, id, secret) = (&s, cc_id.as_str(), cc_secret.as_str());
            handles.push(scope.spawn(move || {
                (0..150)
                    .map(|_| {
                        s.post_form(
                            "/token",
                            &[("grant_type", "client_credentials")],
                            Some((id, secret)),
                        )
                    })
                    .filter(|r| r.status != 200)
                    .map(|r| format!("cc: {} {}", r.status, r.body))
                    .collect()
            }));
        }
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(!s.logs().contains("database is locked"));
}

/// Sets the flag when dropped, also while a panic unwinds.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}
