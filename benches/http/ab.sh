#!/usr/bin/env bash
# OFREP throughput of an earlier `sluice` binary against this tree's, in alternating rounds on the same
# machine, and each run's single ÷ ceiling: the ratio that must stay within 0.05 of the earlier build's
# when evaluation code is not meant to change. Needs wrk.
# Usage: bash benches/http/ab.sh OLD_BINARY [ROUNDS] [DURATION]
# (an earlier build: `git worktree add /tmp/base COMMIT && cd /tmp/base && CARGO_TARGET_DIR=… cargo build --release -p sluice`)
set -euo pipefail
cd "$(dirname "$0")/../.."
OLD=${1:?the earlier sluice binary}
ROUNDS=${2:-3}
DURATION=${3:-8s}
rate() { grep -A3 "== $1" | grep Requests/sec | awk '{print $2}'; }
run() {
  local out
  out=$(SLUICE_BENCH_SERVER=$1 bash benches/http/run.sh "$DURATION" 32)
  local ceiling single bulk
  ceiling=$(echo "$out" | rate ceiling)
  single=$(echo "$out" | rate "OFREP single")
  bulk=$(echo "$out" | rate "OFREP bulk")
  python3 -c "import sys; c,s,b=map(float,sys.argv[1:4]); print(f'{sys.argv[4]:>4}: ceiling {c:9.0f}  single {s:9.0f}  bulk {b:7.0f}  single/ceiling {s/c:.3f}')" "$ceiling" "$single" "$bulk" "$2"
}
cargo build --release -q -p sluice --bin sluice
for round in $(seq "$ROUNDS"); do
  echo "### round $round"
  run "$OLD" old
  run target/release/sluice new
done
