#!/usr/bin/env bash
# bench/run.sh — load benchmark of Portcullis on SQLite against node-oidc-provider, interleaved
# in one time window (ours ES256, peer ES256, ours RS256, peer RS256, repeated ROUNDS times),
# with the same workloads and load generator: ../shared/peers/bench.sh and oha.
#
# Environment (all optional):
#   ROUNDS=2            interleaved rounds
#   PEERS=/tmp/peers    working copy of ../shared/peers (made if missing; never run in place)
#   PORT=18080          our server's port (the peer uses 3000)
#   OUT=bench/results/<UTC stamp>   results.tsv, raw oha JSON, logs, summary.md
#   plus bench.sh's DURATION, WARMUP, CONCURRENCY, LOADGEN_CPUS, LOADGEN_THREADS
#   SERVER_CPUS=0       pinned mode: both servers under `taskset -c 0` (with LOADGEN_CPUS=1
#                       LOADGEN_THREADS=1 for oha), openssl's rate measured on those CPUs only
# Loopback only; every run is bounded by DURATION and stops by itself.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-2}
PEERS=${PEERS:-/tmp/peers}
PORT=${PORT:-18080}
OUT=${OUT:-$root/bench/results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT/raw"

if [[ ! -d $PEERS ]]; then
  cp -r "$root/../shared/peers" "$PEERS"
fi
[[ -d $PEERS/oidc-provider/node_modules/oidc-provider ]] ||
  (cd "$PEERS/oidc-provider" && npm ci --no-audit --no-fund)
[[ -x $PEERS/.tools/bin/oha ]] || cargo install oha --locked --root "$PEERS/.tools"
(cd "$root" && cargo build --release)
BIN=$root/target/release/portcullis

work=$(mktemp -d)
pid=""
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
export PORTCULLIS_BIND=127.0.0.1:$PORT PORTCULLIS_ISSUER=http://127.0.0.1:$PORT
export PORTCULLIS_DATABASE_URL=sqlite://$work/bench.db PORTCULLIS_KEYS_DIR=$work/keys
unset PORTCULLIS_CONFIG
creds=$("$BIN" client create --name bench --scope api:read --json)
id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])' <<<"$creds")
secret=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])' <<<"$creds")

{
  echo "date: $(date -u +%FT%TZ)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) x $(nproc)"
  echo "kernel: $(uname -r)"
  echo "rustc: $(rustc --version)"
  echo "node: $(node --version)"
  echo "portcullis: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
} > "$OUT/machine.txt"

# Pinned mode: our server on SERVER_CPUS (run-oidc-provider.sh reads the same variable), and
# openssl as many processes as those CPUs.
pin=()
cpus=$(nproc)
if [[ -n ${SERVER_CPUS:-} ]]; then
  export SERVER_CPUS
  pin=(taskset -c "$SERVER_CPUS")
  cpus=$(taskset -c "$SERVER_CPUS" nproc)
fi
speed() { ${pin[@]+"${pin[@]}"} openssl speed -seconds 3 -multi "$cpus" "$@" 2>/dev/null; }

ours() {
  local alg=$1 workloads=$2
  PORTCULLIS_TOKENS__ACCESS_TOKEN_ALG=$alg RUST_LOG=warn ${pin[@]+"${pin[@]}"} "$BIN" serve >>"$OUT/ours-$alg.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
  (cd "$PEERS" && SERVER_PID=$pid LABEL="portcullis $alg" CC_SCOPE=api:read WORKLOADS=$workloads \
    RESULTS=$OUT/results.tsv RAW_DIR=$OUT/raw ./bench.sh "http://127.0.0.1:$PORT" "$id" "$secret")
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}

peer() {
  local alg=$1 dir=$OUT/peer-$2-$1
  (cd "$PEERS" && ALGS=$alg SKIP_OPENSSL=1 OUT_DIR=$dir ./run-oidc-provider.sh) > "$dir.log" 2>&1 || {
    echo "peer run failed, see $dir.log" >&2; return 1; }
  cat "$dir/results.tsv" >> "$OUT/results.tsv"
}

for round in $(seq "$ROUNDS"); do
  echo "== round $round / $ROUNDS" >&2
  ours ES256 "cc jwks discovery"
  peer ES256 "$round"
  # The machine's RSA-2048 signing rate (on the server's cores) just before our RS256 run: the RS256
  # target is a share of it, and it drifts with the shared machine's load.
  speed rsa2048 |
    { grep -E "^ *rsa +2048" || true; } | sed "s/^/round $round: /" | tee -a "$OUT/openssl-speed.txt" >&2
  ours RS256 "cc"
  peer RS256 "$round"
done

# Both signing limits once more at the end of the window.
speed rsa2048 ecdsap256 |
  { grep -E "^ *rsa +2048|^ *256 bits ecdsa" || true; } | sed "s/^/end: /" | tee -a "$OUT/openssl-speed.txt" >&2
"$PEERS/summarize.py" --max-other 10 "$OUT/results.tsv" | tee "$OUT/summary.md"
echo "# results in $OUT" >&2
