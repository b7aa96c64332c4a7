#!/usr/bin/env bash
# OFREP with 10 environments × 350 flags against 1 × 350, in alternating rounds (issue 26): two servers of
# the same release build, one with the environment `production` only and one with nine more, each holding
# the same 350 generated flags enabled with their own state (`sluice import flags --env`). wrk asks each in
# turn, single then bulk, with an sdk token of one environment; then the memory each extra environment takes
# (resident set of the 10-environment server less the 1-environment one, ÷ 9).
# Usage: bash benches/http/envs.sh [ROUNDS] [DURATION] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-5}
DURATION=${2:-10s}
CONNS=${3:-32}
PROFILE=${SLUICE_BENCH_PROFILE:-release}
cargo build --profile "$PROFILE" -q -p sluice -p sluice-bench --bin sluice --bin flagset
BIN=target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
WORK=$(mktemp -d)
export SLUICE_ADMIN_TOKEN=bench-admin-token-0123456789abcdef0123456789 SLUICE_TOKEN=bench-admin-token-0123456789abcdef0123456789
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; rm -rf "$WORK"' EXIT
$BIN/flagset > "$WORK/flags.json"
BODY='{"context":{"targetingKey":"user-42","environment":"production","tenant":"acme-corp","seats":"25","appVersion":"2.4.1","tier":"beta"}}'
export BODY

# serve NAME PORT ENVIRONMENTS: a server whose environments each hold the 350 flags; writes an sdk token of
# the last environment to $WORK/NAME/token.
serve() {
  local name=$1 port=$2 envs=$3
  mkdir -p "$WORK/$name"
  $BIN/sluice serve --listen 127.0.0.1:$port --data-dir "$WORK/$name" > "$WORK/$name/serve.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 50); do curl -fs http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
  export SLUICE_SERVER=http://127.0.0.1:$port
  $BIN/sluice import flags "$WORK/flags.json" > /dev/null
  local env=production
  for i in $(seq 2 "$envs"); do
    env=env$i
    $BIN/sluice env create "$env" > /dev/null
    $BIN/sluice import flags "$WORK/flags.json" --env "$env" > /dev/null
  done
  $BIN/sluice token create "bench-$name" --role sdk --env "$env" -o json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' > "$WORK/$name/token"
}
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

serve one 4381 1
serve ten 4382 10
ONE_TOKEN=$(cat "$WORK/one/token")
TEN_TOKEN=$(cat "$WORK/ten/token")
# SLUICE_BENCH_RESTART=1: both servers start again on their stores before the rounds, so each holds its
# environments as loaded rather than as built by 3,500 imported writes (whose freed memory stays mapped).
if [ "${SLUICE_BENCH_RESTART:-0}" = 1 ]; then
  kill "${PIDS[@]}"; wait "${PIDS[@]}" 2>/dev/null || true
  PIDS=()
  for pair in one:4381 ten:4382; do
    name=${pair%%:*} port=${pair##*:}
    $BIN/sluice serve --listen 127.0.0.1:$port --data-dir "$WORK/$name" >> "$WORK/$name/serve.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 50); do curl -fs http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
  done
fi
echo "servers ready: 1 environment (pid ${PIDS[0]}), 10 environments (pid ${PIDS[1]})"

# run PORT TOKEN PATH: one wrk round; prints req/s and p99.
run() {
  TOKEN=$2 wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s benches/http/post.lua "http://127.0.0.1:$1$3" \
    | awk '/Requests\/sec/ {rps=$2} /^ +99%/ {p99=$2} /Non-2xx/ {bad=$0} END {printf "%s req/s, p99 %s %s", rps, p99, bad}'
}
for r in $(seq "$ROUNDS"); do
  for kind in single bulk; do
    path=/ofrep/v1/evaluate/flags; [ $kind = single ] && path=/ofrep/v1/evaluate/flags/team0.feature0
    echo "round $r $kind  1 env: $(run 4381 "$ONE_TOKEN" $path)"
    echo "round $r $kind 10 env: $(run 4382 "$TEN_TOKEN" $path)"
  done
done
one=$(rss_mib "${PIDS[0]}"); ten=$(rss_mib "${PIDS[1]}")
echo "RSS after the rounds: 1 environment ${one} MiB, 10 environments ${ten} MiB; per extra environment $(python3 -c "print(round(($ten - $one) / 9, 2))") MiB"
