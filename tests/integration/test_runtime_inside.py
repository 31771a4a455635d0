"""kobako-runtime on the real kernel: what a process sees inside, and the cgroup limits."""

from __future__ import annotations

import os
import socket
import time

import pytest
from bundles import CGROUP_V2, cgroup_file, read, status_field, wait_for


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
    files = {
        "shares": cgroup_file(pid, "cpu/cpu.shares", "cpu.weight"),
        "quota": cgroup_file(pid, "cpu/cpu.cfs_quota_us", "cpu.max"),
        "memory": cgroup_file(pid, "memory/memory.limit_in_bytes", "memory.max"),
        "pids": cgroup_file(pid, "pids/pids.max", "pids.max"),
    }
    assert container_id in files["shares"]
    if CGROUP_V2:  # runc's conversion: weight = 1 + (shares - 2) * 9999 / 262142
        expected = {"shares": "20", "quota": "20000 100000"}
    else:
        expected = {"shares": "512", "quota": "20000"}
        assert read(cgroup_file(pid, "cpu/cpu.cfs_period_us", "")) == "100000"
    expected.update({"memory": str(64 << 20), "pids": "42"})
    assert {key: read(path) for key, path in files.items()} == expected
    rt.delete(container_id)
    assert not any(os.path.exists(os.path.dirname(path)) for path in files.values())


def test_a_process_past_the_memory_limit_is_oom_killed(rt, bundle):
    # dd's 64 MiB buffer, filled from /dev/zero, cannot fit in 16 MiB (no swap here, and
    # memory+swap is limited too)
    hog = ("dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1")
    assert rt.run(bundle.args(*hog)).returncode == 0  # fits without a limit
    bundle.linux["resources"]["memory"] = {"limit": 16 << 20}
    if os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes") or CGROUP_V2:
        bundle.linux["resources"]["memory"]["swap"] = 16 << 20  # no swapping either
    elif read("/proc/swaps").count("\n") > 0:
        pytest.skip("swap is on and cannot be limited here: the hog would swap, not die")
    assert rt.run(bundle, check=False).returncode == 128 + 9


def test_a_fork_bomb_stops_at_pids_max(rt, bundle):
    bundle.linux["resources"]["pids"] = {"limit": 24}
    # the init forks once, then execs: it needs no fork once the bomb fills the cgroup
    container_id, pid = rt.start_detached(
        bundle.sh("bomb() { bomb | bomb & }; bomb & exec sleep 60"))
    events = cgroup_file(pid, "pids/pids.events", "pids.events")
    wait_for(lambda: "max 0" not in read(events), what="pids.max to be hit")
    assert int(read(cgroup_file(pid, "pids/pids.current", "pids.current"))) <= 24
    rt.delete(container_id)
    assert not os.path.exists(events)


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_pause_freezes_and_resume_thaws(rt, bundle):
    container_id, pid = rt.start_detached(bundle.sh("while :; do :; done"))
    freezer = cgroup_file(pid, "freezer/freezer.state", "cgroup.freeze")
    frozen, thawed = ("1", "0") if CGROUP_V2 else ("FROZEN", "THAWED")
    rt("pause", container_id)
    assert rt.state(container_id)["status"] == "paused"
    assert read(freezer) == frozen
    before = _cpu_ticks(pid)
    time.sleep(0.3)
    assert _cpu_ticks(pid) == before
    assert status_field(pid, "State")[0] in "DS"  # frozen, not running

    rt("resume", container_id)
    assert rt.state(container_id)["status"] == "running"
    assert read(freezer) == thawed
    ticks = _cpu_ticks(pid)
    wait_for(lambda: _cpu_ticks(pid) > ticks, what="the thawed loop to use CPU")
    rt.delete(container_id)


def test_dev_is_populated(rt, bundle):
    script = (
        "for d in null zero full random urandom tty; do"
        "  [ -c /dev/$d ] && stat -c \"$d %t:%T %a\" /dev/$d; done;"
        "for l in fd stdin stdout stderr ptmx; do readlink /dev/$l; done;"
        "grep -E ' /dev/(pts|shm|mqueue) ' /proc/self/mountinfo"
        " | awk '{for (i = 7; $i != \"-\"; i++); print $5, $(i + 1)}';"
        "head -c 4 /dev/zero | wc -c; echo x > /dev/full 2>/dev/null || echo full-is-full"
    )
    lines = rt.run(bundle.sh(script)).stdout.splitlines()
    assert lines[:6] == ["null 1:3 666", "zero 1:5 666", "full 1:7 666", "random 1:8 666",
                         "urandom 1:9 666", "tty 5:0 666"]
    assert lines[6:11] == ["/proc/self/fd", "/proc/self/fd/0", "/proc/self/fd/1",
                           "/proc/self/fd/2", "pts/ptmx"]
    assert sorted(lines[11:14]) == ["/dev/mqueue mqueue", "/dev/pts devpts", "/dev/shm tmpfs"]
    assert lines[14:] == ["4", "full-is-full"]


def test_configured_devices_and_the_device_cgroup(rt, bundle):
    bundle.linux["devices"] = [{"path": "/dev/kbt-zero", "type": "c", "major": 1, "minor": 5,
                                "fileMode": 0o640, "uid": 0, "gid": 0}]
    out = rt.run(bundle.sh(
        "stat -c '%t:%T %a' /dev/kbt-zero; head -c 3 /dev/kbt-zero | wc -c;"
        "mknod /tmp/kbt-mem c 1 1 2>&1 && head -c 1 /tmp/kbt-mem 2>&1; echo rc=$?"
    ).tmpfs("/tmp"), check=False).stdout
    lines = out.splitlines()
    assert lines[:2] == ["1:5 640", "3"], out
    # mknod is allowed (runc's rules), using /dev/mem is not (the device cgroup)
    assert "Operation not permitted" in out and lines[-1] == "rc=1", out


def test_names_oom_score_umask_groups_and_no_new_privileges(rt, bundle):
    bundle.config["hostname"] = "kbt-h"
    bundle.config["domainname"] = "kbt.example"
    bundle.process["oomScoreAdj"] = 123
    bundle.process["noNewPrivileges"] = True
    bundle.process["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [5, 7], "umask": 0o027}
    out = rt.run(bundle.sh(
        "hostname; cat /proc/sys/kernel/domainname; cat /proc/self/oom_score_adj; umask;"
        "id -u; id -g; grep -E '^(Groups|NoNewPrivs)' /proc/self/status"
    )).stdout.splitlines()
    assert out[:6] == ["kbt-h", "kbt.example", "123", "0027", "1000", "1000"]
    assert out[6].split()[1:] == ["5", "7"]
    assert out[7].split() == ["NoNewPrivs:", "1"]


def test_cgroup_namespace_shows_the_container_cgroup_as_root(rt, bundle):
    bundle.namespace("cgroup")
    out = rt.run(bundle.args("cat", "/proc/self/cgroup")).stdout.splitlines()
    assert out and all(line.endswith(":/") for line in out), out


def test_no_pivot_runs_in_a_chroot(rt, bundle):
    bundle.sh("grep -c kbtuser /etc/passwd; hostname; ls /proc/1/root/bin/busybox").write()
    proc = rt("run", "--no-pivot", "--bundle", bundle.path, rt.new_id())
    assert proc.stdout.split() == ["1", "kobako", "/proc/1/root/bin/busybox"]


def test_bind_mount_options(rt, bundle, tmp_path):
    shared = tmp_path / "data"
    shared.mkdir()
    (shared / "f").write_text("host-data")
    bundle.add_mount("/mnt/ro", "bind", str(shared), ["bind", "ro", "nosuid", "nodev"])
    bundle.add_mount("/mnt/rw", "bind", str(shared), ["rbind", "rw", "noexec"])
    out = rt.run(bundle.sh(
        "cat /mnt/ro/f; echo; touch /mnt/ro/x 2>&1; echo rc=$?; touch /mnt/rw/y; echo rc=$?;"
        "grep ' /mnt/r[ow] ' /proc/self/mountinfo | cut -d' ' -f5,6"
    ), check=False).stdout.splitlines()
    assert out[0] == "host-data"
    assert "Read-only file system" in out[1] and out[2] == "rc=1", out
    assert out[3] == "rc=0" and (shared / "y").exists()
    options = dict(line.split() for line in out[4:])
    assert set(options["/mnt/ro"].split(",")) >= {"ro", "nosuid", "nodev"}
    assert set(options["/mnt/rw"].split(",")) >= {"rw", "noexec"}


@pytest.mark.parametrize("propagation", ["private", "rprivate", "slave", "rslave", "shared",
                                         "rshared"])
def test_rootfs_propagation_leaves_no_mount_on_the_host(rt, bundle, tmp_path, propagation):
    data = tmp_path / "data"
    data.mkdir()
    bundle.linux["rootfsPropagation"] = propagation
    bundle.add_mount("/mnt/data", "bind", str(data), ["rbind", "rw"])
    out = rt.run(bundle.sh("touch /mnt/data/x && awk '$5 == \"/\"' /proc/self/mountinfo | wc -l")
                 ).stdout
    assert out.strip() == "1"
    assert (data / "x").exists()
    # the rt fixture fails the test if a mount mentioning the bundle or rootfs is left
