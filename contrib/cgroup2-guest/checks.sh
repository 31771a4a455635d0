#!/bin/bash
# checks.sh - kobako on a pure cgroup v2 host.  Meant to run as root inside the guest
# booted by run.sh (it mounts, moves processes between cgroups and starts its own
# kobakod).  Prints PASS/FAIL lines and exits 1 if any check failed.
set -euo pipefail
export DOCKER_HOST=unix:///run/kobako.sock
CG=/sys/fs/cgroup
PY=/opt/kobako/bin/python
FAILS=0 DAEMON=
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
check() { if [ "$3" = "$2" ]; then pass "$1"; else fail "$1: want '$2', got '$3'"; fi; }
# q CMD...: run with a timeout (nothing may hang), stdout+stderr, never fails the script
q() { timeout -k 5 "${TMO:-120}" "$@" 2>&1 || echo "[rc=$?]"; }
cgpath() { cut -d: -f3 "/proc/$(docker inspect -f '{{.State.Pid}}' "$1")/cgroup" 2>/dev/null || echo none; }
is_id() { [[ $1 =~ ^[0-9a-f]{64}$ ]] && echo id || echo "$1"; }
# "${IN_CG[@]}" DIR CMD...: exec CMD in the (existing) cgroup DIR
IN_CG=(sh -c 'echo $$ > "/sys/fs/cgroup$0/cgroup.procs" && exec "$@"')

start_daemon() {   # $1: the cgroup kobakod runs in
    mkdir -p "$CG$1"
    "${IN_CG[@]}" "$1" kobakod > /tmp/kobakod.log 2>&1 &   # sh execs kobakod: $! is its pid
    DAEMON=$!
    for _ in $(seq 120); do docker version >/dev/null 2>&1 && return 0; sleep 1; done
    fail "kobakod did not start"; tail -20 /tmp/kobakod.log; exit 1
}
stop_daemon() {
    docker ps -aq | xargs -r timeout 120 docker rm -f >/dev/null 2>&1 || true
    if kill "$DAEMON" 2>/dev/null; then wait "$DAEMON" || true
    else fail "kobakod exited early: $(tail -n5 /tmp/kobakod.log)"; fi
    DAEMON=
}
cleanup() {
    [ -z "$DAEMON" ] || stop_daemon
    ! mountpoint -q /run/cgsd || umount /run/cgsd
}
trap cleanup EXIT

echo "== host"
check "/sys/fs/cgroup is cgroup2" cgroup2fs "$(stat -f -c %T $CG)"
check "no v1 hierarchy mounted" 0 "$(grep -c ' - cgroup ' /proc/self/mountinfo || true)"

echo "== kobakod in /system.slice/kobako.service; system.slice enables only memory pids"
mkdir -p $CG/system.slice && echo "+memory +pids" > $CG/system.slice/cgroup.subtree_control
start_daemon /system.slice/kobako.service
q kobako image bootstrap busybox | tail -n1
check "docker info: cgroup version/driver" "2 cgroupfs" "$(q docker info --format '{{.CgroupVersion}} {{.CgroupDriver}}')"
check "bug3 docker info: limits read from the hierarchy root" "true true true true true" \
    "$(q docker info --format '{{.MemoryLimit}} {{.CPUCfsQuota}} {{.CPUShares}} {{.CPUSet}} {{.PidsLimit}}')"
check "docker run" hi "$(q docker run --rm busybox echo hi)"
out=$(q docker run -d --name lim --memory 64m --cpus 0.5 --pids-limit 20 --cpuset-cpus 1 busybox sleep 1000)
check "bug3 run --cpus/--cpuset-cpus accepted without warning" id "$(is_id "$out")"
p=$CG$(cgpath lim)
check "--memory: memory.max" 67108864 "$(cat "$p/memory.max")"
check "--cpus: cpu.max" "50000 100000" "$(cat "$p/cpu.max")"
check "--pids-limit: pids.max" 20 "$(cat "$p/pids.max")"
check "--cpuset-cpus: cpuset.cpus" 1 "$(cat "$p/cpuset.cpus")"
q docker pause lim >/dev/null
check "pause: frozen" "1 frozen 1" "$(cat "$p/cgroup.freeze") $(grep frozen "$p/cgroup.events")"
q docker unpause lim >/dev/null
check "unpause: thawed" "0 frozen 0" "$(cat "$p/cgroup.freeze") $(grep frozen "$p/cgroup.events")"
check "exec: in the container's cgroup namespace" "0::/" "$(q docker exec lim cat /proc/self/cgroup)"
check "exec: in the container's cgroup" in \
    "$(q docker exec lim sh -c 'grep -qx $$ /sys/fs/cgroup/cgroup.procs && echo in')"
q docker rm -f lim >/dev/null
check "rm removes the cgroup" gone "$([ -d "$p" ] && echo present || echo gone)"
check "bug5 container's /sys/fs/cgroup options" "ro,nosuid,nodev,noexec,relatime" \
    "$(q docker run --rm busybox sh -c "awk '\$5 == \"/sys/fs/cgroup\" {print \$6}' /proc/self/mountinfo")"
q docker run --name oom --memory 16m busybox sh -c 'x=a; while :; do x=$x$x; done' >/dev/null
check "OOM: OOMKilled, 137" "true 137" "$(q docker inspect -f '{{.State.OOMKilled}} {{.State.ExitCode}}' oom)"

echo "== relative --cgroup-parent, daemon in a service cgroup"
out=$(TMO=90 q docker run -d --name rel --cgroup-parent myparent busybox sleep 1000)
check "bug1 docker run -d --cgroup-parent myparent returns, running" "id running" \
    "$(is_id "$out") $(q docker inspect -f '{{.State.Status}}' rel)"
check "bug2 relative path under the daemon cgroup's parent" "/system.slice/myparent/$out" "$(cgpath rel 2>&1)"
check "bug2 daemon's cgroup stays a domain" domain "$(cat $CG/system.slice/kobako.service/cgroup.type)"
check "relative parent with --memory --cpus" "67108864 50000 100000" \
    "$(q docker run --rm --cgroup-parent myparent --memory 64m --cpus 0.5 busybox cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max | xargs)"
stop_daemon

echo "== kobako-runtime"
B=/tmp/bundle
mkdir -p $B/rootfs/bin && cp /bin/busybox $B/rootfs/bin/
for a in sh sleep echo true; do ln -sf busybox $B/rootfs/bin/$a; done
(cd $B && kobako-runtime spec)
spec() {   # spec PATH ARGS-JSON RESOURCES-JSON: rewrite the bundle's config.json
    $PY -c 'import json, sys
c = json.load(open("config.json"))
c["process"]["terminal"] = False
c["linux"]["cgroupsPath"], c["process"]["args"] = sys.argv[1], json.loads(sys.argv[2])
c["linux"]["resources"] = dict(json.loads(sys.argv[3]), devices=c["linux"]["resources"]["devices"])
json.dump(c, open("config.json", "w"))' "$@"
}
cd $B
spec rel/x '["sleep", "1000"]' '{"memory": {"limit": 67108864}, "cpu": {"quota": 50000, "period": 100000}, "pids": {"limit": 20}}'
mkdir -p $CG/test.scope && q "${IN_CG[@]}" /test.scope kobako-runtime create rt1
q kobako-runtime start rt1
pid=$(kobako-runtime state rt1 | $PY -c 'import json, sys; print(json.load(sys.stdin)["pid"])' || true)
p=$(cut -d: -f3 "/proc/$pid/cgroup" || echo none)
check "bug2 runtime: relative cgroupsPath from /test.scope goes to /rel/x" /rel/x "$p"
check "runtime: memory.max cpu.max pids.max" "67108864 50000 100000 20" \
    "$(cat $CG$p/memory.max $CG$p/cpu.max $CG$p/pids.max | xargs)"
check "bug2 runtime: caller's cgroup stays a domain" domain "$(cat $CG/test.scope/cgroup.type)"
q kobako-runtime delete -f rt1 >/dev/null
check "runtime: delete removes the cgroup" gone "$([ -d $CG$p ] && echo present || echo gone)"
# a cgroup that refuses the init: /busy enables memory for a child, so it may hold no process
mkdir -p $CG/busy/child && echo +memory > $CG/busy/cgroup.subtree_control
spec /busy '["true"]' '{}'
out=$(TMO=60 q kobako-runtime run rt2)
case $out in
    *"[rc=124]"* | *"[rc=137]"*) fail "bug1 runtime: hung when the cgroup refused the init: $out" ;;
    *"[rc="*) pass "bug1 runtime: the refused init is a clear error ($(echo "$out" | tail -n2 | xargs))" ;;
    *) fail "bug1 runtime: ran in a cgroup that must refuse it: $out" ;;
esac
q kobako-runtime delete -f rt2 >/dev/null

echo "== a name=systemd-only v1 hierarchy beside cgroup2"
mkdir -p /run/cgsd && mount -t cgroup -o none,name=systemd cgroup /run/cgsd
start_daemon /
check "bug4 docker info: still cgroup v2" 2 "$(q docker info --format '{{.CgroupVersion}}')"
check "bug4 docker run with limits" 67108864 "$(q docker run --rm --memory 64m --cpus 0.5 busybox cat /sys/fs/cgroup/memory.max)"
spec /v2test/rt3 '["echo", "rt-ok"]' '{"memory": {"limit": 67108864}}'
check "bug4 kobako-runtime run (devices rules)" rt-ok "$(q kobako-runtime run rt3)"
stop_daemon
umount /run/cgsd

echo "== $FAILS check(s) failed"
[ "$FAILS" -eq 0 ]
