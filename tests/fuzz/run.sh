#!/usr/bin/env bash
# Bounded coverage-guided fuzzing of every target (libFuzzer through cargo fuzz, nightly):
#   tests/fuzz/run.sh [seconds per target, default 60] [target ...]
# The corpus grows in target/fuzz-corpus/<target> (not committed); seeds are in seeds/<target>.
# A crash stops the run with libFuzzer's report; copy the input it names into
# regressions/<target>/ so that `cargo test` (fuzzing::tests) replays it from then on.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
secs="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(token_request authorization_request client_auth jwt_verification)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for t in "${targets[@]}"; do
  corpus="../../target/fuzz-corpus/$t"
  mkdir -p "$corpus" "regressions/$t"
  echo "== fuzz $t for ${secs}s"
  log="../../target/fuzz-$t.log"
  rc=0
  cargo +nightly fuzz run --fuzz-dir . "$t" "$corpus" "seeds/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -artifact_prefix="regressions/$t/" \
    -print_final_stats=1 >"$log" 2>&1 || rc=$?
  grep -E "^(Done|stat::number_of_executed_units|stat::new_units_added|stat::peak_rss_mb)" "$log" || true
  grep -E "^#[0-9]+ +DONE" "$log" | tail -n 1 || true
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$log"
    echo "!! $t failed (exit $rc); a failing input is saved in regressions/$t/, see $log" && exit 1
  fi
done
