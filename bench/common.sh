# bench/common.sh — sourced by signin.sh, refresh.sh and soak.sh (set PORT first): builds the
# release server and the load program, makes a scratch folder removed on exit (KEEP=1 keeps it)
# with any PostgreSQL database made for the run, and points the server at 127.0.0.1:$PORT.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/test}
cd "$root"
cargo build --release --bin portcullis --example signin_bench
BIN=$root/target/release/portcullis
BENCH=$root/target/release/examples/signin_bench
work=$(mktemp -d)
pid=""
pgdb=""
cleanup() {
  [[ -n $pid ]] && kill "$pid" 2>/dev/null || true
  [[ -n $pgdb ]] && psql "$PG_URL" -qc "DROP DATABASE IF EXISTS $pgdb WITH (FORCE)" >/dev/null 2>&1 || true
  [[ -n ${KEEP:-} ]] || rm -rf "$work"
}
trap cleanup EXIT
unset PORTCULLIS_CONFIG
export PORTCULLIS_BIND=127.0.0.1:$PORT PORTCULLIS_ISSUER=http://127.0.0.1:$PORT
export PORTCULLIS_KEYS_DIR=$work/keys
SERVER_LOG=${SERVER_LOG:-$work/server.log}

# json_field KEY < JSON: one field of a JSON object.
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

# pg_database NAME: create a database for this run (dropped on exit) and set PG_DB_URL, with
# $PG_DB_PARAMS appended (e.g. ?sslmode=disable); fails if PostgreSQL is not reachable at $PG_URL.
pg_database() {
  psql "$PG_URL" -qAtc 'select 1' >/dev/null 2>&1 || return 1
  pgdb=${1}_$$
  psql "$PG_URL" -qc "CREATE DATABASE $pgdb" >/dev/null
  PG_DB_URL=${PG_URL%/*}/$pgdb${PG_DB_PARAMS:-}
}

# start_server: serve in the background (pid in $pid, log in $SERVER_LOG) and wait until ready.
start_server() {
  RUST_LOG=${RUST_LOG:-warn} "$BIN" serve >>"$SERVER_LOG" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
}

stop_server() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }
