#!/bin/bash
# vm-test's checks, run inside the guest as root by its systemd (vm-test.service), from the
# directory the host shares. Everything it prints goes to transcript.txt there (the host shows
# it live); its last act is writing "checks=N failed=F" to result. Written by
# xtask/src/vm_test/mod.rs next to: syscall-profiler (the release daemon), repo/ (README.md,
# docs/ and packaging/), calls (the known workload).
set -u
share=$(dirname "$(readlink -f "$0")")
exec > >(tee "$share/transcript.txt") 2>&1

unit=syscall-profiler
base=http://127.0.0.1:9760
config=/etc/syscall-profiler/config.toml
pin_dir=/sys/fs/bpf/syscall-profiler
# The known workload's calls (calls.c): getppid() ones and failing openat() ones.
getppids=1234
openats=56
checks=0
failed=0

# check DESCRIPTION COMMAND...: runs COMMAND and records "ok" or "FAIL" with DESCRIPTION.
check() {
    local what=$1
    shift
    checks=$((checks + 1))
    if "$@"; then
        echo "ok   $what"
    else
        echo "FAIL $what"
        failed=$((failed + 1))
    fi
}
section() { printf '\n== %s\n' "$*"; }
prop() { systemctl show -p "$1" --value "$unit"; }
# The log of the unit's current run only.
run_log() { journalctl -o cat --no-pager _SYSTEMD_INVOCATION_ID="$(prop InvocationID)"; }
log_has() { run_log | grep -qF -- "$1"; }
# Quiet: polled while the daemon may still be starting.
stats() { curl -fs "$base/stats$1"; }
# systemctl VERB: on failure, the unit's last log lines say why.
ctl() {
    systemctl "$1" "$unit" && return 0
    journalctl -u "$unit" -o cat --no-pager -n 15 | sed 's/^/    log: /'
    return 1
}
# wait_until SECONDS COMMAND...: until COMMAND succeeds, at most SECONDS.
wait_until() {
    local deadline=$(($(date +%s) + $1))
    shift
    until "$@"; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}
drains() { stats "?pid=1&top=1" | jq .host.drains; }
drains_over() { [ "$(drains)" -gt "$1" ]; }
seconds_since_over() { [ $(($(date +%s) - $1)) -gt "$2" ]; }
# The newest entry of process $1 in /stats?pid=$1, every syscall listed.
entry() { stats "?pid=$1&syscalls=1000" | jq -c --argjson p "$1" '[.processes[] | select(.pid == $p)] | max_by(.first_seen_unix_ms)'; }
exited() { [ "$(entry "$1" | jq .exited)" = true ]; }
# Waits until process $1 has exited and two more drains have passed (the first reads its last
# calls, the second retires its kernel entries).
wait_final() {
    wait_until 30 exited "$1" || return 1
    local d
    d=$(drains)
    wait_until 30 drains_over $((d + 1))
}
# Per "ABI NAME": [count, errors] of process $1, keys sorted.
counts_of() { entry "$1" | jq -cS '.syscalls | map({key: "\(.abi) \(.name)", value: [.count, .errors]}) | from_entries'; }
system_count() { stats "?pid=1&syscalls=1000" | jq --arg n "$1" '[.syscalls[] | select(.name == $n) | .count] | add // 0'; }
# The ids of the BPF programs process $1 holds (its program and link fds name them).
prog_ids() { grep -h '^prog_id:' /proc/"$1"/fdinfo/* 2>/dev/null | awk '{print $2}' | sort -un | xargs; }
none_loaded() {
    local id
    [ $# -gt 0 ] || { echo "no program ids to look up"; return 1; }
    for id in "$@"; do
        if bpftool prog show id "$id" >/dev/null 2>&1; then
            echo "program $id is still loaded"
            return 1
        fi
    done
}
# Capability sets $2 (a regex: Inh|Prm) of every thread of process $1 are all $3 (hex).
caps_are() {
    local lines bad
    # A thread may exit between the glob and the read of its status (grep then exits 2 for
    # the missing file, whatever it found in the others'): the threads still there count. No
    # thread to read (no main process) is a failure, not an empty list of bad ones.
    lines=$(grep -s -H -E "^Cap($2):" /proc/"$1"/task/*/status) || true
    [ -n "$lines" ] || { echo "no process $1"; return 1; }
    bad=$(awk -v want="$3" '$2 != want' <<<"$lines")
    [ -z "$bad" ] || { echo "$bad"; return 1; }
}
watchdog_pinged_since() { [ "$(prop WatchdogTimestampMonotonic)" -gt "$1" ]; }

section "guest"
echo "kernel $(uname -r); $(systemd --version | head -n1); $(bpftool version | head -n1)"
echo "kernel.unprivileged_bpf_disabled = $(sysctl -n kernel.unprivileged_bpf_disabled)"
echo "up $(cut -d' ' -f1 /proc/uptime) s (guest clock)"

section "install: packaging/install.sh --bin (the release binary built on the host)"
check "install.sh installs the binary, the unit and the config" \
    "$share/repo/packaging/install.sh" --bin "$share/syscall-profiler"

section "systemctl start"
t0=$(date +%s%N)
check "systemctl start returns (Type=notify: only after READY=1)" ctl start
echo "systemctl start took $((($(date +%s%N) - t0) / 1000000)) ms"
started_at=$(date +%s)
check "ActiveState=active SubState=running Type=notify" \
    test "$(prop ActiveState) $(prop SubState) $(prop Type)" = "active running notify"
pid=$(prop MainPID)
systemctl status "$unit" --no-pager --lines=0 | sed -n '1,8p'

section "programs the loader chose on $(uname -r)"
run_log | grep -E 'attached|capabilities|kernel checks|current task' |
    sed -E 's/^.*(INFO|WARN) [^ ]+ //'
# The BTF one: it frees the exiting thread's TIDS entry (profiler-ebpf/src/task.rs).
check "sched_process_exit: the pre-6.16 BTF program (the preferred one is refused)" \
    log_has "attached sched_process_exit_leader_btf to tracepoint sched_process_exit"
# 6.1 predates the kfunc bpf_rdonly_cast (6.2): the loader links the programs' calls of it to
# id 0 (libbpf's unresolved weak kfunc), in code the verifier removes, and they call the helper.
check "the current task from the helper: no bpf_rdonly_cast before 6.2" \
    log_has "the syscall programs find the current task with a helper call"

section "/healthz and a known workload's exact counts"
check "/healthz answers ok" test "$(curl -fsS $base/healthz)" = ok
child=$("$share/calls" $getppids $openats)
check "the workload's child $child is seen exited and drained" wait_final "$child"
got=$(counts_of "$child")
want="{\"x86_64 getppid\":[$getppids,0],\"x86_64 openat\":[$openats,$openats]}"
echo "/stats?pid=$child: $got"
check "exactly $getppids getppid and $openats failed openat, nothing else" test "$got" = "$want"

section "systemctl reload (SIGHUP)"
check "systemctl reload succeeds" ctl reload
check "the daemon logs the reload" \
    wait_until 10 log_has "SIGHUP received: reloading the configuration"
check "same main process after the reload" test "$(prop MainPID)" = "$pid"

section "watchdog"
echo "WatchdogUSec=$(prop WatchdogUSec)"
check "the watchdog is armed: WatchdogUSec=30s" test "$(prop WatchdogUSec)" = 30s
# The daemon pings every WatchdogSec/4 while its drains succeed.
ping=$(prop WatchdogTimestampMonotonic)
check "the daemon pings it (WatchdogTimestamp moves within 10 s)" \
    wait_until 10 watchdog_pinged_since "$ping"
echo "WatchdogTimestampMonotonic: $ping -> $(prop WatchdogTimestampMonotonic) us"

section "capabilities of the DynamicUser"
systemctl show -p DynamicUser -p AmbientCapabilities -p CapabilityBoundingSet "$unit"
grep -E '^(Uid|Cap(Inh|Prm|Eff|Bnd|Amb)):' /proc/"$pid"/status
check "the unit grants CAP_BPF and CAP_PERFMON as ambient capabilities, nothing else" \
    test "$(prop AmbientCapabilities | tr ' ' '\n' | sort | xargs)" = "cap_bpf cap_perfmon"
check "the daemon runs as a dynamic user, not root" \
    test "$(awk '/^Uid:/ {print $3}' /proc/"$pid"/status)" -ge 61184
if log_has "keeping CAP_BPF"; then
    # Where every map read needs CAP_BPF, the daemon keeps that one and says so.
    check "after attaching, every thread keeps CAP_BPF only (this kernel checks it on map reads)" \
        caps_are "$pid" "Inh|Prm|Eff|Amb" 0000008000000000
else
    check "after attaching, no thread has any capability (CapEff, CapPrm, CapInh, CapAmb 0)" \
        caps_are "$pid" "Inh|Prm|Eff|Amb" 0000000000000000
fi
# Dropping the bounding set needs CAP_SETPCAP, which the unit does not grant; NoNewPrivileges
# keeps what is left of it from ever being regained.
check "the bounding set is the unit's CapabilityBoundingSet (cap_bpf cap_perfmon)" \
    caps_are "$pid" Bnd 000000c000000000

section "still the same process after more than WatchdogSec"
wait_until 60 seconds_since_over "$started_at" 35
check "NRestarts=0 and the same main process $(($(date +%s) - started_at)) s after start" \
    test "$(prop NRestarts) $(prop MainPID)" = "0 $pid"

section "systemctl stop"
ids=$(prog_ids "$pid")
echo "programs the daemon holds: $ids"
for id in $ids; do bpftool prog show id "$id" | head -n1; done
check "it holds its programs (at least 4)" test "$(wc -w <<<"$ids")" -ge 4
check "systemctl stop" ctl stop
check "stopped cleanly: Result=success, exit status 0" \
    test "$(prop Result) $(prop ExecMainStatus)" = "success 0"
# shellcheck disable=SC2086
check "none of its programs is left in the kernel" none_loaded $ids

section "pinned maps: pin_path in the config, the drop-in packaging/pinned-maps.conf"
echo "pin_path = \"$pin_dir\"" >>"$config"
install -D -m 0644 "$share/repo/packaging/pinned-maps.conf" \
    /etc/systemd/system/$unit.service.d/pinned-maps.conf
systemctl daemon-reload
check "systemctl start with pin_path" ctl start
check "CAP_DAC_OVERRIDE (from the drop-in) is dropped with the rest after attaching" \
    caps_are "$(prop MainPID)" "Inh|Prm|Eff|Amb" 0000000000000000
child=$("$share/calls" $getppids $openats)
check "the workload's child $child is seen exited and drained" wait_final "$child"
before=$(system_count getppid)
ls "$pin_dir" | xargs echo "pinned:"
check "systemctl restart" ctl restart
check "the new run drains" wait_until 30 drains_over 0
after=$(system_count getppid)
echo "system-wide getppid: $before before the restart, $after after"
check "counters continue across the restart (at least the workload's $getppids before it)" \
    test "$before" -ge $getppids -a "$after" -ge "$before"
# Nothing else in this guest calls getppid (the count before the restart is the workload's
# exactly), so the count after it must be the same: not lost, not counted twice.
if [ "$before" = $getppids ]; then
    check "counters continue exactly: $after after the restart = $before before" \
        test "$after" = "$before"
fi
check "the new run says it resumed" log_has "resumed the counters from checkpoint"
pid=$(prop MainPID)
ids=$(prog_ids "$pid")
check "systemctl stop" ctl stop
# shellcheck disable=SC2086
check "its programs are gone" none_loaded $ids
check "pinned maps are still there" test -n "$(ls "$pin_dir")"

section "systemd-analyze security"
systemd-analyze security "$unit" --no-pager | tail -n1

section "result"
echo "checks=$checks failed=$failed"
echo "checks=$checks failed=$failed" >"$share/result"
