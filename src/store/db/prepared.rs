//! Raw SQL that the connection keeps as a prepared statement.
//!
//! diesel never caches `sql_query` (its text may differ on every call), so PostgreSQL parses
//! and plans it each time: for the one-statement refresh rotation that was over 40 % of the
//! database's CPU. [`Prepared`] is for fixed SQL text only: diesel caches it by its text and
//! bind types, and PostgreSQL moves to a generic plan after a few executions.
//!
//! A statement run often names its text by a type ([`FixedSql`], [`Prepared::fixed`]): diesel
//! then keys its cache by that type and neither rebuilds, hashes nor compares the text on each
//! execution (for the audit log's 32-row INSERT, 3 KB of SQL, that was a quarter of the audit
//! writer's CPU).

use std::marker::PhantomData;

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

/// A statement's SQL text named by a type: one type, one text, for the life of the process (the
/// type is the statement's key in every connection's cache).
pub(crate) trait FixedSql: 'static {
    /// The text, with numbered placeholders.
    fn sql() -> &'static str;
}

/// Declare a [`FixedSql`] type for a literal SQL text.
macro_rules! fixed_sql {
    ($(#[$doc:meta])* $name:ident, $sql:expr) => {
        $(#[$doc])*
        pub(crate) enum $name {}
        impl $crate::store::db::prepared::FixedSql for $name {
            fn sql() -> &'static str {
                $sql
            }
        }
    };
}
pub(crate) use fixed_sql;

/// The cache key of statements whose text is only known as a string: the text itself.
#[derive(Debug)]
pub(crate) enum ByText {}

/// How diesel keys a [`Prepared`] statement in its cache.
pub(crate) trait CacheKey: 'static {
    /// By this type (true) or by the SQL text and bind types (false).
    const BY_TYPE: bool;
}

impl CacheKey for ByText {
    const BY_TYPE: bool = false;
}

impl<S: FixedSql> CacheKey for S {
    const BY_TYPE: bool = true;
}

/// A fixed SQL text with numbered placeholders (`$1`, `$2`, …, each may appear several times) and
/// their values in order.
#[derive(Debug, Clone)]
pub(crate) struct Prepared<'a, K = ByText> {
    sql: &'static str,
    binds: Vec<Bind<'a>>,
    key: PhantomData<K>,
}

impl<'a> Prepared<'a> {
    /// `sql` keyed by its text.
    pub(crate) fn new(sql: &'static str, binds: &[Bind<'a>]) -> Self {
        Self {
            sql,
            binds: binds.to_vec(),
            key: PhantomData,
        }
    }
}

impl<'a, S: FixedSql> Prepared<'a, S> {
    /// `S`'s text, keyed by `S`.
    pub(crate) fn fixed(binds: Vec<Bind<'a>>) -> Self {
        Self {
            sql: S::sql(),
            binds,
            key: PhantomData,
        }
    }
}

impl<'a, K, DB> QueryFragment<DB> for Prepared<'a, K>
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

impl<K: CacheKey> QueryId for Prepared<'_, K> {
    type QueryId = K;
    // Without a type of its own diesel keys the statement by its SQL text and bind types.
    const HAS_STATIC_QUERY_ID: bool = K::BY_TYPE;
}

impl<K> Query for Prepared<'_, K> {
    type SqlType = Untyped;
}

impl<K, Conn> RunQueryDsl<Conn> for Prepared<'_, K> {}

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

    fixed_sql!(Doubled, "SELECT $2 AS a, $1 + $1 AS b, $2 || '$' AS c");
    fixed_sql!(Tripled, "SELECT $2 || $2 AS a, $1 * 3 AS b, 'z' AS c");

    /// Counts the statements diesel prepares for its cache.
    #[derive(Default)]
    struct Prepares(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl diesel::connection::Instrumentation for Prepares {
        fn on_connection_event(&mut self, event: diesel::connection::InstrumentationEvent<'_>) {
            if let diesel::connection::InstrumentationEvent::CacheQuery { .. } = event {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }

    #[test]
    fn fixed_statements_are_prepared_once_each_and_never_mixed_up() {
        let mut c = diesel::SqliteConnection::establish(":memory:").unwrap();
        let count = Prepares::default();
        let prepared = count.0.clone();
        c.set_instrumentation(count);
        for i in 0..5 {
            let x = format!("x{i}");
            let doubled: Row = Prepared::<Doubled>::fixed(vec![Bind::BigInt(i), Bind::Text(&x)])
                .get_result(&mut c)
                .unwrap();
            let (a, b, c2) = (x.clone(), 2 * i, format!("{x}$"));
            assert_eq!(doubled, Row { a, b, c: c2 });
            let tripled: Row = Prepared::<Tripled>::fixed(vec![Bind::BigInt(i), Bind::Text(&x)])
                .get_result(&mut c)
                .unwrap();
            let (a, b) = (format!("{x}{x}"), 3 * i);
            assert_eq!(
                tripled,
                Row {
                    a,
                    b,
                    c: "z".into()
                }
            );
        }
        // The same text keyed by its text is a third entry, and agrees with the fixed one.
        let by_text: Row = Prepared::new(Doubled::sql(), &[Bind::BigInt(4), Bind::Text("y")])
            .get_result(&mut c)
            .unwrap();
        assert_eq!(by_text.b, 8);
        assert_eq!(prepared.load(std::sync::atomic::Ordering::SeqCst), 3);
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
