#!/usr/bin/env bash
# bench/soak.sh — a bounded soak: the release server on SQLite (or PostgreSQL with SOAK_DB=postgres)
# under a steady mix of every grant and endpoint for SECS seconds (default 600), the server's RSS
# printed every 30 s, every non-2xx answer reported; exits 1 if there was any.
#
# Environment (optional): SECS=600 PORT=18083 SOAK_DB=sqlite|postgres
#   PG_URL=postgres://postgres@127.0.0.1:5432/test (a database for the run is created and dropped)
# Loopback only; bounded by SECS, stops by itself.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECS=${SECS:-600}
PORT=${PORT:-18083}
SOAK_DB=${SOAK_DB:-sqlite}
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
  rm -rf "$work"
}
trap cleanup EXIT
unset PORTCULLIS_CONFIG
export PORTCULLIS_BIND=127.0.0.1:$PORT PORTCULLIS_ISSUER=http://127.0.0.1:$PORT
export PORTCULLIS_KEYS_DIR=$work/keys
if [[ $SOAK_DB == postgres ]]; then
  pgdb=portcullis_soak_$$
  psql "$PG_URL" -qc "CREATE DATABASE $pgdb"
  export PORTCULLIS_DATABASE_URL=${PG_URL%/*}/$pgdb
else
  export PORTCULLIS_DATABASE_URL=sqlite://$work/soak.db
fi
printf 'soak-passphrase-42\n' | "$BIN" user create --username soak --password-stdin >/dev/null
json() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
rp=$("$BIN" client create --name Soak --redirect-uri http://127.0.0.1:9/cb --scope profile \
  --grant-type authorization_code --grant-type refresh_token --json)
cc=$("$BIN" client create --name Machines --json)
RUST_LOG=warn "$BIN" serve >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
echo "== soak: $SOAK_DB, ${SECS}s, server pid $pid, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) x $(nproc)"
rc=0
"$BENCH" soak "http://127.0.0.1:$PORT" "$(json client_id <<<"$rp")" "$(json client_secret <<<"$rp")" \
  http://127.0.0.1:9/cb soak soak-passphrase-42 "$(json client_id <<<"$cc")" \
  "$(json client_secret <<<"$cc")" "$SECS" "$pid" || rc=$?
if grep -E '"level":"(ERROR|error)"| ERROR ' "$work/server.log" | head -n 5; then rc=1; fi
exit $rc
