#!/usr/bin/env bash
# The server's own CPU per request under wrk load: what a change costs, separated from how wrk and the
# server share the cores. Needs wrk and perf (Debian: wrk, linux-perf) and a release build
# (`cargo build --release -p sluice -p sluice-bench --bin sluice --bin flagset`).
# Usage: bash benches/http/cpu-per-request.sh BINARY single|bulk|health
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$1; WHAT=$2; PORT=4391
DATA=$(mktemp -d)
export SLUICE_ADMIN_TOKEN=bench-admin-token-0123456789abcdef0123456789
$BIN serve --listen 127.0.0.1:$PORT --data-dir "$DATA" > "$DATA/log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 50); do curl -fs http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
export SLUICE_SERVER=http://127.0.0.1:$PORT SLUICE_TOKEN=$SLUICE_ADMIN_TOKEN
target/release/flagset > "$DATA/flags.json"
$BIN import flags "$DATA/flags.json" > /dev/null
export TOKEN=$($BIN token create bench --role sdk -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
export BODY='{"context":{"targetingKey":"user-42","environment":"production","tenant":"acme-corp","seats":"25","appVersion":"2.4.1","tier":"beta"}}'
case $WHAT in
  single) URL=http://127.0.0.1:$PORT/ofrep/v1/evaluate/flags/team0.feature0; S="-s benches/http/post.lua";;
  bulk) URL=http://127.0.0.1:$PORT/ofrep/v1/evaluate/flags; S="-s benches/http/post.lua";;
  health) URL=http://127.0.0.1:$PORT/healthz; S="";;
esac
perf stat -x, -e task-clock -p $SERVER -o $DATA/stat -- sleep 6 &
P=$!
REQ=$(wrk -t2 -c32 -d6s $S $URL | awk '/requests in/ {print $1}')
wait $P
MS=$(grep task-clock $DATA/stat | cut -d, -f1)
python3 -c "print(f'$WHAT {float($MS)*1000/$REQ:.2f} us CPU/request, {$REQ/6:.0f} req/s')"
