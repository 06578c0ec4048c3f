#!/usr/bin/env bash
# bench/signin.sh — complete sign-ins per second (login with Argon2id, consent, code, token)
# against the raw Argon2id verification rate, on SQLite and (when reachable) PostgreSQL.
# Interleaved: raw, flows, raw. Bounded: FLOWS sign-ins per run, RAW_SECS per raw run.
set -euo pipefail
FLOWS=${FLOWS:-400}
THREADS=${THREADS:-4}
RAW_SECS=${RAW_SECS:-10}
PORT=${PORT:-18081}
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# The benchmark signs in one user over and over from one address: lift the per-IP limit.
export PORTCULLIS_LOGIN__IP_MAX_FAILURES=1000000

run() {
  local label=$1
  export PORTCULLIS_DATABASE_URL=$2
  printf 'bench-passphrase-42\n' | "$BIN" user create --username bench --password-stdin >/dev/null
  local creds id secret
  creds=$("$BIN" client create --name Bench --redirect-uri http://127.0.0.1:9/cb --json)
  id=$(json_field client_id <<<"$creds")
  secret=$(json_field client_secret <<<"$creds")
  start_server
  echo "== $label"
  "$BENCH" raw "$RAW_SECS" 2
  "$BENCH" flow "http://127.0.0.1:$PORT" "$id" "$secret" http://127.0.0.1:9/cb bench bench-passphrase-42 "$FLOWS" "$THREADS"
  "$BENCH" raw "$RAW_SECS" 2
  stop_server
}

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) x $(nproc), $(date -u +%FT%TZ)"
run "SQLite" "sqlite://$work/bench.db"
if pg_database portcullis_bench; then
  run "PostgreSQL" "$PG_DB_URL"
fi
