#!/usr/bin/env bash
# bench/startup.sh — start to ready on SQLite: RUNS (default 10) starts of the release binary on
# an existing database and keys folder, each timed from spawn to the first 200 from /readyz
# (polled every millisecond); prints each run and the median. Loopback only.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-10}
PORT=${PORT:-18084}
cd "$root"
cargo build --release --bin portcullis
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unset PORTCULLIS_CONFIG
export PORTCULLIS_BIND=127.0.0.1:$PORT PORTCULLIS_ISSUER=http://127.0.0.1:$PORT
export PORTCULLIS_DATABASE_URL=sqlite://$work/p.db PORTCULLIS_KEYS_DIR=$work/keys RUST_LOG=warn
"$root/target/release/portcullis" migrate >/dev/null
"$root/target/release/portcullis" keys list >/dev/null 2>&1 || true
python3 - "$root/target/release/portcullis" "$PORT" "$RUNS" <<'PY'
import http.client, statistics, subprocess, sys, time
binary, port, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def ready():
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        c.request("GET", "/readyz")
        return c.getresponse().status == 200
    except OSError:
        return False
times = []
for i in range(runs + 1):
    t0 = time.perf_counter()
    p = subprocess.Popen([binary, "serve"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not ready():
        if time.perf_counter() - t0 > 10:
            p.kill(); sys.exit("not ready within 10 s")
        time.sleep(0.001)
    ms = (time.perf_counter() - t0) * 1000
    p.terminate(); p.wait()
    if i == 0:
        print(f"first start (creates the keys): {ms:.1f} ms")
    else:
        times.append(ms); print(f"run {i}: {ms:.1f} ms")
print(f"start to ready on SQLite: median {statistics.median(times):.1f} ms, min {min(times):.1f}, max {max(times):.1f} over {runs} runs")
PY
