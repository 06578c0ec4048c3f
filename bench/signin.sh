#!/usr/bin/env bash
# bench/signin.sh — complete sign-ins per second (login with Argon2id, consent, code, token)
# against the raw Argon2id verification rate, on SQLite and (when reachable) PostgreSQL.
# Interleaved: raw, flows, raw. Bounded: FLOWS sign-ins per run, RAW_SECS per raw run.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FLOWS=${FLOWS:-400}
THREADS=${THREADS:-4}
RAW_SECS=${RAW_SECS:-10}
PORT=${PORT:-18081}
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
# The benchmark signs in one user over and over from one address: lift the per-IP limit.
export PORTCULLIS_LOGIN__IP_MAX_FAILURES=1000000

run() {
  local label=$1
  export PORTCULLIS_DATABASE_URL=$2
  printf 'bench-passphrase-42\n' | "$BIN" user create --username bench --password-stdin >/dev/null
  local creds id secret
  creds=$("$BIN" client create --name Bench --redirect-uri http://127.0.0.1:9/cb --json)
  id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])' <<<"$creds")
  secret=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])' <<<"$creds")
  RUST_LOG=${RUST_LOG:-warn} "$BIN" serve >>"$work/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
  echo "== $label"
  "$BENCH" raw "$RAW_SECS" 2
  "$BENCH" flow "http://127.0.0.1:$PORT" "$id" "$secret" http://127.0.0.1:9/cb bench bench-passphrase-42 "$FLOWS" "$THREADS"
  "$BENCH" raw "$RAW_SECS" 2
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) x $(nproc), $(date -u +%FT%TZ)"
run "SQLite" "sqlite://$work/bench.db"
if psql "$PG_URL" -qAtc 'select 1' >/dev/null 2>&1; then
  pgdb=portcullis_bench_$$
  psql "$PG_URL" -qc "CREATE DATABASE $pgdb" >/dev/null
  run "PostgreSQL" "${PG_URL%/*}/$pgdb"
fi
