#!/usr/bin/env bash
# bench/refresh.sh — refresh-token rotation per second on SQLite and PostgreSQL, beside
# node-oidc-provider's refresh figure from ../shared/peers in the same window.
#
# Ours: CHAINS connections, each signs in once and then refreshes for SECS seconds, every request
# presenting the token the previous response returned (rotation: a read, an atomic update and an
# insert per request, plus one ES256 access token). The peer does not rotate: bench.sh replays one
# refresh token with oha (its `refresh` workload). Order: ours SQLite, peer, ours PostgreSQL, peer.
#
# Environment (optional): SECS=15 CHAINS="16 64" PORT=18082 PEERS=/tmp/peers SKIP_PEER=1
#   PG_URL=postgres://postgres@127.0.0.1:5432/test (a database per run is created and dropped)
#   PG_DB_PARAMS='?sslmode=disable' (the default: plain TCP, as to docker-compose.yml's PostgreSQL,
#   whose image has no TLS; PG_DB_PARAMS= uses libpq's default, TLS when the server offers it,
#   as this machine's Debian PostgreSQL does: about 15 % fewer rotations per second here)
# Loopback only; every run is bounded by time and stops by itself.
set -euo pipefail
SECS=${SECS:-15}
CHAINS=${CHAINS:-"16 64"}
PORT=${PORT:-18082}
PEERS=${PEERS:-/tmp/peers}
PG_DB_PARAMS=${PG_DB_PARAMS-?sslmode=disable}
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
OUT=${OUT:-$root/bench/results/refresh-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
SERVER_LOG=$OUT/server.log
if [[ ! -d $PEERS ]]; then cp -r "$root/../shared/peers" "$PEERS"; fi
[[ -d $PEERS/oidc-provider/node_modules/oidc-provider ]] ||
  (cd "$PEERS/oidc-provider" && npm ci --no-audit --no-fund)
[[ -x $PEERS/.tools/bin/oha ]] || cargo install oha --locked --root "$PEERS/.tools"

ours() {
  local label=$1
  export PORTCULLIS_DATABASE_URL=$2
  printf 'bench-passphrase-42\n' | "$BIN" user create --username bench --password-stdin >/dev/null
  local creds id secret
  creds=$("$BIN" client create --name Bench --redirect-uri http://127.0.0.1:9/cb --scope api:read \
    --grant-type authorization_code --grant-type refresh_token --json)
  id=$(json_field client_id <<<"$creds")
  secret=$(json_field client_secret <<<"$creds")
  start_server
  for c in $CHAINS; do
    printf '%s, %s chains: ' "portcullis $label" "$c"
    "$BENCH" refresh "http://127.0.0.1:$PORT" "$id" "$secret" http://127.0.0.1:9/cb bench \
      bench-passphrase-42 "$SECS" "$c"
  done
  local rss
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  echo "portcullis $label peak RSS: $((rss / 1024)) MiB"
  stop_server
}

peer() {
  [[ -n ${SKIP_PEER:-} ]] && return 0
  local dir=$OUT/peer-$1
  (cd "$PEERS" && ALGS=ES256 ALL_WORKLOADS_ALG=none SKIP_OPENSSL=1 DURATION=${SECS}s \
    CONCURRENCY="$CHAINS" OUT_DIR=$dir ./run-oidc-provider.sh) > "$dir.log" 2>&1 || {
    echo "peer run failed, see $dir.log" >&2; return 1; }
  grep -i refresh "$dir/table.md" || cat "$dir/table.md"
}

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) x $(nproc), $(date -u +%FT%TZ), portcullis $(git rev-parse --short HEAD)"
ours SQLite "sqlite://$work/bench.db"
peer 1
if pg_database portcullis_refresh; then
  ours PostgreSQL "$PG_DB_URL"
  peer 2
else
  echo "PostgreSQL not reachable at $PG_URL: skipped" >&2
fi
