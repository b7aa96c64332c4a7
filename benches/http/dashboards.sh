#!/usr/bin/env bash
# The dashboard's speed: its first load with 100 flags and 20 active rollouts (headless Chromium, from the
# reload to the page's table drawn, median of 7), and OFREP single throughput alone and with 10 dashboards
# following the change stream (alternating rounds). Needs wrk, Chromium and `npm ci`.
# Usage: bash benches/http/dashboards.sh [DURATION] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${1:-8s}
ROUNDS=${2:-3}
PORT=${SLUICE_BENCH_PORT:-4378}
cargo build --release -q -p sluice
BIN=target/release/sluice
DATA=$(mktemp -d)
export SLUICE_ADMIN_TOKEN=bench-admin-token-0123456789abcdef0123456789
$BIN serve --listen 127.0.0.1:$PORT --data-dir "$DATA" > "$DATA/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 50); do curl -fs http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
export SLUICE_SERVER=http://127.0.0.1:$PORT SLUICE_TOKEN=$SLUICE_ADMIN_TOKEN
for i in $(seq 0 99); do $BIN flag create "team$((i / 10)).feature$i" --percent 0 > /dev/null; done
ID=""
for i in $(seq 0 19); do
  cat > "$DATA/plan$i.yaml" <<PLAN
name: ramp-$i
flag: team$((i / 10)).feature$i
analysis: { interval: 1s }
gates:
  - { name: errors, metric: error_rate, below: 0.01, min_samples: 50 }
phases:
  - { percent: 10, hold: 1h }
  - { percent: 100 }
PLAN
  ID=$($BIN rollout start "$DATA/plan$i.yaml" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
done
OPERATOR=$($BIN token create bench-operator --role operator -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
export TOKEN=$($BIN token create bench --role sdk -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
export BODY='{"context":{"targetingKey":"user-42"}}'
CHROMIUM=$(command -v chromium || command -v chromium-browser)
echo "== first load, 100 flags and 20 active rollouts (ms)"
node benches/http/dashboards.mjs first-load http://127.0.0.1:$PORT "$OPERATOR" "$CHROMIUM" "$ID"
for r in $(seq "$ROUNDS"); do
  echo "== round $r: OFREP single alone"
  wrk -t2 -c32 -d"$DURATION" -s benches/http/post.lua http://127.0.0.1:$PORT/ofrep/v1/evaluate/flags/team0.feature0 | grep -E 'Requests/sec'
  echo "== round $r: OFREP single with 10 dashboards following 20 rollouts ticking every second"
  node benches/http/dashboards.mjs follow http://127.0.0.1:$PORT "$OPERATOR" "$ID" 10 "${DURATION%s}" > "$DATA/follow.json" &
  FOLLOW=$!
  sleep 0.5
  wrk -t2 -c32 -d"$DURATION" -s benches/http/post.lua http://127.0.0.1:$PORT/ofrep/v1/evaluate/flags/team0.feature0 | grep -E 'Requests/sec'
  wait $FOLLOW
  cat "$DATA/follow.json"
done
