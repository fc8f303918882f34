#!/usr/bin/env bash
# What `syscall-profiler top` itself costs on a busy host: its peak RSS (VmHWM) and CPU share
# at a 1 s refresh, for SECONDS seconds (default 60) at each terminal size (80x24, 200x60),
# while PROCS idle processes (default 2000) live, a 1-byte dd storm runs and short-lived
# processes come and go. Prints the size of the unfiltered /stats answer top no longer reads,
# and of the narrow one it reads; and the daemon's own CPU share with no viewer, with top, and
# with top and the dashboard (headless chromium) open. Root (the daemon attaches eBPF); tmux,
# chromium. Loopback only.
#
#   scripts/top-cost.sh                      # builds the release binary first
#   PROFILER_TEST_BIN=path SECONDS_EACH=30 PROCS=1000 scripts/top-cost.sh
#   DAEMON_BIN=path scripts/top-cost.sh      # this top against another build's daemon
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${SECONDS_EACH:-60}
PROCS=${PROCS:-2000}

[ "$(id -u)" -eq 0 ] || { echo "top-cost: must run as root (the daemon loads eBPF)" >&2; exit 1; }
command -v tmux >/dev/null || { echo "top-cost: tmux is missing: apt-get install tmux" >&2; exit 1; }

BIN=${PROFILER_TEST_BIN:-}
if [ -z "$BIN" ]; then
    cargo build --release -q -p profiler
    BIN=target/release/syscall-profiler
fi
BIN=$(realpath "$BIN")
DAEMON_BIN=$(realpath "${DAEMON_BIN:-$BIN}")

work=$(mktemp -d)
sock="top-cost-$$"
pids=()
cleanup() {
    tmux -L "$sock" kill-server 2>/dev/null || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

NO_COLOR=1 "$DAEMON_BIN" serve --listen 127.0.0.1:0 2>"$work/daemon.log" &
daemon=$!
pids+=("$daemon")
for _ in $(seq 100); do
    grep -q "serving on" "$work/daemon.log" && break
    kill -0 "$daemon" 2>/dev/null || { cat "$work/daemon.log" >&2; exit 1; }
    sleep 0.1
done
url=$(grep -o 'serving on http://[0-9.:]*' "$work/daemon.log" | head -n1 | sed 's/serving on //')
[ -n "$url" ] || { echo "top-cost: daemon did not start" >&2; exit 1; }

# The busy host: PROCS idle processes (each a /stats entry with its start-up syscalls), a
# syscall storm, and process churn (exited processes stay in /stats for the retention).
end=$((SECONDS_EACH * 4 + 40))
for _ in $(seq "$PROCS"); do sleep "$end" & pids+=("$!"); done
timeout "$end" dd if=/dev/zero of=/dev/null bs=1 status=none &
pids+=("$!")
( stop=$((SECONDS + end)); while [ $SECONDS -lt $stop ]; do /bin/true; sleep 0.05; done ) &
pids+=("$!")
sleep 5

curl -s "$url/stats" >"$work/all.json"
echo "daemon: $url; unfiltered /stats: $(wc -c <"$work/all.json") bytes," \
    "$(grep -o '"first_seen_unix_ms"' "$work/all.json" | wc -l) processes"
echo "narrow (schema 2): $(curl -s -o /dev/null -w '%{http_code} %{size_download}' "$url/stats?sort=cpu&limit=19&syscalls=8&buckets=false") bytes;" \
    "schema 1: $(curl -s -o /dev/null -w '%{size_download}' "$url/stats?sort=total&top=19") bytes"

tick=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
share() { echo "($2 - $1) * 100 / $tick / $3" | bc -l | xargs printf '%.2f'; }
# daemon_cpu WHAT: the daemon's CPU share over SECONDS_EACH s of what is open now.
daemon_cpu() {
    local t0 t1
    t0=$(ticks "$daemon")
    sleep "$SECONDS_EACH"
    t1=$(ticks "$daemon")
    echo "daemon with $1: $(share "$t0" "$t1" "$SECONDS_EACH")% of a core over $SECONDS_EACH s"
}
daemon_cpu "no viewer"

for size in 80x24 200x60; do
    cols=${size%x*} lines=${size#*x}
    tmux -L "$sock" -f /dev/null new-session -d -s "t$size" -x "$cols" -y "$lines" \
        "exec $BIN top --url $url --interval 1s"
    sleep 3
    top=$(tmux -L "$sock" list-panes -t "t$size" -F '#{pane_pid}')
    cpu() { ticks "$top"; }
    t0=$(cpu); d0=$(ticks "$daemon"); s0=$(date +%s.%N)
    sleep "$SECONDS_EACH"
    t1=$(cpu); d1=$(ticks "$daemon"); s1=$(date +%s.%N)
    hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$top/status")
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$top/status")
    echo "top at $size: VmHWM $((hwm / 1024)) MiB, VmRSS $((rss / 1024)) MiB," \
        "CPU $(echo "($t1 - $t0) * 100 / $tick / ($s1 - $s0)" | bc -l | xargs printf '%.2f')% of a core" \
        "over $SECONDS_EACH s; the daemon meanwhile $(share "$d0" "$d1" "$(echo "$s1 - $s0" | bc -l)")%"
    tmux -L "$sock" capture-pane -p -t "t$size" >"$work/screen"
    head -n 8 "$work/screen"
    grep ' rows' "$work/screen" || true
    tmux -L "$sock" kill-session -t "t$size"
done

# One top (80x24) and one dashboard open at once: what the daemon pays for its viewers.
tmux -L "$sock" -f /dev/null new-session -d -s both -x 80 -y 24 "exec $BIN top --url $url --interval 1s"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$work/chromium" "$url/" >/dev/null 2>&1 &
pids+=("$!")
sleep 5
daemon_cpu "one top (80x24, 1 s) and one dashboard"
