#!/usr/bin/env bash
# `make loadtest`: start the service unless HOST is given, run locust headless, check the SLOs.
# Settings: HOST, USERS (8), SPAWN_RATE (4), DURATION (30s), PORT (3000), REPORTS (reports/loadtest).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
USERS=${USERS:-8} SPAWN_RATE=${SPAWN_RATE:-4} DURATION=${DURATION:-30s} PORT=${PORT:-3000}
REPORTS=${REPORTS:-reports/loadtest}
mkdir -p "$REPORTS"

if [[ -z "${HOST:-}" ]]; then
  HOST="http://127.0.0.1:$PORT"
  $BIN/python -m export.store default_model/shapes-resnet10 default_model/shapes-resnet10-int8
  setsid $BIN/bentoml serve service.service:Classifier --port "$PORT" > "$REPORTS/server.log" 2>&1 &
  SERVER=$!
  trap 'kill -- -$SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
  for _ in $(seq 1 240); do
    curl -sf "$HOST/readyz" > /dev/null && break
    kill -0 $SERVER 2>/dev/null || { tail -50 "$REPORTS/server.log"; exit 1; }
    sleep 0.5
  done
fi

$BIN/python -m models.shapes "$REPORTS/shapes" -n 60 --seed 7
LOADTEST_SHAPES="$REPORTS/shapes" $BIN/locust -f loadtest/locustfile.py --headless --host "$HOST" \
  -u "$USERS" -r "$SPAWN_RATE" -t "$DURATION" --csv "$REPORTS/locust" --html "$REPORTS/locust.html" \
  --only-summary
