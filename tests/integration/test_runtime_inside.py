"""kobako-runtime on the real kernel: what a process sees inside, and the cgroup limits."""

from __future__ import annotations

import os
import socket
import time

from bundles import container_cgroup, read, status_field, wait_for


def test_ps_shows_only_the_containers_processes_with_the_user_process_as_pid_1(rt, bundle):
    out = rt.run(bundle.sh("ps -o pid,args; true")).stdout.splitlines()
    rows = [line.split(None, 1) for line in out[1:]]
    pids = {int(pid): args for pid, args in rows}
    assert sorted(pids) == [1, 2], out
    assert pids[1].startswith("sh -c ps -o pid,args"), out
    assert "ps" in pids[2], out  # busybox shows a forked applet as "{ps} sh -c ..."


def test_hostname_is_the_configured_one(rt, bundle):
    bundle.config["hostname"] = "kbt-host"
    assert rt.run(bundle.args("hostname")).stdout.strip() == "kbt-host"
    assert socket.gethostname() != "kbt-host"


def test_a_new_network_namespace_has_only_lo(rt, bundle):
    out = rt.run(bundle.sh("ls /sys/class/net; echo --; ip -o link")).stdout
    names, links = out.split("--\n")
    assert names.split() == ["lo"]
    assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
    assert ",UP," in links  # up, as runc leaves it, so 127.0.0.1 works


def test_the_hosts_cgroup_files_hold_the_configured_values(rt, bundle):
    bundle.linux["resources"].update({
        "cpu": {"shares": 512, "quota": 20000, "period": 100000},
        "memory": {"limit": 64 << 20},
        "pids": {"limit": 42},
    })
    container_id, pid = rt.start_detached(bundle.args("sleep", "60"))
    cpu = container_cgroup(pid, "cpu")
    assert container_id in cpu
    assert read(f"{cpu}/cpu.shares") == "512"
    assert read(f"{cpu}/cpu.cfs_quota_us") == "20000"
    assert read(f"{cpu}/cpu.cfs_period_us") == "100000"
    memory = container_cgroup(pid, "memory")
    assert read(f"{memory}/memory.limit_in_bytes") == str(64 << 20)
    assert read(f"{container_cgroup(pid, 'pids')}/pids.max") == "42"
    rt.delete(container_id)
    assert not os.path.exists(cpu) and not os.path.exists(memory)


def test_a_process_past_the_memory_limit_is_oom_killed(rt, bundle):
    # dd's 64 MiB buffer, filled from /dev/zero, cannot fit in 16 MiB (no swap here, and
    # memory+swap is limited too)
    hog = ("dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1")
    assert rt.run(bundle.args(*hog)).returncode == 0  # fits without a limit
    bundle.linux["resources"]["memory"] = {"limit": 16 << 20, "swap": 16 << 20}
    assert rt.run(bundle, check=False).returncode == 128 + 9


def test_a_fork_bomb_stops_at_pids_max(rt, bundle):
    bundle.linux["resources"]["pids"] = {"limit": 24}
    container_id, pid = rt.start_detached(bundle.sh("bomb() { bomb | bomb & }; bomb; sleep 60"))
    pids = container_cgroup(pid, "pids")
    wait_for(lambda: "max 0" not in read(f"{pids}/pids.events"), what="pids.max to be hit")
    assert int(read(f"{pids}/pids.current")) <= 24
    rt.delete(container_id)
    assert not os.path.exists(pids)


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_pause_freezes_and_resume_thaws(rt, bundle):
    container_id, pid = rt.start_detached(bundle.sh("while :; do :; done"))
    freezer = container_cgroup(pid, "freezer")
    rt("pause", container_id)
    assert rt.state(container_id)["status"] == "paused"
    assert read(f"{freezer}/freezer.state") == "FROZEN"
    before = _cpu_ticks(pid)
    time.sleep(0.3)
    assert _cpu_ticks(pid) == before
    assert status_field(pid, "State")[0] in "DS"  # frozen, not running

    rt("resume", container_id)
    assert rt.state(container_id)["status"] == "running"
    assert read(f"{freezer}/freezer.state") == "THAWED"
    ticks = _cpu_ticks(pid)
    wait_for(lambda: _cpu_ticks(pid) > ticks, what="the thawed loop to use CPU")
    rt.delete(container_id)
