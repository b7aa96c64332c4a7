#!/usr/bin/env bash
# HTTP load on loopback: OFREP single and bulk (350 flags) against `sluice serve` (release build), and a
# constant-body endpoint of the same server (/healthz) as the ceiling. Needs wrk (Debian: apt-get install wrk).
# Usage: bash benches/http/run.sh [DURATION] [CONNECTIONS]
# SLUICE_BENCH_PROFILE=dev runs the debug build instead (CI's smoke run: checks the script, not the speed).
# SLUICE_BENCH_SERVER=PATH serves with another `sluice` binary (an A/B against an earlier build).
# SLUICE_BENCH_DATABASE=postgres://… serves from that (empty) database instead of a new SQLite file.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${1:-10s}
CONNS=${2:-32}
PORT=${SLUICE_BENCH_PORT:-4377}
PROFILE=${SLUICE_BENCH_PROFILE:-release}
cargo build --profile "$PROFILE" -q -p sluice -p sluice-bench --bin sluice --bin flagset
BIN=target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
DATA=$(mktemp -d)
export SLUICE_ADMIN_TOKEN=bench-admin-token-0123456789abcdef0123456789
STORE=(--data-dir "$DATA")
if [ -n "${SLUICE_BENCH_DATABASE:-}" ]; then STORE=(--database "$SLUICE_BENCH_DATABASE"); fi
${SLUICE_BENCH_SERVER:-$BIN/sluice} serve --listen 127.0.0.1:$PORT "${STORE[@]}" > "$DATA/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 50); do curl -fs http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
export SLUICE_SERVER=http://127.0.0.1:$PORT SLUICE_TOKEN=$SLUICE_ADMIN_TOKEN
$BIN/flagset > "$DATA/flags.json"
$BIN/sluice import flags "$DATA/flags.json" > /dev/null
TOKEN=$($BIN/sluice token create bench --role sdk -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
export TOKEN
export BODY='{"context":{"targetingKey":"user-42","environment":"production","tenant":"acme-corp","seats":"25","appVersion":"2.4.1","tier":"beta"}}'
echo "== ceiling: GET /healthz (constant body)"
wrk -t2 -c"$CONNS" -d"$DURATION" --latency http://127.0.0.1:$PORT/healthz | grep -E 'Requests/sec|^\s+(50|99)%'
echo "== OFREP single: POST /ofrep/v1/evaluate/flags/team0.feature0"
wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s benches/http/post.lua http://127.0.0.1:$PORT/ofrep/v1/evaluate/flags/team0.feature0 | grep -E 'Requests/sec|^\s+(50|99)%|Non-2xx'
echo "== OFREP bulk: POST /ofrep/v1/evaluate/flags (350 flags)"
wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s benches/http/post.lua http://127.0.0.1:$PORT/ofrep/v1/evaluate/flags | grep -E 'Requests/sec|^\s+(50|99)%|Non-2xx'
