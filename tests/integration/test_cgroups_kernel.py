"""cgroup managers against the real kernel (v1/hybrid here): limits, processes, freezer,
pids and memory enforcement, stats, cleanup. Every cgroup lives under a unique prefix."""

import glob
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from forked import in_child

from kobako.linux import cgroups
from kobako.linux.cgroups import sysinfo

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not os.path.isdir("/sys/fs/cgroup"), reason="no cgroupfs"),
]


def leftovers(prefix: str) -> list[str]:
    return glob.glob(f"/sys/fs/cgroup/*/{prefix}") + glob.glob(f"/sys/fs/cgroup/{prefix}")


@pytest.fixture
def prefix():
    name = f"kbtest-{uuid.uuid4().hex[:10]}"
    yield name
    # whatever a failing test left behind: kill its processes, remove its cgroups
    for top in leftovers(name):
        for directory, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            procs = os.path.join(directory, "cgroup.procs")
            if os.path.exists(procs):
                with open(procs) as handle:
                    for pid in handle.read().split():
                        os.kill(int(pid), signal.SIGKILL)
            state = os.path.join(directory, "freezer.state")
            if os.path.exists(state):
                with open(state, "w") as handle:
                    handle.write("THAWED")
        cgroups.manager_for_paths({"leftover": top}).destroy()
    assert not leftovers(name)


@pytest.fixture
def mgr(prefix):
    manager = cgroups.open_manager(f"/{prefix}/c1", "c1")
    manager.create()
    yield manager
    manager.kill_all(signal.SIGKILL)
    manager.destroy()
    assert not any(os.path.exists(p) for p in manager.paths.values())


def start_in(manager, argv: list[str], **kwargs) -> subprocess.Popen:
    """Start argv inside the cgroup: it waits on stdin until it has joined."""
    proc = subprocess.Popen(["sh", "-c", 'read _ ; exec "$@"', "sh", *argv],
                            stdin=subprocess.PIPE, **kwargs)
    manager.add(proc.pid)
    assert proc.stdin is not None
    proc.stdin.write(b"go\n")
    proc.stdin.close()
    proc.stdin = None  # so communicate() does not touch it
    return proc


def read(directory: str, name: str) -> str:
    with open(os.path.join(directory, name)) as handle:
        return handle.read().strip()


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_host_mode_matches_mounts():
    mode = cgroups.host_mode()
    with open("/proc/self/mountinfo") as handle:
        has_v1 = " - cgroup cgroup " in handle.read()
    assert mode == ("v1" if has_v1 else "v2")


def test_apply_limits_reach_the_kernel_files(mgr):
    if mgr.mode != "v1":
        pytest.skip("v1 file checks")
    # a kernel without BFQ/CFQ has no weight file (the engine discards the setting)
    weighted = sysinfo.probe().blkio_weight
    mgr.apply({
        "cpu": {"shares": 512, "quota": 25000, "period": 100000, "cpus": "0", "mems": "0"},
        "memory": {"limit": 64 << 20, "swap": 64 << 20, "reservation": 32 << 20},
        "pids": {"limit": 42},
        "blockIO": {"weight": 300} if weighted else {},
        "devices": [{"allow": False, "access": "rwm"},
                    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                    {"allow": True, "type": "c", "major": 5, "minor": -1, "access": "r"}],
    })
    p = mgr.paths
    assert read(p["cpu"], "cpu.shares") == "512"
    assert read(p["cpu"], "cpu.cfs_quota_us") == "25000"
    assert read(p["cpu"], "cpu.cfs_period_us") == "100000"
    assert read(p["cpuset"], "cpuset.cpus") == "0"
    assert read(p["memory"], "memory.limit_in_bytes") == str(64 << 20)
    assert read(p["memory"], "memory.soft_limit_in_bytes") == str(32 << 20)
    assert read(p["pids"], "pids.max") == "42"
    if weighted:
        weight_file = "blkio.weight" if os.path.exists(p["blkio"] + "/blkio.weight") else \
            "blkio.bfq.weight"
        assert read(p["blkio"], weight_file).split()[-1] == "300"
    assert read(p["devices"], "devices.list").splitlines() == ["c 1:3 rwm", "c 5:* r"]
    # update: only the fields present change
    mgr.apply({"pids": {"limit": -1}})
    assert read(p["pids"], "pids.max") == "max"
    assert read(p["cpu"], "cpu.shares") == "512"


def test_invalid_value_is_a_clear_error(mgr):
    with pytest.raises(cgroups.CgroupError, match=r"cpuset.cpus.*(Invalid|Numerical|result)"):
        mgr.apply({"cpu": {"cpus": "9999"}})


def test_device_rules_are_enforced(mgr):
    mgr.apply({"devices": [{"allow": True, "type": "c", "major": 1, "minor": 3,
                            "access": "rwm"}]})
    proc = start_in(mgr, ["sh", "-c", "head -c1 /dev/zero > /dev/null; echo zero=$?; "
                          "echo hi > /dev/null; echo null=$?"],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out, _ = proc.communicate(timeout=10)
    assert out.decode().split() == ["zero=1", "null=0"]


def test_process_joins_freezes_thaws_and_has_stats(mgr):
    mgr.apply({"pids": {"limit": 20}, "memory": {"limit": 256 << 20}})
    proc = start_in(mgr, ["sh", "-c", "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; "
                          "exec sleep 60"])
    wait_for(lambda: mgr.procs() == [proc.pid])
    with open(f"/proc/{proc.pid}/cgroup") as handle:
        own = handle.read()
    assert f"/{os.path.basename(os.path.dirname(mgr.paths['' if mgr.mode == 'v2' else 'pids']))}/c1" \
        in own
    wait_for(lambda: open(f"/proc/{proc.pid}/cmdline").read().startswith("sleep"))

    mgr.freeze()
    assert mgr.frozen()
    if mgr.mode == "v1":
        assert read(mgr.paths["freezer"], "freezer.state") == "FROZEN"
    mgr.thaw()
    assert not mgr.frozen()

    stats = mgr.stats()
    assert stats["cpu"]["usage"]["total"] > 1_000_000  # the shell loop took > 1 ms
    assert stats["memory"]["usage"]["usage"] > 0
    assert stats["memory"]["usage"]["limit"] == 256 << 20
    assert stats["pids"] == {"current": 1, "limit": 20}
    assert isinstance(stats["memory"]["raw"], dict) and stats["memory"]["raw"]

    cgroups.manager_for_paths(mgr.paths).kill_all(signal.SIGTERM)
    assert proc.wait(timeout=10) == -signal.SIGTERM


def test_pids_limit_stops_a_fork_bomb(mgr):
    mgr.apply({"pids": {"limit": 10}})
    proc = start_in(mgr, ["sh", "-c", "for i in $(seq 50); do sleep 60 & done; wait"],
                    stderr=subprocess.DEVNULL)
    pids_dir = mgr.paths["" if mgr.mode == "v2" else "pids"]
    wait_for(lambda: int(read(pids_dir, "pids.events").split()[1]) > 0)
    assert int(read(pids_dir, "pids.current")) <= 10
    assert len(mgr.procs()) <= 10
    mgr.kill_all(signal.SIGKILL)
    proc.wait(timeout=10)
    wait_for(lambda: mgr.procs() == [])


def test_memory_hog_is_oom_killed(mgr):
    mgr.apply({"memory": {"limit": 32 << 20, "swap": 32 << 20}})
    assert mgr.oom_kill_count() == 0
    hog = "b = bytearray(256 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\n"
    proc = start_in(mgr, [sys.executable, "-S", "-c", hog], stderr=subprocess.DEVNULL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert mgr.oom_kill_count() == 1
    usage = mgr.stats()["memory"]["usage"]
    assert usage["max"] >= usage["limit"] - (1 << 20)  # the peak reached the limit
    assert usage["limit"] == 32 << 20


def test_destroy_waits_for_processes_to_drain(mgr):
    proc = start_in(mgr, ["sleep", "60"])
    wait_for(lambda: mgr.procs() == [proc.pid])
    mgr.kill_all(signal.SIGKILL)
    mgr.destroy()
    proc.wait(timeout=10)
    assert not any(os.path.exists(p) for p in mgr.paths.values())
    mgr.destroy()  # idempotent


def test_systemd_path_and_relative_path_layouts(prefix):
    systemd = cgroups.open_manager(f"{prefix}.slice:kobako:abc", "abc", systemd=True)
    for directory in systemd.paths.values():
        assert directory.endswith(f"/{prefix}.slice/kobako-abc.scope")
    systemd.create()
    systemd.destroy()
    assert not leftovers(f"{prefix}.slice")

    relative = cgroups.open_manager(prefix, "x")
    with open("/proc/self/cgroup") as handle:
        own = {line.split(":")[1]: line.split(":")[2].strip() for line in handle}
    if relative.mode == "v1":
        expected = os.path.join(own["memory"], prefix)
        assert relative.paths["memory"].endswith(expected)


def test_hybrid_hugetlb_goes_to_the_unified_dir(mgr):
    if mgr.mode != "v1" or "" not in mgr.paths or "hugetlb" in mgr.paths:
        pytest.skip("needs a hybrid host without a v1 hugetlb hierarchy")
    if not os.path.exists(mgr.paths[""] + "/hugetlb.2MB.max"):
        pytest.skip("no 2MB hugetlb in the unified hierarchy")
    mgr.apply({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}]})
    assert read(mgr.paths[""], "hugetlb.2MB.max") == str(4 << 20)
    assert mgr.stats()["hugetlb"]["2MB"]["max"] == 4 << 20
    proc = start_in(mgr, ["sleep", "60"])
    with open(mgr.paths[""] + "/cgroup.procs") as handle:
        assert str(proc.pid) in handle.read().split()


def test_ebpf_device_filter_on_the_unified_hierarchy(mgr):
    """The v2 device filter, attached for real (a hybrid host's unified dir works too)."""
    from kobako.linux.cgroups import devices_bpf, ebpf
    if "" not in mgr.paths:
        pytest.skip("no unified hierarchy")
    unified = mgr.paths[""]
    rules = [{"allow": False, "access": "rwm"},
             {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
             {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"}]
    devices_bpf.apply(unified, rules)
    devices_bpf.apply(unified, rules)  # an update replaces the program, never stacks
    fd = os.open(unified, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert len(ebpf.attached_ids(fd)) == 1
    finally:
        os.close(fd)
    proc = start_in(mgr, ["sh", "-c", "head -c1 /dev/zero > /dev/null; echo zero_r=$?; "
                          "echo x > /dev/zero; echo zero_w=$?; "
                          "head -c1 /dev/urandom > /dev/null; echo urandom=$?"],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out, _ = proc.communicate(timeout=10)
    assert out.decode().split() == ["zero_r=0", "zero_w=2", "urandom=1"]


def _cgroup_lines() -> dict[str, str]:
    """/proc/self/cgroup as {controller ("" for the unified hierarchy): path}."""
    out = {}
    with open("/proc/self/cgroup") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            out.update(dict.fromkeys(controllers.split(","), path))
    return out


def _born_child_cgroups(mgr, *, without_clone3: bool = False) -> dict:
    """Fork, as exec's stage 1 does, a child through CgroupBirth; where both ended up."""
    from kobako.linux.cgroups import birth

    def stage1():
        if without_clone3:
            birth._clone_into = lambda path, fd: None
        entry = birth.CgroupBirth(mgr.paths)
        r, w = os.pipe()
        pid = entry.fork()
        if pid == 0:
            os.write(w, json.dumps(_cgroup_lines()).encode())
            os._exit(0)
        os.close(w)
        child = json.loads(os.read(r, 65536))
        os.waitpid(pid, 0)
        return {"child": child, "stage1": _cgroup_lines()}

    return in_child(stage1)


@pytest.mark.parametrize("without_clone3", [False, True], ids=["clone3", "procs-fallback"])
def test_birth_forks_a_child_into_every_hierarchy(mgr, prefix, without_clone3):
    seen = _born_child_cgroups(mgr, without_clone3=without_clone3)
    ours = f"/{prefix}/c1"
    joined = set(mgr.paths) & set(seen["child"])
    assert joined
    for key in joined:
        assert seen["child"][key] == ours, (key, seen["child"][key])
    # stage 1 entered the v1 hierarchies itself (its children follow), the unified one
    # only when clone3 was missing
    for key in joined:
        assert (seen["stage1"][key] == ours) == (key != "" or without_clone3), key


def test_birth_into_a_full_pids_cgroup_is_a_clear_error(mgr):
    if mgr.mode == "v2":
        pytest.skip("v2: stage 1 stays outside (CLONE_INTO_CGROUP), so one pid fits the child")
    mgr.apply({"pids": {"limit": 1}})  # stage 1 itself takes the one pid (v1 moves it in)

    def stage1():
        from kobako.linux.cgroups import birth

        try:
            pid = birth.CgroupBirth(mgr.paths).fork()
        except OSError as err:
            return str(err)
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        return "forked"

    message = in_child(stage1)
    assert "Resource temporarily unavailable" in message, message
