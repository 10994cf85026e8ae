#!/usr/bin/env bash
# The Redis bus against the in-process one, side by side in one run: result latency at
# 1,000 results/s to 100 subscribers (one process, then producer + Redis + edge), the
# rate one producer publishes and one edge takes in with their CPU per result, and two
# edges on one host. Starts its own redis-server (installed from Debian when missing) on
# a free port in a temporary directory and stops it by its PID.
#
#   perf/bus.sh                 everything
#   DURATION=10 perf/bus.sh     a shorter measured window (default 20 s)
#   RATES="50000 100000"        the throughput steps (results/s asked of the firehose)
#   SERVER_CORES=0,1            where the servers and Redis run (default 0)
#   ONLY_THROUGHPUT=1           the throughput steps alone
#
# Servers and Redis run on core 0, the load generator on core 1 (taskset).
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh

DURATION=${DURATION:-20}
WARMUP=${WARMUP:-3}
RATES=${RATES:-"25000 50000 100000 200000"}
OUT=perf/results
mkdir -p "$OUT"
cargo build --release -q -p scanstream -p loadgen
BIN=target/release

if ! command -v redis-server >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
fi
DIR=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }


REDIS_PORT=$(free_port)
taskset -c "${SERVER_CORES:-0}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$DIR" \
    --appendonly yes --appendfsync everysec --save '' >"$DIR/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
wait_port "$REDIS_PORT"
BUS="redis://127.0.0.1:$REDIS_PORT"

# scanstream PORT ARGS...: a server on the server cores; sets PID.
scanstream() {
    local port=$1
    shift
    taskset -c "${SERVER_CORES:-0}" "$BIN/scanstream" --listen "127.0.0.1:$port" --log warn "$@" >>"$DIR/server.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    wait_port "$port"
}

stop() {
    kill -INT "$@" 2>/dev/null || true
    for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

# loadgen URL CLIENTS PID OUT: 100 subscribers' latency, saved as one JSON row.
loadgen() {
    taskset -c 1 "$BIN/loadgen" --url "$1" --clients "$2" --warmup "$WARMUP" \
        --duration "$DURATION" --server-pid "$3" --json >"$4" || true
}

if [ -z "${ONLY_THROUGHPUT:-}" ]; then
echo "== latency: 1,000 results/s to 100 subscribers"
PORT=$(free_port)
scanstream "$PORT" --source firehose:1000
loadgen "ws://127.0.0.1:$PORT/stream" 100 "$PID" "$OUT/bus-latency-local.json"
stop "$PID"

redis-cli -p "$REDIS_PORT" flushall >/dev/null
PPORT=$(free_port)
scanstream "$PPORT" --source firehose:1000 --bus "$BUS" --role producer
PRODUCER=$PID
EPORT=$(free_port)
scanstream "$EPORT" --bus "$BUS" --role edge
EDGE=$PID
loadgen "ws://127.0.0.1:$EPORT/stream" 100 "$EDGE" "$OUT/bus-latency-redis.json"
python3 perf/report.py row latency "$OUT/bus-latency-redis.json" "$OUT/bus-latency-local.json" \
    "through Redis" "in-process"

echo "== two edges on one host, 100 subscribers each"
E2PORT=$(free_port)
scanstream "$E2PORT" --bus "$BUS" --role edge
EDGE2=$PID
taskset -c 1 "$BIN/loadgen" --url "ws://127.0.0.1:$E2PORT/stream" --clients 100 --warmup "$WARMUP" \
    --duration "$DURATION" --server-pid "$EDGE2" --json >"$OUT/bus-two-edges-b.json" &
LOAD2=$!
loadgen "ws://127.0.0.1:$EPORT/stream" 100 "$EDGE" "$OUT/bus-two-edges-a.json"
wait "$LOAD2" || true
python3 perf/report.py row two-edges "$OUT/bus-two-edges-a.json" "$OUT/bus-two-edges-b.json" \
    "edge A" "edge B"
stop "$EDGE2" "$EDGE" "$PRODUCER"
fi

echo "== throughput: one producer, one edge, no clients"
for rate in $RATES; do
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    PPORT=$(free_port)
    scanstream "$PPORT" --source "firehose:$rate" --bus "$BUS" --role producer
    PRODUCER=$PID
    EPORT=$(free_port)
    scanstream "$EPORT" --bus "$BUS" --role edge
    EDGE=$PID
    sleep "$WARMUP"
    row=$(python3 perf/bus_rate.py "$DURATION" "$PPORT" "$PRODUCER" "$EPORT" "$EDGE" "$REDIS_PID")
    echo "{\"cores\": \"${SERVER_CORES:-0}\", \"asked_per_s\": $rate, ${row#\{}" | tee -a "$OUT/bus-throughput.jsonl"
    stop "$EDGE" "$PRODUCER"
done
