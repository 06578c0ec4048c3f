//! The audit log: rows (and JSON log lines) for a full sign-in, failures and lockout, a
//! refresh-reuse attack and the operator's changes; never a secret; append-only.

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::{Connection, RunQueryDsl};
use serde_json::Value;

use crate::both_backends;
use crate::common::{execute_sql, Backend, Server, ServerBuilder};
use crate::refresh::{refresh, revoke, rp_client, BYE};
use crate::signin::{
    auth_params, login_attempt, query, redeem, sign_in, user, Browser, PASSWORD, VERIFIER,
};

const AGENT: &str = "AuditTest/1.0 (integration)";

fn events(s: &Server, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["audit", "list", "--json"];
    all.extend_from_slice(args);
    s.cli_json(&all).as_array().cloned().unwrap()
}

/// Rows are written by a background writer: wait until `names` have all appeared.
fn wait_for(s: &Server, args: &[&str], names: &[&str]) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = events(s, args);
        let have: Vec<&str> = rows.iter().filter_map(|e| e["event"].as_str()).collect();
        if names.iter().all(|n| have.contains(n)) {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "missing some of {names:?} in {have:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn find<'a>(rows: &'a [Value], name: &str) -> &'a Value {
    rows.iter()
        .find(|e| e["event"] == name)
        .unwrap_or_else(|| panic!("no {name} in {rows:?}"))
}

fn a_full_sign_in_is_audited_without_secrets(b: Backend) {
    let s = ServerBuilder::new(b)
        .env("PORTCULLIS_LOGIN__MAX_FAILED_ATTEMPTS", "2")
        .start();
    let alice = user(&s, "alice", &[]);
    let uid = alice["id"].as_str().unwrap();
    let (id, secret) = rp_client(&s, "Notes");
    let c = (id.as_str(), secret.as_str());
    let mut browser = Browser::new(&s);
    browser.headers.push(("User-Agent".into(), AGENT.into()));
    let params = auth_params(&id, "openid notes:read", &[]);
    let back = sign_in(&mut browser, &params, "alice", true);
    let t = redeem(&s, &id, &secret, &back["code"], Some(VERIFIER)).json();
    let rt = t["refresh_token"].as_str().unwrap();
    let t2 = refresh(&s, c, rt, None).json();
    assert_eq!(
        revoke(&s, c, t2["refresh_token"].as_str().unwrap(), "").status,
        200
    );
    let logout = form_urlencoded::Serializer::new(String::new())
        .append_pair("id_token_hint", t["id_token"].as_str().unwrap())
        .append_pair("post_logout_redirect_uri", BYE)
        .finish();
    assert_eq!(browser.get(&format!("/logout?{logout}")).status, 303);

    let expected = [
        "login.success",
        "consent.granted",
        "code.issued",
        "token.issued",
        "token.revoked",
        "logout",
    ];
    let rows = wait_for(&s, &["--user", "alice"], &expected);
    let order: Vec<&str> = rows.iter().filter_map(|e| e["event"].as_str()).collect();
    let positions: Vec<usize> = expected
        .iter()
        .map(|n| order.iter().position(|o| o == n).unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "in order: {order:?}"
    );
    let login = find(&rows, "login.success");
    assert_eq!(login["user_id"], uid);
    assert_eq!(login["client_id"], id.as_str());
    assert_eq!(login["ip"], "127.0.0.1");
    assert_eq!(login["user_agent"], AGENT);
    assert_eq!(login["request_id"].as_str().unwrap().len(), 16);
    let issued: Vec<&Value> = rows
        .iter()
        .filter(|e| e["event"] == "token.issued")
        .collect();
    assert_eq!(issued.len(), 2);
    assert_eq!(issued[0]["detail"], "grant_type=authorization_code");
    assert_eq!(issued[1]["detail"], "grant_type=refresh_token");
    assert_eq!(issued[0]["client_id"], id.as_str());
    assert_eq!(find(&rows, "logout")["user_id"], uid);
    let by_client = events(&s, &["--client", &id]);
    assert!(by_client.iter().all(|e| e["client_id"] == id.as_str()));
    assert!(by_client.len() >= 5);
    assert!(events(&s, &["--since", "2999-01-01T00:00:00Z"]).is_empty());

    // Failures and the lockout they cause.
    for _ in 0..2 {
        let mut b2 = Browser::new(&s);
        let r = login_attempt(&mut b2, &params, "alice", "wrong-password-1");
        assert_eq!(r.status, 401);
    }
    let rows = wait_for(&s, &["--user", uid], &["login.failure", "account.locked"]);
    assert_eq!(find(&rows, "account.locked")["user_id"], uid);

    // Nothing secret in the table or the log.
    let all = serde_json::to_string(&events(&s, &[])).unwrap();
    let logs = s.logs();
    for secret_value in [
        PASSWORD,
        "wrong-password-1",
        secret.as_str(),
        back["code"].as_str(),
        rt,
        t["access_token"].as_str().unwrap(),
        t["id_token"].as_str().unwrap(),
        t2["refresh_token"].as_str().unwrap(),
    ] {
        assert!(!all.contains(secret_value), "audit rows hold a secret");
        assert!(!logs.contains(secret_value), "log holds a secret");
    }
    // Each event is also a JSON log line.
    let line = logs
        .lines()
        .find(|l| l.contains("\"event\":\"consent.granted\""))
        .expect("JSON audit line");
    let json: Value = serde_json::from_str(&line[line.find("{\"id\"").unwrap()..]).unwrap();
    assert_eq!(json["user_id"], uid);
}

fn refresh_reuse_attack_is_audited(b: Backend) {
    let s = Server::start(b);
    user(&s, "mallory-victim", &[]);
    let (id, secret) = rp_client(&s, "Notes");
    let c = (id.as_str(), secret.as_str());
    let mut browser = Browser::new(&s);
    let back = sign_in(
        &mut browser,
        &auth_params(&id, "notes:read", &[]),
        "mallory-victim",
        true,
    );
    let t = redeem(&s, &id, &secret, &back["code"], Some(VERIFIER)).json();
    let rt1 = t["refresh_token"].as_str().unwrap();
    let rt2 = refresh(&s, c, rt1, None).json()["refresh_token"].clone();
    assert_eq!(refresh(&s, c, rt2.as_str().unwrap(), None).status, 200);
    refresh(&s, c, rt1, None).assert_error(400, "invalid_grant");
    let rows = wait_for(&s, &["--client", &id], &["refresh.reuse_detected"]);
    let reuse = find(&rows, "refresh.reuse_detected");
    assert_eq!(reuse["client_id"], id.as_str());
    assert!(!serde_json::to_string(&rows).unwrap().contains(rt1));
    // A plain bad request is a refusal, not reuse.
    refresh(&s, c, "not-a-token", None).assert_error(400, "invalid_grant");
    let rows = wait_for(&s, &["--client", &id], &["token.refused"]);
    assert_eq!(
        find(&rows, "token.refused")["detail"],
        "error=invalid_grant"
    );

    // A refused authorization request (here prompt=none without a session).
    let none = auth_params(&id, "notes:read", &[("prompt", "none")]);
    let r = Browser::new(&s).get(&format!("/authorize?{}", query(&none)));
    assert_eq!(r.status, 303);
    let rows = wait_for(&s, &[], &["authorize.refused"]);
    assert_eq!(
        find(&rows, "authorize.refused")["detail"],
        "error=login_required"
    );
}

fn operator_changes_are_audited_and_the_table_is_append_only(b: Backend) {
    let s = Server::start(b);
    let u = user(&s, "olga", &[]);
    let uid = u["id"].as_str().unwrap();
    s.cli(&["user", "role", "add", "olga", "ops"]);
    s.cli(&["user", "lock", "olga"]);
    s.cli(&["user", "unlock", "olga"]);
    let (cid, _) = s.client(&[]);
    s.cli(&["client", "rotate-secret", &cid]);
    s.cli(&["keys", "generate", "--alg", "ES256"]);
    s.cli(&["user", "delete", "olga"]);
    let rows = events(&s, &[]);
    let names: Vec<&str> = rows.iter().filter_map(|e| e["event"].as_str()).collect();
    for n in [
        "user.created",
        "user.roles_changed",
        "user.locked",
        "user.unlocked",
        "client.created",
        "client.secret_rotated",
        "key.generated",
        "user.deleted",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert!(rows.iter().all(|e| e["ip"] == "cli"));
    // A deleted user's history is still there, by id.
    assert!(events(&s, &["--user", uid]).len() >= 4);
    let text = s.cli(&["audit", "list", "--user", uid]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("user.deleted"));
    assert_eq!(
        s.cli(&["audit", "list", "--since", "yesterday"])
            .status
            .code(),
        Some(2)
    );

    // Append-only: the database refuses updates and deletes.
    let url = s
        .env
        .iter()
        .find(|(k, _)| k == "PORTCULLIS_DATABASE_URL")
        .map(|(_, v)| v.clone())
        .unwrap();
    let attempts = [
        "UPDATE audit_events SET event = 'nothing'",
        "DELETE FROM audit_events",
    ];
    for sql in attempts {
        // Refused by the trigger, not by anything else (a busy SQLite file, say).
        let refused = match url.strip_prefix("sqlite://") {
            Some(path) => {
                let mut conn = diesel::SqliteConnection::establish(path).unwrap();
                conn.batch_execute("PRAGMA busy_timeout = 5000").unwrap();
                diesel::sql_query(sql).execute(&mut conn).err()
            }
            None => {
                let mut conn = diesel::PgConnection::establish(&url).unwrap();
                diesel::sql_query(sql).execute(&mut conn).err()
            }
        };
        let why = refused.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            why.contains("append-only"),
            "{sql} must be refused: {why:?}"
        );
    }
    assert_eq!(events(&s, &[]).len(), rows.len());
}

/// A row the database refuses (here a trigger refuses one client's rows) is dropped on its own,
/// at once: the rows written in the same batch land, and the writer goes on.
fn a_row_the_database_refuses_costs_only_itself(b: Backend) {
    let s = Server::start(b);
    let (good, good_secret) = s.client(&[]);
    let (bad, bad_secret) = s.client(&[]);
    if b == Backend::Sqlite {
        execute_sql(
            &s,
            &format!(
                "CREATE TRIGGER refuse_client BEFORE INSERT ON audit_events \
                 WHEN NEW.client_id = '{bad}' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            ),
        );
    } else {
        execute_sql(
            &s,
            &format!(
                "CREATE FUNCTION refuse_client() RETURNS trigger AS $$ BEGIN \
                 IF NEW.client_id = '{bad}' THEN RAISE EXCEPTION 'refused by the test'; END IF; \
                 RETURN NEW; END $$ LANGUAGE plpgsql"
            ),
        );
        execute_sql(
            &s,
            "CREATE TRIGGER refuse_client BEFORE INSERT ON audit_events \
             FOR EACH ROW EXECUTE FUNCTION refuse_client()",
        );
    }
    // Interleaved, so that refused rows share the writer's batches with good ones.
    for _ in 0..10 {
        s.cc_token(&good, &good_secret, None);
        s.cc_token(&bad, &bad_secret, None);
    }
    let issued = |client: &str| {
        events(&s, &["--client", client])
            .iter()
            .filter(|e| e["event"] == "token.issued")
            .count()
    };
    // Each refused row is named in the log (and is in its JSON audit line). A refused row used
    // to hold the writer up for about 50 s; a loaded machine gets far less than that.
    let refused = || {
        s.logs()
            .matches("audit row refused by the database")
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (issued, refused) = (issued(&good), refused());
        if issued == 10 && refused == 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{issued} of the good client's 10 rows and {refused} of 10 refusals logged after 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(issued(&bad), 0);
    // The writer is still there.
    s.cc_token(&good, &good_secret, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while issued(&good) < 11 {
        assert!(Instant::now() < deadline, "the writer stopped");
        std::thread::sleep(Duration::from_millis(100));
    }
}

both_backends!(
    a_row_the_database_refuses_costs_only_itself,
    a_full_sign_in_is_audited_without_secrets,
    refresh_reuse_attack_is_audited,
    operator_changes_are_audited_and_the_table_is_append_only,
);
