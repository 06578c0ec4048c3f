//! `migrations/sqlite` and `migrations/postgres` reach the same schema.

use std::collections::BTreeSet;

use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};

use crate::common::{postgres_available, PgDatabase};

#[derive(QueryableByName, Debug)]
struct Column {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    data_type: String,
    #[diesel(sql_type = Integer)]
    not_null: i32,
    #[diesel(sql_type = Integer)]
    pk: i32,
}

#[derive(QueryableByName, Debug)]
struct Index {
    #[diesel(sql_type = Text)]
    name: String,
}

/// (table, column, normalised type, not null, part of primary key)
type Shape = BTreeSet<(String, String, String, bool, bool)>;

fn normalise(t: &str) -> String {
    match t.to_ascii_lowercase().as_str() {
        "text" => "text".into(),
        "bigint" | "int8" => "bigint".into(),
        "integer" | "int4" | "int" => "integer".into(),
        "boolean" | "bool" => "boolean".into(),
        other => other.into(),
    }
}

fn migrate(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::common::portcullis_command()
        .current_dir(dir.path())
        .env("PORTCULLIS_DATABASE_URL", url)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sqlite_and_postgres_migrations_reach_the_same_schema() {
    if !postgres_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sqlite_path = dir.path().join("schema.db");
    migrate(&format!("sqlite://{}", sqlite_path.display()));
    let pg = PgDatabase::create();
    migrate(&pg.url);

    let mut lite = SqliteConnection::establish(sqlite_path.to_str().unwrap()).unwrap();
    let lite_cols: Vec<Column> = diesel::sql_query(
        "SELECT m.name AS table_name, p.name AS column_name, p.type AS data_type, \
         p.\"notnull\" AS not_null, CASE WHEN p.pk > 0 THEN 1 ELSE 0 END AS pk \
         FROM sqlite_master m JOIN pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' \
         AND m.name <> '__diesel_schema_migrations'",
    )
    .load(&mut lite)
    .unwrap();
    let lite_idx: Vec<Index> = diesel::sql_query(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL",
    )
    .load(&mut lite)
    .unwrap();

    let mut pgc = PgConnection::establish(&pg.url).unwrap();
    let pg_cols: Vec<Column> = diesel::sql_query(
        "SELECT c.table_name::text AS table_name, c.column_name::text AS column_name, \
         c.data_type::text AS data_type, \
         CASE WHEN c.is_nullable = 'NO' THEN 1 ELSE 0 END AS not_null, \
         CASE WHEN EXISTS (SELECT 1 FROM information_schema.key_column_usage k \
              JOIN information_schema.table_constraints t ON t.constraint_name = k.constraint_name \
              WHERE t.constraint_type = 'PRIMARY KEY' AND k.table_name = c.table_name \
              AND k.column_name = c.column_name) THEN 1 ELSE 0 END AS pk \
         FROM information_schema.columns c \
         WHERE c.table_schema = 'public' AND c.table_name <> '__diesel_schema_migrations'",
    )
    .load(&mut pgc)
    .unwrap();
    let pg_idx: Vec<Index> = diesel::sql_query(
        "SELECT indexname::text AS name FROM pg_indexes WHERE schemaname = 'public' \
         AND indexname NOT LIKE '%_pkey' AND tablename <> '__diesel_schema_migrations'",
    )
    .load(&mut pgc)
    .unwrap();

    let shape = |cols: Vec<Column>| -> Shape {
        cols.into_iter()
            .map(|c| {
                (
                    c.table_name,
                    c.column_name,
                    normalise(&c.data_type),
                    c.not_null == 1 || c.pk == 1,
                    c.pk == 1,
                )
            })
            .collect()
    };
    let lite_shape = shape(lite_cols);
    assert!(!lite_shape.is_empty());
    assert_eq!(lite_shape, shape(pg_cols));
    let names = |v: Vec<Index>| v.into_iter().map(|i| i.name).collect::<BTreeSet<_>>();
    assert_eq!(names(lite_idx), names(pg_idx));

    // Same migration names in both folders.
    let listing = |p: &str| {
        std::fs::read_dir(p)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(listing("migrations/sqlite"), listing("migrations/postgres"));
}
