#!/usr/bin/env bash
# Runs a load scenario against scanstream and against the tokio peer, one after the
# other under identical load, and prints both rows and their ratios.
#
#   perf/run.sh SCENARIO        latency | latency-1k | fanout-1k | saturate | idle-10k | churn | all
#   DURATION=10 perf/run.sh fanout-1k     # a shorter measured window (default 30 s)
#   SATURATE_DURATION=10                  # the window of each saturate step (default 10 s)
#   PEER_THREADS=2 SERVER_CORES=0,1       # the peer on two worker threads, servers on both cores
#   SERVER_FLAGS="--threads 2"            # more flags for scanstream
#
# The server runs on core 0 and the load generator on core 1 (taskset); the file limit is
# raised for the idle and churn scenarios. Rows are saved in perf/results/*.json; `all`
# rewrites the scenario tables in perf/RESULTS.md (between its markers).
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh

SCENARIO=${1:-}
DURATION=${DURATION:-30}
WARMUP=${WARMUP:-3}
PORT_SCAN=18700
PORT_PEER=18701
OUT=perf/results
mkdir -p "$OUT"

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}
[ -n "$SCENARIO" ] || usage

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release -q -p scanstream -p loadgen -p peer-tokio
BIN=target/release


# start_server NAME RATE: starts it pinned to core 0; sets SERVER_PID and URL.
start_server() {
    local name=$1 rate=$2
    case $name in
        scanstream)
            taskset -c "${SERVER_CORES:-0}" "$BIN/scanstream" --listen "127.0.0.1:$PORT_SCAN" \
                --source "firehose:$rate" --log warn ${SERVER_FLAGS:-} >"$OUT/$name.log" 2>&1 &
            SERVER_PID=$!
            URL="ws://127.0.0.1:$PORT_SCAN/stream"
            wait_port "$PORT_SCAN"
            ;;
        peer)
            taskset -c "${SERVER_CORES:-0}" "$BIN/peer-tokio" --listen "127.0.0.1:$PORT_PEER" \
                --rate "$rate" --threads "${PEER_THREADS:-1}" >"$OUT/$name.log" 2>&1 &
            SERVER_PID=$!
            URL="ws://127.0.0.1:$PORT_PEER/stream"
            wait_port "$PORT_PEER"
            ;;
    esac
}

stop_server() {
    kill -INT "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
}

# measure NAME RATE CLIENTS [loadgen flags...]: one row of JSON into $OUT/SCENARIO-NAME.json
measure() {
    local name=$1 rate=$2 clients=$3
    shift 3
    start_server "$name" "$rate"
    sleep 0.5
    # The server's RSS before any client, for the per-connection figure.
    awk '/^VmRSS/ {print $2}' "/proc/$SERVER_PID/status" >"$OUT/$SCENARIO_NAME-$name.rss0"
    taskset -c 1 "$BIN/loadgen" --url "$URL" --clients "$clients" \
        --warmup "$WARMUP" --duration "$DURATION" --server-pid "$SERVER_PID" --json "$@" \
        >"$OUT/$SCENARIO_NAME-$name.json" || true
    stop_server
}

# both RATE CLIENTS [flags]: scanstream then the peer, then the comparison.
both() {
    measure scanstream "$@"
    measure peer "$@"
    python3 perf/report.py row "$SCENARIO_NAME" "$OUT/$SCENARIO_NAME-scanstream.json" "$OUT/$SCENARIO_NAME-peer.json"
}

saturate() {
    # Raise the rate until p99 passes 50 ms or anything is lost; keep the last good row.
    local name=$1 best=0
    for rate in 25 50 100 200 400 700 1000 1500 2000 3000 5000; do
        SCENARIO_NAME="saturate-$rate"
        DURATION=${SATURATE_DURATION:-10} measure "$name" "$rate" 1000
        if ! python3 perf/report.py ok "$OUT/saturate-$rate-$name.json"; then break; fi
        best=$rate
        cp "$OUT/saturate-$rate-$name.json" "$OUT/saturate-$name.json"
    done
    echo "$name: highest good rate $best results/s to 1000 subscribers"
}

run() {
    SCENARIO_NAME=$1
    case $1 in
        latency) both 100 100 ;;
        latency-1k) both 100 1000 ;;
        fanout-1k) both 1000 1000 ;;
        saturate)
            saturate scanstream
            saturate peer
            SCENARIO_NAME=saturate
            python3 perf/report.py row saturate "$OUT/saturate-scanstream.json" "$OUT/saturate-peer.json"
            ;;
        idle-10k)
            # The idle server alone, then 10,000 subscribed connections with nothing to send.
            both 0 10000 --ramp 2000
            ;;
        churn) both 100 1000 --churn ;;
        *) usage ;;
    esac
}

if [ "$SCENARIO" = all ]; then
    for s in latency latency-1k fanout-1k saturate idle-10k churn; do run "$s"; done
    python3 perf/report.py markdown "$OUT" >"$OUT/tables.md"
    python3 perf/report.py splice perf/RESULTS.md "$OUT/tables.md"
    echo "perf/RESULTS.md: the scenario tables are updated"
else
    run "$SCENARIO"
fi
