#!/usr/bin/env bash
# Load check: wrk with 100 connections on /stats, then on /metrics, for DURATION seconds each
# (default 30) while a
# syscall storm runs (1-byte dd reads/writes, about 2 million syscalls a second here, and a
# stream of short-lived processes). Loopback
# only. Fails on any wrk socket error or non-2xx answer; prints the daemon's RSS before and
# after. Root (the daemon attaches eBPF). Bounded: about DURATION + 15 seconds.
#
#   scripts/load-check.sh                # builds the release binary first
#   PROFILER_TEST_BIN=path DURATION=10 scripts/load-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-30}
CONNECTIONS=${CONNECTIONS:-100}
QUERIES=${QUERIES:-/stats /metrics}

[ "$(id -u)" -eq 0 ] || { echo "load-check: must run as root (the daemon loads eBPF)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "load-check: wrk is missing: apt-get install wrk" >&2; exit 1; }

BIN=${PROFILER_TEST_BIN:-}
if [ -z "$BIN" ]; then
    cargo build --release -q -p profiler
    BIN=target/release/syscall-profiler
fi

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Retention of 30s keeps the storm's exited processes from growing /stats without bound.
NO_COLOR=1 "$BIN" serve --listen 127.0.0.1:0 --retention 30s 2>"$work/daemon.log" &
daemon=$!
pids+=("$daemon")
for _ in $(seq 100); do
    grep -q "serving on" "$work/daemon.log" && break
    kill -0 "$daemon" 2>/dev/null || { cat "$work/daemon.log" >&2; exit 1; }
    sleep 0.1
done
url=$(grep -o 'serving on http://[0-9.:]*' "$work/daemon.log" | head -n1 | sed 's/serving on //')
[ -n "$url" ] || { echo "load-check: daemon did not start" >&2; cat "$work/daemon.log" >&2; exit 1; }

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$daemon/status"; }

n_queries=$(wc -w <<<"$QUERIES")
storm_end=$((DURATION * n_queries + 5))
timeout "$storm_end" dd if=/dev/zero of=/dev/null bs=1 status=none &
pids+=("$!")
# Process churn at a bounded rate (about 20 a second): every one is a new /stats entry.
( end=$((SECONDS + storm_end)); while [ $SECONDS -lt $end ]; do /bin/true; sleep 0.05; done ) &
pids+=("$!")

sleep 3
failed=0
for query in $QUERIES; do
    rss_start=$(rss)
    wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s --latency "$url$query" | tee "$work/wrk.out"
    rss_end=$(rss)
    bytes=$(curl -s "$url$query" | wc -c)
    echo "load-check: $query: daemon RSS ${rss_start} KiB at start, ${rss_end} KiB at end; answer ${bytes} bytes"
    if grep -qE "Socket errors|Non-2xx" "$work/wrk.out"; then
        echo "load-check: FAILED: wrk saw errors on $query" >&2
        failed=1
    fi
done
[ "$failed" -eq 0 ] || exit 1
kill -TERM "$daemon"
wait "$daemon" || { echo "load-check: daemon exited non-zero" >&2; exit 1; }
echo "load-check: OK: no errors"
