#!/usr/bin/env bash
# The soak (benches/sluice-bench/src/bin/soak.rs): `sluice serve` under OFREP at a fixed rate, built-in
# ingestion, ticking rollouts, admin writes and change-stream clients at once; pass or fail on failed
# requests, the p99 against the unloaded p99, RSS growth and the audit chain.
# Usage: bash benches/soak/run.sh [SECONDS RATE OBSERVATIONS_PER_S ROLLOUTS STREAMS]
#   full (BENCHMARKS.md): bash benches/soak/run.sh          → 600 s, 10,000 OFREP/s, 50,000 obs/s, 100, 100
#   CI:   SLUICE_BENCH_PROFILE=dev bash benches/soak/run.sh 30 500 2000 10 10
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${SLUICE_BENCH_PROFILE:-release}
cargo build --profile "$PROFILE" -q -p sluice --bin sluice -p sluice-bench --bin soak
BIN=target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
"$BIN/soak" "${1:-600}" "${2:-10000}" "${3:-50000}" "${4:-100}" "${5:-100}" "$BIN/sluice"
