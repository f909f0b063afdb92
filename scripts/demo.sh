#!/usr/bin/env bash
# Starts both services against the loopback servers of `make services`, plays the seed's
# inventory.products scenario (target/release/demo scenario), then keeps them running until
# Ctrl-C, which stops what this script started (the servers stay up: `make services-down`).
# Usage: scripts/demo.sh [--load RATE]   (--load: also write RATE changes/s into inventory.orders)
set -euo pipefail
LOAD_RATE=""
if [ "${1:-}" = "--load" ]; then LOAD_RATE=${2:?--load needs a rate (writes per second)}; fi
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC1091
source "$ROOT/.cache/services.env"
LOGS="$ROOT/.cache/demo"
mkdir -p "$LOGS"
BIN="$ROOT/target/release"
SOURCE_HTTP=${SOURCE_HTTP:-127.0.0.1:8081}
SINK_HTTP=${SINK_HTTP:-127.0.0.1:8082}

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "demo: stopping the services"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait || true
  echo "demo: stopped (servers still up; 'make services-down' stops them)"
  exit 0
}
trap stop INT TERM EXIT

# The demo captures the `inventory` database into topics `demo.inventory.<collection>`.
CDC_SOURCE__HTTP__LISTEN_ADDR=$SOURCE_HTTP CDC_SOURCE__MONGO__URI=$MONGO_SOURCE_URI \
CDC_SOURCE__CAPTURE__NAME=demo CDC_SOURCE__CAPTURE__SCOPE=database CDC_SOURCE__CAPTURE__DATABASE=inventory \
CDC_SOURCE__TOPICS__PREFIX=demo \
CDC_SOURCE__KAFKA__BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP "$BIN/cdc-source" >"$LOGS/cdc-source.log" 2>&1 &
pids+=($!)
SINK_WRITER__HTTP__LISTEN_ADDR=$SINK_HTTP SINK_WRITER__MONGO__URI=$MONGO_TARGET_URI \
SINK_WRITER__CONSUME__TOPICS='^demo\..*' SINK_WRITER__CONSUME__GROUP_ID=demo-sink \
SINK_WRITER__CONSUME__DEAD_LETTER_TOPIC=demo.dlq \
SINK_WRITER__KAFKA__BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP "$BIN/sink-writer" >"$LOGS/sink-writer.log" 2>&1 &
pids+=($!)

wait_ready() {
  local name=$1 addr=$2 deadline=$((SECONDS + 60))
  until curl -fsS "http://$addr/health/readyz" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "demo: $name not ready after 60 s; its log:"; tail -20 "$LOGS/$name.log"; exit 1; }
    sleep 0.3
  done
  echo "demo: $name ready"
}
wait_ready cdc-source "$SOURCE_HTTP"
wait_ready sink-writer "$SINK_HTTP"

"$BIN/demo" scenario demo
if [ -n "$LOAD_RATE" ]; then
  "$BIN/demo" load "$LOAD_RATE" >"$LOGS/load.log" 2>&1 &
  pids+=($!)
  echo
  echo "demo: a steady load of $LOAD_RATE writes/s runs into inventory.orders (log: $LOGS/load.log)"
  echo "      watch: curl -s http://$SINK_HTTP/metrics | grep -E 'sink_writer_(documents_applied_total|replication_lag_seconds)'"
fi

cat <<TXT

  source MongoDB   $MONGO_SOURCE_URI
  target MongoDB   $MONGO_TARGET_URI
  Kafka            $KAFKA_BOOTSTRAP
  cdc-source       http://$SOURCE_HTTP/health/readyz  http://$SOURCE_HTTP/metrics   log: $LOGS/cdc-source.log
  sink-writer      http://$SINK_HTTP/health/readyz  http://$SINK_HTTP/metrics   log: $LOGS/sink-writer.log

Press Ctrl-C to stop.
TXT
wait
