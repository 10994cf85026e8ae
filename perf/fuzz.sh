#!/usr/bin/env bash
# Runs the fuzz targets in fuzz/ one after another, each for a set time, and prints a
# table of executions, corpus size and findings. Not part of CI.
#
#   perf/fuzz.sh                   # every target, 600 s each
#   perf/fuzz.sh 60 http_head      # one target for a minute
#
# Needs cargo-fuzz (installed here when missing). libFuzzer's instrumentation needs
# unstable compiler flags: a nightly toolchain is used when rustup has one, else the
# stable compiler with RUSTC_BOOTSTRAP=1.
# A crash is saved under fuzz/artifacts/TARGET/; copy it into tests/fuzz_inputs/TARGET/
# so tests/fuzz_inputs.rs replays it for good.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(http_head connection connection_tls client_message csv_rows jsonl_line config_file scan_expression)
fi

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi

logs=perf/results/fuzz
mkdir -p "$logs"
"${fuzz[@]}" build

summary=()
for t in "${targets[@]}"; do
    corpus="fuzz/corpus/$t"
    mkdir -p "$corpus"
    # Seeds go in once; the corpus grows across runs.
    cp -n fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
    log="$logs/$t.log"
    echo "== $t: ${seconds}s, log in $log" >&2
    status=0
    "${fuzz[@]}" run "$t" "$corpus" -- -max_total_time="$seconds" -print_final_stats=1 \
        -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1 || status=$?
    execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo "?")
    files=$(find "$corpus" -type f | wc -l)
    crashes=$(find "fuzz/artifacts/$t" -type f 2>/dev/null | wc -l)
    summary+=("| $t | $seconds | $execs | $rate | $cov | $files | $crashes | $status |")
done

echo
echo "| target | seconds | executions | execs/s | coverage (edges) | corpus files | crash files | exit |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${summary[@]}"
