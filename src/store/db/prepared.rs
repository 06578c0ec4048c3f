//! Raw SQL that the connection keeps as a prepared statement.
//!
//! diesel never caches `sql_query` (its text may differ on every call), so PostgreSQL parses
//! and plans it each time: for the one-statement refresh rotation that was over 40 % of the
//! database's CPU. [`Prepared`] is for fixed SQL text only: diesel caches it by its text and
//! bind types, and PostgreSQL moves to a generic plan after a few executions.

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, HasSqlType, Nullable, Text, Untyped};
use diesel::{QueryResult, RunQueryDsl};

/// A value for a `$n` placeholder.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bind<'a> {
    Text(&'a str),
    /// Text or SQL NULL.
    OptText(Option<&'a str>),
    BigInt(i64),
}

/// A fixed SQL text with numbered placeholders (`$1`, `$2`, …, each may appear several times) and
/// their values in order.
#[derive(Debug, Clone)]
pub(crate) struct Prepared<'a> {
    sql: &'static str,
    binds: Vec<Bind<'a>>,
}

impl<'a> Prepared<'a> {
    pub(crate) fn new(sql: &'static str, binds: &[Bind<'a>]) -> Self {
        Self {
            sql,
            binds: binds.to_vec(),
        }
    }
}

impl<'a, DB> QueryFragment<DB> for Prepared<'a>
where
    DB: Backend + HasSqlType<Text> + HasSqlType<BigInt>,
    str: ToSql<Text, DB>,
    Option<&'a str>: ToSql<Nullable<Text>, DB>,
    i64: ToSql<BigInt, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        // Each `$n` becomes the backend's own placeholder for the n-th value; a `$` without
        // digits is text.
        let mut rest = self.sql;
        while let Some(at) = rest.find('$') {
            let after = &rest[at + 1..];
            let digits = after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len());
            if digits == 0 {
                out.push_sql(&rest[..=at]);
                rest = after;
                continue;
            }
            out.push_sql(&rest[..at]);
            let n: usize = after[..digits].parse().map_err(|_| unnumbered(self.sql))?;
            match n.checked_sub(1).and_then(|i| self.binds.get(i)) {
                Some(Bind::Text(v)) => out.push_bind_param::<Text, str>(v)?,
                Some(Bind::OptText(v)) => out.push_bind_param::<Nullable<Text>, _>(v)?,
                Some(Bind::BigInt(v)) => out.push_bind_param::<BigInt, i64>(v)?,
                None => return Err(unnumbered(self.sql)),
            }
            rest = &after[digits..];
        }
        out.push_sql(rest);
        Ok(())
    }
}

fn unnumbered(sql: &str) -> diesel::result::Error {
    diesel::result::Error::QueryBuilderError(
        format!("a placeholder without a value in: {sql}").into(),
    )
}

impl QueryId for Prepared<'_> {
    type QueryId = ();
    // No static id: diesel then keys its statement cache by the SQL text and the bind types.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Prepared<'_> {
    type SqlType = Untyped;
}

impl<Conn> RunQueryDsl<Conn> for Prepared<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::Connection;

    #[derive(diesel::QueryableByName, Debug, PartialEq)]
    struct Row {
        #[diesel(sql_type = Text)]
        a: String,
        #[diesel(sql_type = BigInt)]
        b: i64,
        #[diesel(sql_type = Text)]
        c: String,
    }

    #[test]
    fn placeholders_take_their_numbered_values_and_may_repeat() {
        let mut c = diesel::SqliteConnection::establish(":memory:").unwrap();
        let q = Prepared::new(
            "SELECT $2 AS a, $1 + $1 AS b, $2 || '$' AS c",
            &[Bind::BigInt(21), Bind::Text("x")],
        );
        let row: Row = q.get_result(&mut c).unwrap();
        assert_eq!(
            row,
            Row {
                a: "x".into(),
                b: 42,
                c: "x$".into()
            }
        );
    }

    #[test]
    fn a_placeholder_without_a_value_is_an_error() {
        let mut c = diesel::SqliteConnection::establish(":memory:").unwrap();
        for sql in ["SELECT $2 AS a", "SELECT $0 AS a"] {
            let q = Prepared::new(sql, &[Bind::Text("x")]);
            assert!(q.execute(&mut c).is_err(), "{sql}");
        }
    }
}
