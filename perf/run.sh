#!/usr/bin/env bash
# Runs a load scenario against scanstream and against the tokio peer, one after the
# other under identical load, and prints both rows and their ratios.
#
#   perf/run.sh SCENARIO        latency | latency-1k | fanout-1k | saturate | idle-10k | churn | all
#   perf/run.sh ladder          1,000 subscribers at rising rates, conflation and table check
#   perf/run.sh tls-vs-plain    latency and fanout-1k, each scanstream plain then over TLS
#   DURATION=10 perf/run.sh fanout-1k     # a shorter measured window (default 30 s)
#   TLS=1 perf/run.sh idle-10k            # scanstream plain vs scanstream over TLS (wss://)
#   ROUNDS=3                              # alternate the two servers 3 times, then medians (not saturate, ladder)
#   SATURATE_DURATION=10                  # the window of each saturate step (default 10 s)
#   LADDER_DURATION=10 LADDER_RATES="1000 2000"   # ladder: window per step, rates (results/s)
#   LADDER_CHECK_SAMPLE=20                # ladder: connections that keep a table (0: all)
#   PEER_THREADS=2 SERVER_CORES=0,1       # the peer on two worker threads, servers on both cores
#   SERVER_FLAGS="--threads 2"            # more flags for scanstream
#
# The server runs on core 0 and the load generator on core 1 (taskset); the file limit is
# raised for the idle and churn scenarios. Rows are saved in perf/results/*.json; `all`
# rewrites the scenario tables in perf/RESULTS.md (between its markers; with TLS=1 it
# writes perf/results/tables-tls.md instead); `all` does not run `ladder` (some 4 minutes),
# but puts the last ladder's table in too. TLS=1 makes a throwaway certificate for
# 127.0.0.1 in perf/results/tls/ and compares scanstream over TLS with scanstream plain
# instead of with the peer; loadgen trusts the certificate with --ca-file.
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh

SCENARIO=${1:-}
DURATION=${DURATION:-30}
WARMUP=${WARMUP:-3}
ROUNDS=${ROUNDS:-1}
TLS=${TLS:-0}
PORT_SCAN=18700
PORT_PEER=18701
PORT_TLS=18702
OUT=perf/results
CERT_DIR=$OUT/tls
mkdir -p "$OUT"

usage() {
    sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}
[ -n "$SCENARIO" ] || usage
if [ "$SCENARIO" = tls-vs-plain ]; then TLS=1; fi

# The two servers each scenario compares, in the order they run, and the row labels; the
# ratio is the first label's row over the second's.
if [ "$TLS" = 1 ]; then
    make_cert "$CERT_DIR"
    FIRST=scanstream SECOND=scanstream-tls
    NUM=scanstream-tls DEN=scanstream LABELS=("scanstream TLS" "scanstream plain")
else
    FIRST=scanstream SECOND=peer
    NUM=scanstream DEN=peer LABELS=("scanstream" "tokio peer")
fi

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release -q -p scanstream -p loadgen -p peer-tokio
BIN=target/release


# start_server NAME RATE: starts it pinned to core 0; sets SERVER_PID, URL and TRUST
# (the loadgen flags that make it believe the server's certificate).
start_server() {
    local name=$1 rate=$2
    TRUST=()
    case $name in
        scanstream)
            taskset -c "${SERVER_CORES:-0}" "$BIN/scanstream" --listen "127.0.0.1:$PORT_SCAN" \
                --source "firehose:$rate" --log warn ${SERVER_FLAGS:-} >"$OUT/$name.log" 2>&1 &
            SERVER_PID=$!
            URL="ws://127.0.0.1:$PORT_SCAN/stream"
            wait_port "$PORT_SCAN"
            ;;
        scanstream-tls)
            taskset -c "${SERVER_CORES:-0}" "$BIN/scanstream" --listen "127.0.0.1:$PORT_TLS" \
                --source "firehose:$rate" --log warn \
                --tls-cert "$CERT_DIR/cert.pem" --tls-key "$CERT_DIR/key.pem" \
                ${SERVER_FLAGS:-} >"$OUT/$name.log" 2>&1 &
            SERVER_PID=$!
            URL="wss://127.0.0.1:$PORT_TLS/stream"
            TRUST=(--ca-file "$CERT_DIR/cert.pem")
            wait_port "$PORT_TLS"
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
    local name=$1 rate=$2
    shift 2
    start_server "$name" "$rate"
    sleep 0.5
    run_loadgen "$name" "$@"
    stop_server
}

# run_loadgen NAME CLIENTS [loadgen flags...]: the server's idle RSS, then loadgen against it.
run_loadgen() {
    local name=$1 clients=$2
    shift 2
    # The server's RSS before any client, for the per-connection figure.
    awk '/^VmRSS/ {print $2}' "/proc/$SERVER_PID/status" >"$OUT/$SCENARIO_NAME-$name.rss0"
    taskset -c 1 "$BIN/loadgen" --url "$URL" "${TRUST[@]}" --clients "$clients" \
        --warmup "$WARMUP" --duration "$DURATION" --server-pid "$SERVER_PID" --json "$@" \
        >"$OUT/$SCENARIO_NAME-$name.json" || true
}

# conflated NAME: the server's scanstream_results_conflated_total now; nothing when it
# has no such counter (the peer, a server without conflation).
conflated() {
    case $1 in
        scanstream) metric_sum "http://127.0.0.1:$PORT_SCAN/metrics" scanstream_results_conflated_total ;;
        scanstream-tls)
            metric_sum "https://127.0.0.1:$PORT_TLS/metrics" scanstream_results_conflated_total \
                --cacert "$CERT_DIR/cert.pem"
            ;;
    esac
}

# ladder_step NAME RATE: 1,000 subscribers taking every result at RATE, with the table
# check; the row in $OUT/ladder-RATE-NAME.json and, when the server counts them, the
# results it conflated during the step in ladder-RATE-NAME.conflated.
ladder_step() {
    local name=$1 rate=$2 before after
    SCENARIO_NAME=ladder-$rate
    start_server "$name" "$rate"
    sleep 0.5
    before=$(conflated "$name" || true)
    DURATION=${LADDER_DURATION:-10} run_loadgen "$name" 1000 --check-table \
        --check-sample "${LADDER_CHECK_SAMPLE:-20}" --check-timeout "${LADDER_CHECK_TIMEOUT:-10}"
    after=$(conflated "$name" || true)
    stop_server
    if [ -n "$before" ] && [ -n "$after" ]; then
        echo $((after - before)) >"$OUT/$SCENARIO_NAME-$name.conflated"
    fi
    python3 perf/report.py step "$rate" "$name" "$OUT/$SCENARIO_NAME-$name.json"
}

ladder() {
    local rate name
    rm -f "$OUT"/ladder-*
    for rate in ${LADDER_RATES:-1000 1250 1500 1750 2000 2500 3000}; do
        for name in "$FIRST" "$SECOND"; do ladder_step "$name" "$rate"; done
    done
    python3 perf/report.py ladder "$OUT" "$FIRST" "$SECOND" "${LABELS[@]}"
}

# compare NAME: the row of each server under NAME and their ratios.
compare() {
    python3 perf/report.py row "$1" "$OUT/$1-$NUM.json" "$OUT/$1-$DEN.json" "${LABELS[@]}"
}

# both RATE CLIENTS [flags]: the first server then the second (scanstream then the peer,
# or with TLS=1 scanstream plain then over TLS), then the comparison. With ROUNDS > 1
# the pair runs that many times, alternately, each round's rows printed and kept as
# NAME-rK-*.json, and the comparison is of the medians.
both() {
    local name=$SCENARIO_NAME
    if [ "$ROUNDS" -le 1 ]; then
        measure "$FIRST" "$@"
        measure "$SECOND" "$@"
    else
        local k s files
        for k in $(seq 1 "$ROUNDS"); do
            SCENARIO_NAME=$name-r$k
            measure "$FIRST" "$@"
            measure "$SECOND" "$@"
            compare "$SCENARIO_NAME"
        done
        SCENARIO_NAME=$name
        for s in "$FIRST" "$SECOND"; do
            files=()
            for k in $(seq 1 "$ROUNDS"); do files+=("$OUT/$name-r$k-$s.json"); done
            python3 perf/report.py median "$OUT/$name-$s.json" "${files[@]}"
        done
        echo "medians of $ROUNDS rounds:"
    fi
    compare "$name"
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
            saturate "$FIRST"
            saturate "$SECOND"
            SCENARIO_NAME=saturate
            compare saturate
            ;;
        idle-10k)
            # The idle server alone, then 10,000 subscribed connections with nothing to send.
            both 0 10000 --ramp 2000
            ;;
        churn) both 100 1000 --churn ;;
        ladder) ladder ;;
        *) usage ;;
    esac
}

if [ "$SCENARIO" = all ]; then
    for s in latency latency-1k fanout-1k saturate idle-10k churn; do run "$s"; done
    if [ "$TLS" = 1 ]; then
        python3 perf/report.py markdown "$OUT" tls >"$OUT/tables-tls.md"
        echo "$OUT/tables-tls.md: the TLS tables (perf/RESULTS.md is left alone)"
    else
        python3 perf/report.py markdown "$OUT" >"$OUT/tables.md"
        python3 perf/report.py splice perf/RESULTS.md "$OUT/tables.md"
        echo "perf/RESULTS.md: the scenario tables are updated"
    fi
elif [ "$SCENARIO" = tls-vs-plain ]; then
    for s in latency fanout-1k; do run "$s"; done
    echo
    for s in latency fanout-1k; do compare "$s"; echo; done
else
    run "$SCENARIO"
fi
