#!/usr/bin/env bash
# Soak test: scanstream on its sim source for DURATION seconds while CLIENTS clients
# subscribe, unsubscribe, disconnect and resume, scan, ack and ping at random
# (loadgen --soak). Fails unless no result was lost or duplicated, every resume
# recovered, every request was answered, RSS stayed flat after the warm-up, the server
# logged no panic, still answers /healthz, and exits 0 on SIGTERM.
#
#   perf/soak.sh                      30 minutes, 1,000 clients
#   DURATION=120 perf/soak.sh         two minutes
#   CLIENTS=1000 SEED=1               clients, seed of their random choices
#   WARMUP=DURATION/3 (DURATION/2 under 180 s)   seconds before RSS samples count
#   RSS_EVERY=2 (0.5 under 600 s)    mean seconds between RSS samples
#   HISTORY_SIZE=min(100000, 60 x DURATION)   the server's resume history
#   PORT=18710
#
# The server runs on core 0 and loadgen on core 1 (taskset). Results go to perf/results/:
# soak-report.txt (the table), soak.json (the JSON line), soak-rss.csv (the RSS curve)
# and soak-server.log (the server's log).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-1800}
CLIENTS=${CLIENTS:-1000}
SEED=${SEED:-1}
# The server's RSS rises for its first minute or so, while its connections' buffers and
# the allocator's arenas reach the size the bursts of results need.
WARMUP=${WARMUP:-$((DURATION / 3 > 60 ? DURATION / 3 : DURATION / 2))}
if [ "$DURATION" -ge 600 ]; then RSS_EVERY=${RSS_EVERY:-2}; else RSS_EVERY=${RSS_EVERY:-0.5}; fi
# The history ring grows until it holds HISTORY_SIZE results (about 0.5 KiB each, some
# 330 a second from the sim): it must fill within the warm-up, or its growth would read as
# a leak. 60 results per second of run fill it in about a fifth of the run.
HISTORY_SIZE=${HISTORY_SIZE:-$((DURATION * 60 < 100000 ? DURATION * 60 : 100000))}
PORT=${PORT:-18710}
OUT=perf/results
LOG=$OUT/soak-server.log
mkdir -p "$OUT"

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((CLIENTS + 64)) ]; then
    echo "soak: the open-file limit $(ulimit -n) is too low for $CLIENTS clients" >&2
    exit 1
fi

cargo build --release -q -p scanstream -p loadgen
BIN=target/release

taskset -c 0 "$BIN/scanstream" --listen "127.0.0.1:$PORT" --history-size "$HISTORY_SIZE" \
    2>"$LOG" &
SERVER_PID=$!
cleanup() {
    if kill -0 "$SERVER_PID" 2>/dev/null; then kill -KILL "$SERVER_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

up=0
for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then up=1; break; fi
    sleep 0.05
done
if [ "$up" != 1 ]; then
    echo "soak: the server did not start on port $PORT; its log:" >&2
    cat "$LOG" >&2
    exit 1
fi

echo "soak: $CLIENTS clients for $DURATION s (warm-up $WARMUP s, RSS every $RSS_EVERY s," \
    "history $HISTORY_SIZE), server pid $SERVER_PID" >&2
status=0
taskset -c 1 "$BIN/loadgen" --soak --url "ws://127.0.0.1:$PORT/stream" \
    --clients "$CLIENTS" --duration "$DURATION" --warmup "$WARMUP" --seed "$SEED" \
    --rss-pid "$SERVER_PID" --rss-every "$RSS_EVERY" --rss-csv "$OUT/soak-rss.csv" \
    >"$OUT/soak-out.txt" || status=$?
grep -v '^{' "$OUT/soak-out.txt" | tee "$OUT/soak-report.txt"
grep '^{' "$OUT/soak-out.txt" >"$OUT/soak.json" || true
rm -f "$OUT/soak-out.txt"

failed=()
[ "$status" = 0 ] || failed+=("loadgen's verdict (exit $status)")

if kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "server           alive"
else
    failed+=("the server is gone")
fi
health=$(curl -sS --max-time 5 "http://127.0.0.1:$PORT/healthz" 2>&1 || true)
echo "healthz          $health"
[ "$health" = ok ] || failed+=("/healthz said '$health'")
if grep -q panicked "$LOG"; then
    failed+=("the server log has a panic")
    grep -m 5 panicked "$LOG" >&2
else
    echo "server log       no panic ($(wc -l <"$LOG") lines)"
fi

kill -TERM "$SERVER_PID" 2>/dev/null || true
for _ in $(seq 1 150); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
done
exit_code=0
if kill -0 "$SERVER_PID" 2>/dev/null; then
    failed+=("the server did not exit within 15 s of SIGTERM")
else
    wait "$SERVER_PID" || exit_code=$?
    echo "SIGTERM          exit status $exit_code"
    [ "$exit_code" = 0 ] || failed+=("the server exited with $exit_code on SIGTERM")
fi

echo "results          $OUT/soak-report.txt, $OUT/soak.json, $OUT/soak-rss.csv, $LOG"
if [ ${#failed[@]} -gt 0 ]; then
    printf 'soak FAILED: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "soak passed"
