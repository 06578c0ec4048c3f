//! The audit table: appended in batches, read by `audit list`.

use diesel::prelude::*;

use super::super::schema::audit_events;
use super::{db_err, DbStore};
use crate::audit::{AuditEvent, AuditFilter};
use crate::store::{AuditStore, StoreResult};

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
            // Row by row: batch inserts are not portable across the two backends.
            for e in events {
                diesel::insert_into(audit_events::table)
                    .values((
                        audit_events::id.eq(&e.id),
                        audit_events::at.eq(e.at),
                        audit_events::event.eq(&e.event),
                        audit_events::user_id.eq(&e.user_id),
                        audit_events::client_id.eq(&e.client_id),
                        audit_events::ip.eq(&e.ip),
                        audit_events::user_agent.eq(&e.user_agent),
                        audit_events::request_id.eq(&e.request_id),
                        audit_events::detail.eq(&e.detail),
                    ))
                    .execute(c)?;
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
