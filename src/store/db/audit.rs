//! The audit table: appended in batches, read by `audit list`.

use std::sync::OnceLock;

use diesel::prelude::*;

use super::super::schema::audit_events;
use super::prepared::{fixed_sql, Bind, Prepared};
use super::{db_err, DbStore};
use crate::audit::{AuditEvent, AuditFilter};
use crate::store::{AuditStore, StoreResult};

/// Rows per INSERT statement. One statement a row spent more in diesel and in SQLite's statement
/// set-up than in the rows (the audit writer was 14 % of the server's CPU at 28k tokens/s).
const CHUNK: usize = 32;

/// The table's columns, in the order of [`row_binds`].
const COLUMNS: [&str; 9] = [
    "id",
    "at",
    "event",
    "user_id",
    "client_id",
    "ip",
    "user_agent",
    "request_id",
    "detail",
];

/// One row's values, in the order of [`COLUMNS`].
fn row_binds(e: &AuditEvent) -> [Bind<'_>; COLUMNS.len()] {
    [
        Bind::Text(&e.id),
        Bind::BigInt(e.at),
        Bind::Text(&e.event),
        Bind::OptText(e.user_id.as_deref()),
        Bind::OptText(e.client_id.as_deref()),
        Bind::OptText(e.ip.as_deref()),
        Bind::OptText(e.user_agent.as_deref()),
        Bind::OptText(e.request_id.as_deref()),
        Bind::OptText(e.detail.as_deref()),
    ]
}

/// The multi-row INSERT for `rows` rows (1 ..= CHUNK), numbered placeholders, built once; both
/// databases keep it prepared.
fn insert_sql(rows: usize) -> &'static str {
    static SQL: OnceLock<Vec<String>> = OnceLock::new();
    let all = SQL.get_or_init(|| {
        let width = COLUMNS.len();
        let tuple = |r: usize| {
            let cols: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
            format!("({})", cols.join(", "))
        };
        (1..=CHUNK)
            .map(|n| {
                let values: Vec<String> = (0..n).map(tuple).collect();
                // A batch retried after a commit whose answer was lost (the connection cut just
                // then) finds its rows there: nothing to add, and nothing to fail over.
                format!(
                    "INSERT INTO audit_events ({}) VALUES {} ON CONFLICT (id) DO NOTHING",
                    COLUMNS.join(", "),
                    values.join(", ")
                )
            })
            .collect()
    });
    &all[rows - 1]
}

fixed_sql!(
    /// The INSERT of a full chunk, the one that runs under load.
    InsertChunk,
    insert_sql(CHUNK)
);

type AuditRow = (
    String,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

impl AuditStore for DbStore {
    fn append_audit(&self, events: &[AuditEvent]) -> StoreResult<()> {
        let mut conn = self.conn()?;
        conn.transaction(|c| {
            for chunk in events.chunks(CHUNK) {
                let binds: Vec<Bind<'_>> = chunk.iter().flat_map(row_binds).collect();
                if chunk.len() == CHUNK {
                    Prepared::<InsertChunk>::fixed(binds).execute(c)?;
                } else {
                    Prepared::new(insert_sql(chunk.len()), &binds).execute(c)?;
                }
            }
            Ok(())
        })
        .map_err(db_err)
    }

    fn list_audit(&self, f: &AuditFilter) -> StoreResult<Vec<AuditEvent>> {
        let mut q = audit_events::table.into_boxed();
        if let Some(u) = &f.user_id {
            q = q.filter(audit_events::user_id.eq(u.clone()));
        }
        if let Some(c) = &f.client_id {
            q = q.filter(audit_events::client_id.eq(c.clone()));
        }
        if let Some(t) = f.since {
            q = q.filter(audit_events::at.ge(t));
        }
        let mut rows = q
            .order((audit_events::at.desc(), audit_events::id.desc()))
            .limit(f.limit)
            .load::<AuditRow>(&mut *self.conn()?)
            .map_err(db_err)?;
        rows.reverse();
        Ok(rows
            .into_iter()
            .map(|r| AuditEvent {
                id: r.0,
                at: r.1,
                event: r.2,
                user_id: r.3,
                client_id: r.4,
                ip: r.5,
                user_agent: r.6,
                request_id: r.7,
                detail: r.8,
            })
            .collect())
    }
}
