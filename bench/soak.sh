#!/usr/bin/env bash
# bench/soak.sh — a bounded soak: the release server on SQLite (or PostgreSQL with SOAK_DB=postgres)
# under a steady mix of every grant and endpoint for SECS seconds (default 600), the server's RSS
# printed every 30 s, every non-2xx answer reported; exits 1 if there was any.
#
# Environment (optional): SECS=600 PORT=18083 SOAK_DB=sqlite|postgres
#   PG_URL=postgres://postgres@127.0.0.1:5432/test (a database for the run is created and dropped)
# Loopback only; bounded by SECS, stops by itself.
set -euo pipefail
SECS=${SECS:-600}
PORT=${PORT:-18083}
SOAK_DB=${SOAK_DB:-sqlite}
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if [[ $SOAK_DB == postgres ]]; then
  pg_database portcullis_soak
  export PORTCULLIS_DATABASE_URL=$PG_DB_URL
else
  export PORTCULLIS_DATABASE_URL=sqlite://$work/soak.db
fi
printf 'soak-passphrase-42\n' | "$BIN" user create --username soak --password-stdin >/dev/null
rp=$("$BIN" client create --name Soak --redirect-uri http://127.0.0.1:9/cb --scope profile \
  --grant-type authorization_code --grant-type refresh_token --json)
cc=$("$BIN" client create --name Machines --json)
start_server
echo "== soak: $SOAK_DB, ${SECS}s, server pid $pid, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) x $(nproc)"
rc=0
"$BENCH" soak "http://127.0.0.1:$PORT" "$(json_field client_id <<<"$rp")" "$(json_field client_secret <<<"$rp")" \
  http://127.0.0.1:9/cb soak soak-passphrase-42 "$(json_field client_id <<<"$cc")" \
  "$(json_field client_secret <<<"$cc")" "$SECS" "$pid" || rc=$?
if grep -E '"level":"(ERROR|error)"| ERROR ' "$SERVER_LOG" | head -n 5; then rc=1; fi
exit $rc
