#!/usr/bin/env bash
# Browser tests of the dashboard: installs what they need (Chromium, Node.js, the npm
# packages), builds the server, runs the tests. Exit status is the tests'.
#
#   bash tests/browser/run.sh                         # every test
#   bash tests/browser/run.sh --test-name-pattern=ack # some tests (node --test flags)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

die() {
    echo "tests/browser/run.sh: $*" >&2
    exit 1
}

# apt-get as root, or through sudo when there is one.
apt_install() {
    local apt=(apt-get)
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 ||
            die "need $* but not root and no sudo: install them (apt-get install -y $*) and run again"
        apt=(sudo apt-get)
    fi
    echo "tests/browser/run.sh: installing $* with apt-get" >&2
    "${apt[@]}" update
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y "$@"
}

if [ ! -x /usr/bin/chromium ]; then
    apt_install chromium
    [ -x /usr/bin/chromium ] || die "apt-get installed chromium but /usr/bin/chromium is missing"
fi

if ! command -v node >/dev/null 2>&1; then
    apt_install nodejs npm
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
    die "node $(node --version) is too old: these tests need Node.js 20 or newer"
fi
command -v npm >/dev/null 2>&1 || apt_install npm
# The https test makes its certificate with openssl.
command -v openssl >/dev/null 2>&1 || apt_install openssl

cd "$here"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
    npm ci --no-audit --no-fund
    touch node_modules
fi

(cd "$repo" && cargo build --bin scanstream)
export SCANSTREAM_BIN="${SCANSTREAM_BIN:-$repo/target/debug/scanstream}"
[ -x "$SCANSTREAM_BIN" ] || die "no server binary at $SCANSTREAM_BIN"

# The tests record the pid of every server they start; whatever is still running when
# this script ends (a test process that was killed) is ended here.
pids="$(mktemp)"
export SCANSTREAM_BROWSER_PIDS="$pids"
cleanup() {
    local pid
    while read -r pid; do
        [ -n "$pid" ] || continue
        if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "^$SCANSTREAM_BIN "; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done <"$pids"
    rm -f "$pids"
}
trap cleanup EXIT

# Fresh server logs (target/browser/logs/NAME-PORT.log) and certificates for this run.
rm -rf "$repo/target/browser/logs" "$repo/target/browser/tls"

status=0
node --test --test-concurrency=1 "$@" ./*.test.mjs || status=$?
exit "$status"
