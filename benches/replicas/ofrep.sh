#!/usr/bin/env bash
# OFREP throughput of a replica on PostgreSQL against one on SQLite, in alternating rounds: evaluation reads
# only the replica's in-memory snapshot, so the two should not differ. Needs wrk and Debian's postgresql.
# Usage: bash benches/replicas/ofrep.sh [DURATION] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${1:-8s}
ROUNDS=${2:-3}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort | tail -1)
PGDIR=$(mktemp -d)
PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$PGDIR"
as_pg "$PGBIN/initdb" -D "$PGDIR/data" -U postgres --auth=trust --no-sync > /dev/null
as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -o "-c listen_addresses=127.0.0.1 -p $PGPORT -c unix_socket_directories=$PGDIR" -l "$PGDIR/log" -w start > /dev/null
trap 'as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate stop > /dev/null; rm -rf "$PGDIR"' EXIT
for round in $(seq "$ROUNDS"); do
  psql -q -h 127.0.0.1 -p "$PGPORT" -U postgres -c "CREATE DATABASE round$round"
  echo "### round $round: PostgreSQL"
  SLUICE_BENCH_DATABASE="postgres://postgres@127.0.0.1:$PGPORT/round$round" bash benches/http/run.sh "$DURATION" 32 | grep -E '^==|Requests/sec'
  echo "### round $round: SQLite"
  bash benches/http/run.sh "$DURATION" 32 | grep -E '^==|Requests/sec'
done
