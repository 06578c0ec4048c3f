//! The audit log: every security event as one JSON log line (target `audit`) and one row in
//! the append-only `audit_events` table. Events carry ids, names, addresses and outcomes;
//! never a secret, token, password or code.
//!
//! The server hands rows to a writer thread through a bounded queue, which writes them in
//! batches (one transaction each), so the token endpoint does not wait for the database. With
//! 10,000 rows waiting, further rows are dropped (and logged as dropped) rather than block a
//! request. The CLI writes its rows directly.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use serde::Serialize;

use crate::clock::UnixTime;
use crate::crypto::opaque;
use crate::store::{AuditStore, StoreError, StoreResult};

const QUEUE: usize = 10_000;
const BATCH: usize = 1000;
/// How long the writer keeps collecting after the first queued row, so that rows arriving close
/// together share one transaction: every commit appends the pages it touched (the table and its
/// three indexes) to the WAL, so a busy token endpoint writing a transaction per handful of rows
/// spent more on commits than on the rows (36 µs a row at 5k rows/s, measured).
const LINGER: std::time::Duration = std::time::Duration::from_millis(25);

/// One security event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    /// Row id (random).
    pub id: String,
    /// When (Unix seconds).
    pub at: UnixTime,
    /// What, e.g. `login.success`, `token.issued`, `refresh.reuse_detected`.
    pub event: String,
    /// The person concerned, by user id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The client concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Client address (`cli` for the command line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The browser's or client's `User-Agent`, at most 256 characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The `X-Request-Id` of the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// More about it (a grant type, an error code, a provider); never a secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AuditEvent {
    /// An event at `at`, everything else to be filled in.
    pub fn new(event: &str, at: UnixTime) -> Self {
        // Time-ordered ids: rows of the same second list in the order they happened.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Self {
            id: format!("{nanos:020}-{}", &opaque::random_id()[..8]),
            at,
            event: event.to_owned(),
            user_id: None,
            client_id: None,
            ip: None,
            user_agent: None,
            request_id: None,
            detail: None,
        }
    }

    /// With the user.
    pub fn user(mut self, id: impl Into<String>) -> Self {
        self.user_id = Some(id.into());
        self
    }

    /// With the client.
    pub fn client(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// With a detail.
    pub fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = Some(d.into());
        self
    }

    /// Write the JSON log line.
    pub fn log(&self) {
        // Serialise only when the line will be written (`RUST_LOG` may leave `audit` out).
        if tracing::enabled!(target: "audit", tracing::Level::INFO) {
            let line = serde_json::to_string(self).unwrap_or_default();
            tracing::info!(target: "audit", "{line}");
        }
    }
}

/// What `audit list` selects.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this user id.
    pub user_id: Option<String>,
    /// Only this client.
    pub client_id: Option<String>,
    /// At or after this time.
    pub since: Option<UnixTime>,
    /// At most this many, newest last.
    pub limit: i64,
}

/// The server's audit writer.
#[derive(Debug, Clone)]
pub struct Auditor {
    queue: SyncSender<AuditEvent>,
    /// Rows queued and not yet written (or given up).
    pending: Arc<AtomicUsize>,
    /// Rows dropped because the queue was full, since start.
    dropped: Arc<AtomicUsize>,
}

impl Auditor {
    /// Start the writer thread over `store`.
    pub fn start(store: Arc<dyn AuditStore>) -> std::io::Result<Self> {
        let (queue, rx) = sync_channel(QUEUE);
        let pending = Arc::new(AtomicUsize::new(0));
        let left = pending.clone();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || write_loop(&*store, &rx, &left))?;
        Ok(Self {
            queue,
            pending,
            dropped: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Wait (blocking) until every queued row is written, at most `timeout`; whether it was.
    pub fn drain(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while self.pending.load(Ordering::SeqCst) > 0 {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        true
    }

    /// Log `event` and queue its row. Never blocks a request: with the queue full (the database
    /// away or far behind) the row is dropped and said so; the log line stays.
    pub fn record(&self, event: AuditEvent) {
        event.log();
        self.pending.fetch_add(1, Ordering::SeqCst);
        let refused = match self.queue.try_send(event) {
            Ok(()) => return,
            Err(e) => e,
        };
        self.pending.fetch_sub(1, Ordering::SeqCst);
        match refused {
            TrySendError::Full(e) => {
                // Said at the 1st, 2nd, 4th, 8th ... dropped row, not thousands of times a
                // second while the database is away.
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::error!(event = %e.event, id = %e.id, dropped, "audit queue full; rows only in the log");
                }
            }
            TrySendError::Disconnected(e) => {
                tracing::error!(event = %e.event, id = %e.id, "audit writer is gone; row only in the log");
            }
        }
    }
}

fn write_loop(store: &dyn AuditStore, rx: &Receiver<AuditEvent>, pending: &AtomicUsize) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter().take(BATCH - 1));
        if batch.len() < BATCH {
            // Sleep rather than wait on the queue: a waiting receiver is woken by every send
            // (a futex call and a context switch per row on the request threads, 5 % of the
            // server's CPU at 5.5k tokens/s, measured); a sleeping one costs senders nothing.
            std::thread::sleep(LINGER);
            batch.extend(rx.try_iter().take(BATCH - batch.len()));
        }
        let mut refusals = MAX_REFUSED_ROWS;
        write_batch(store, &batch, &mut refusals);
        pending.fetch_sub(batch.len(), Ordering::SeqCst);
    }
}

/// How many rows of one batch may be refused one by one (below); past that the refusals are
/// not about single rows (a read-only standby, a full disk, a store bug) and the rest of the
/// batch waits as in an outage.
const MAX_REFUSED_ROWS: usize = 16;

/// What became of a batch.
enum Outcome {
    /// Written, but for rows the database refused one by one.
    Done,
    /// Dropped after the outage schedule ran out.
    GaveUp,
}

/// Write `batch`, keeping every row the database accepts. While the database is away the batch
/// is retried for about 50 s (then dropped: the rows are in the log). If the database answers a
/// ping and refused the batch at once (a refused value, not a lock wait or a timeout), some row
/// is at fault: the batch is halved until the refused rows stand alone, and only they are
/// dropped (at most [`MAX_REFUSED_ROWS`]), so one bad row neither holds the writer up nor takes
/// its batch-mates with it. A panic in the store is handled as such a refusal.
fn write_batch(store: &dyn AuditStore, batch: &[AuditEvent], refusals: &mut usize) -> Outcome {
    let mut delay = std::time::Duration::from_millis(100);
    loop {
        let started = std::time::Instant::now();
        let error = match append_caught(store, batch) {
            Ok(()) => return Outcome::Done,
            Err(error) => error,
        };
        let at_once = started.elapsed() < std::time::Duration::from_secs(1);
        if at_once && *refusals > 0 && pings(store) {
            let [row] = batch else {
                let (left, right) = batch.split_at(batch.len() / 2);
                if let Outcome::GaveUp = write_batch(store, left, refusals) {
                    // The database went away meanwhile and its schedule ran out: the rest of
                    // the batch would only wait as long again.
                    tracing::error!(
                        rows = right.len(),
                        "audit rows dropped from the table (they are in the log)"
                    );
                    return Outcome::GaveUp;
                }
                return write_batch(store, right, refusals);
            };
            *refusals -= 1;
            tracing::error!(%error, event = %row.event, id = %row.id, "audit row refused by the database (it is in the log)");
            return Outcome::Done;
        }
        if delay >= std::time::Duration::from_secs(30) {
            tracing::error!(%error, rows = batch.len(), "audit rows dropped from the table (they are in the log)");
            return Outcome::GaveUp;
        }
        tracing::warn!(%error, rows = batch.len(), "audit rows not written yet; retrying");
        std::thread::sleep(delay);
        delay *= 2;
    }
}

fn pings(store: &dyn AuditStore) -> bool {
    matches!(
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.ping())),
        Ok(Ok(()))
    )
}

/// `store.append_audit(batch)`, a panic in it turned into an error.
fn append_caught(store: &dyn AuditStore, batch: &[AuditEvent]) -> StoreResult<()> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.append_audit(batch)))
        .unwrap_or_else(|_| Err(StoreError::Database("the audit store panicked".into())))
}

/// Write `event` now (the command line), and log it.
pub fn record_now(store: &dyn AuditStore, event: AuditEvent) -> StoreResult<()> {
    event.log();
    store.append_audit(std::slice::from_ref(&event))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    use std::sync::atomic::AtomicBool;

    use crate::store::Maintenance;

    /// Counts the transactions and keeps the rows. While `down`, neither a write nor a ping
    /// gets through; a batch holding a `poison` event is refused, one holding `panic` panics.
    #[derive(Default)]
    struct Recorder {
        batches: Mutex<Vec<Vec<String>>>,
        /// The batches refused while down.
        refused: Mutex<Vec<Vec<String>>>,
        down: AtomicBool,
        /// The last write was refused for being down.
        refused_down: AtomicBool,
        failed_writes: AtomicUsize,
    }

    impl Maintenance for Recorder {
        fn ping(&self) -> StoreResult<()> {
            // Down, or down when the write just refused was tried (the test may have brought
            // it back in between: that write still failed for the outage, not for a row).
            if self.down.load(Ordering::SeqCst) | self.refused_down.swap(false, Ordering::SeqCst) {
                return Err(StoreError::Unavailable("down".into()));
            }
            Ok(())
        }
        fn purge_expired(&self, _: UnixTime, _: i64) -> StoreResult<usize> {
            Ok(0)
        }
    }

    impl AuditStore for Recorder {
        fn append_audit(&self, events: &[AuditEvent]) -> StoreResult<()> {
            if self.down.load(Ordering::SeqCst) {
                self.failed_writes.fetch_add(1, Ordering::SeqCst);
                self.refused_down.store(true, Ordering::SeqCst);
                let ids = events.iter().map(|e| e.id.clone()).collect();
                self.refused.lock().unwrap().push(ids);
                return Err(StoreError::Database("connection refused".into()));
            }
            if events.iter().any(|e| e.event == "panic") {
                self.failed_writes.fetch_add(1, Ordering::SeqCst);
                panic!("a store bug");
            }
            if events.iter().any(|e| e.event == "poison") {
                self.failed_writes.fetch_add(1, Ordering::SeqCst);
                return Err(StoreError::Database("value too long".into()));
            }
            let ids = events.iter().map(|e| e.id.clone()).collect();
            self.batches.lock().unwrap().push(ids);
            Ok(())
        }
        fn list_audit(&self, _: &AuditFilter) -> StoreResult<Vec<AuditEvent>> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn rows_from_many_threads_are_written_once_each_in_few_transactions() {
        let store = Arc::new(Recorder::default());
        let auditor = Auditor::start(store.clone()).unwrap();
        let sent: Vec<String> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..600)
                            .map(|_| {
                                let e = AuditEvent::new("token.issued", 1);
                                let id = e.id.clone();
                                auditor.record(e);
                                id
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        assert!(auditor.drain(std::time::Duration::from_secs(10)));
        let batches = store.batches.lock().unwrap();
        let mut written: Vec<String> = batches.iter().flatten().cloned().collect();
        let mut sent = sent;
        written.sort();
        sent.sort();
        assert_eq!(written, sent, "every row exactly once");
        assert!(batches.iter().all(|b| b.len() <= BATCH));
        // 2,400 rows sent as fast as four threads can: rows share transactions (one a row would
        // be 2,400; the bound leaves room for a slow, busy machine).
        assert!(batches.len() <= 120, "{} transactions", batches.len());
    }

    #[test]
    fn a_lone_row_is_written_on_its_own() {
        let store = Arc::new(Recorder::default());
        let auditor = Auditor::start(store.clone()).unwrap();
        auditor.record(AuditEvent::new("login.success", 1));
        assert!(auditor.drain(std::time::Duration::from_secs(2)));
        assert_eq!(store.batches.lock().unwrap().len(), 1);
    }

    /// Records `events` (by name) as one burst; their ids in order.
    fn burst(auditor: &Auditor, events: &[&str]) -> Vec<String> {
        events
            .iter()
            .map(|name| {
                let e = AuditEvent::new(name, 1);
                let id = e.id.clone();
                auditor.record(e);
                id
            })
            .collect()
    }

    fn written(store: &Recorder) -> Vec<String> {
        let mut ids: Vec<String> = store.batches.lock().unwrap().concat();
        ids.sort();
        ids
    }

    #[test]
    fn a_row_the_database_refuses_is_dropped_alone_and_at_once() {
        let store = Arc::new(Recorder::default());
        let auditor = Auditor::start(store.clone()).unwrap();
        let mut names = vec!["token.issued"; 40];
        names[17] = "poison";
        let ids = burst(&auditor, &names);
        let started = std::time::Instant::now();
        assert!(auditor.drain(std::time::Duration::from_secs(5)));
        // Halving finds the row at once; the outage schedule would have held the batch for
        // about 50 s and then dropped all 40.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        let mut expected: Vec<String> = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 17)
            .map(|(_, id)| id.clone())
            .collect();
        expected.sort();
        assert_eq!(written(&store), expected);
    }

    #[test]
    fn a_panic_in_the_store_costs_its_row_not_the_writer() {
        let store = Arc::new(Recorder::default());
        let auditor = Auditor::start(store.clone()).unwrap();
        let first = burst(&auditor, &["login.success", "panic", "login.failure"]);
        assert!(auditor.drain(std::time::Duration::from_secs(5)));
        // The writer thread is still there for the next row.
        let later = burst(&auditor, &["logout"]);
        assert!(auditor.drain(std::time::Duration::from_secs(5)));
        let mut expected = vec![first[0].clone(), first[2].clone(), later[0].clone()];
        expected.sort();
        assert_eq!(written(&store), expected);
    }

    #[test]
    fn a_batch_written_during_an_outage_waits_whole_for_the_database() {
        let store = Arc::new(Recorder::default());
        let auditor = Auditor::start(store.clone()).unwrap();
        store.down.store(true, Ordering::SeqCst);
        let mut ids = burst(&auditor, &["token.issued"; 10]);
        // Refused at least twice (100 ms apart), and not split: nothing to blame on a row.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while store.failed_writes.load(Ordering::SeqCst) < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer stopped retrying"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!auditor.drain(std::time::Duration::from_millis(50)));
        store.down.store(false, Ordering::SeqCst);
        assert!(auditor.drain(std::time::Duration::from_secs(5)));
        // A batch written afterwards that holds refused rows is the refused batch, whole
        // (however the burst fell into batches).
        let refused = store.refused.lock().unwrap().clone();
        for batch in store.batches.lock().unwrap().iter() {
            for r in refused
                .iter()
                .filter(|r| r.iter().any(|id| batch.contains(id)))
            {
                assert_eq!(r, batch, "split");
            }
        }
        ids.sort();
        assert_eq!(written(&store), ids);
    }
}
