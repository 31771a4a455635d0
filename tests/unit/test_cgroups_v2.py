"""The v2 manager against a fake unified cgroupfs: what it writes, in what order."""

import os
import signal

import pytest
from fake_cgroups import installed_fake
from fake_cgroups import open_on as open_v2

from kobako.linux import cgroups


@pytest.fixture
def fake(tmp_path):
    with installed_fake(str(tmp_path), mode="v2",
                        self_cgroup="/user.slice/session-1.scope") as tree:
        yield tree


def test_detects_v2(fake):
    assert cgroups.host_mode(fake.mountinfo, fake.proc_cgroup) == "v2"


def test_paths_absolute_relative_default_and_systemd(fake):
    root = fake.mountpoints[""]
    assert open_v2(fake).paths == {"": f"{root}/kbt/c1"}
    # relative: under the parent of our own cgroup, as runc (ours has processes)
    assert open_v2(fake, "rel/x").paths == {"": f"{root}/user.slice/rel/x"}
    assert open_v2(fake, None).paths == {"": f"{root}/kobako/c1"}
    assert open_v2(fake, "machine.slice:libpod:abc", systemd=True).paths == {
        "": f"{root}/machine.slice/libpod-abc.scope"}


def test_create_enables_controllers_top_down(fake):
    mgr = open_v2(fake)
    mgr.create()
    root = fake.mountpoints[""]
    assert os.path.isdir(mgr.paths[""])
    enabled_root = fake.read(f"{root}/cgroup.subtree_control").split()
    enabled_mid = fake.read(f"{root}/kbt/cgroup.subtree_control").split()
    assert set(enabled_root) == set(enabled_mid) == {"cpuset", "cpu", "io", "memory", "hugetlb",
                                                     "pids"}
    assert os.path.exists(os.path.join(mgr.paths[""], "memory.max"))


def test_create_survives_a_refusing_controller_and_apply_says_why(fake):
    fake.refuse["cgroup.subtree_control"] = 16  # EBUSY for every write: nothing enabled
    mgr = open_v2(fake)
    mgr.create()
    assert mgr.unavailable  # recorded, not silently dropped
    with pytest.raises(cgroups.CgroupError, match="memory.max.*could not be enabled"):
        mgr.apply({"memory": {"limit": 1 << 20}})


def test_apply_converts_like_runc(fake):
    mgr = open_v2(fake)
    mgr.create()
    mgr.apply({
        "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"},
        "memory": {"limit": 100 << 20, "swap": 300 << 20, "reservation": 50 << 20},
        "pids": {"limit": 10},
        "blockIO": {"weight": 500, "throttleReadBpsDevice": [{"major": 8, "minor": 0,
                                                               "rate": 1048576}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}],
        "network": {"classID": 1},
    })
    written = fake.writes_under(mgr.paths[""])
    assert written == [
        ("cpu.weight", "39"),
        ("cpu.max", "50000 100000"),
        ("cpuset.cpus", "0-1"),
        ("cpuset.mems", "0"),
        ("memory.swap.max", str(200 << 20)),
        ("memory.max", str(100 << 20)),
        ("memory.low", str(50 << 20)),
        ("pids.max", "10"),
        ("io.weight", "4950"),
        ("io.max", "8:0 rbps=1048576"),
        ("io.max", "8:0 wiops=100"),
        ("hugetlb.2MB.max", str(4 << 20)),
    ]


def test_apply_only_present_fields_and_unlimited_values(fake):
    mgr = open_v2(fake)
    mgr.create()
    mgr.apply({"pids": {"limit": -1}, "cpu": {"quota": -1, "period": 100000},
               "memory": {"limit": -1}})
    assert fake.writes_under(mgr.paths[""]) == [
        ("cpu.max", "max 100000"), ("memory.swap.max", "max"), ("memory.max", "max"),
        ("pids.max", "max")]


def test_unified_overrides_and_rejects_path_keys(fake):
    mgr = open_v2(fake)
    mgr.create()
    mgr.apply({"memory": {"limit": 1 << 20}, "unified": {"memory.high": "512000"}})
    assert fake.read(os.path.join(mgr.paths[""], "memory.high")) == "512000"
    with pytest.raises(cgroups.CgroupError, match="invalid"):
        mgr.apply({"unified": {"../../etc/passwd": "x"}})


def test_invalid_or_unsupported_values_are_clear_errors(fake):
    mgr = open_v2(fake)
    mgr.create()
    fake.refuse["pids.max"] = 22
    with pytest.raises(cgroups.CgroupError, match=r"write '10' to .*pids.max: Invalid argument"):
        mgr.apply({"pids": {"limit": 10}})
    with pytest.raises(cgroups.CgroupError, match="realtime"):
        mgr.apply({"cpu": {"realtimeRuntime": 1000}})
    with pytest.raises(cgroups.CgroupError, match="kmem"):
        mgr.apply({"memory": {"kernel": 1 << 20}})
    with pytest.raises(cgroups.CgroupError, match="hugetlb.1GB.max does not exist"):
        mgr.apply({"hugepageLimits": [{"pageSize": "1GB", "limit": 0}]})


def test_missing_swap_file_is_fine_unless_a_value_is_asked(fake):
    mgr = open_v2(fake)
    mgr.create()
    os.remove(os.path.join(mgr.paths[""], "memory.swap.max"))  # no swap accounting
    mgr.apply({"memory": {"limit": 1 << 20, "swap": -1}})
    with pytest.raises(cgroups.CgroupError, match="swap accounting"):
        mgr.apply({"memory": {"limit": 1 << 20, "swap": 3 << 20}})


def test_freeze_thaw_and_frozen(fake):
    mgr = open_v2(fake)
    mgr.create()
    assert not mgr.frozen()
    mgr.freeze()
    assert mgr.frozen()
    mgr.thaw()
    assert not mgr.frozen()


def test_kill_all_uses_cgroup_kill_for_sigkill(fake):
    mgr = open_v2(fake)
    mgr.create()
    mgr.kill_all(signal.SIGKILL)
    assert fake.writes_under(mgr.paths[""])[-1] == ("cgroup.kill", "1")


def test_add_procs_stats_and_oom_count(fake):
    mgr = open_v2(fake)
    mgr.create()
    mgr.add(4242)
    assert mgr.procs() == [4242]
    stats = mgr.stats()
    assert stats["cpu"]["usage"] == {"total": 5000, "kernel": 2000, "user": 3000}
    assert stats["cpu"]["throttling"] == {"periods": 4, "throttledPeriods": 1,
                                          "throttledTime": 7000}
    assert stats["memory"]["usage"] == {"limit": 2**64 - 1, "usage": 4096, "max": 8192,
                                        "failcnt": 2}
    assert stats["memory"]["raw"] == {"anon": 100, "file": 200}
    assert stats["pids"] == {"current": 2, "limit": 0}
    assert stats["blkio"]["ioServiceBytesRecursive"] == [
        {"major": 8, "minor": 0, "op": "Read", "value": 10},
        {"major": 8, "minor": 0, "op": "Write", "value": 20}]
    assert stats["hugetlb"] == {"2MB": {"usage": 0, "max": 2**64 - 1, "failcnt": 0}}
    assert mgr.oom_kill_count() == 1


def test_destroy_removes_created_dirs_and_is_idempotent(fake):
    mgr = open_v2(fake)
    mgr.create()
    again = cgroups.manager_for_paths(mgr.paths)
    assert isinstance(again, cgroups.V2Manager)
    mgr.destroy()
    assert not os.path.exists(mgr.paths[""])
    assert not os.path.exists(os.path.join(fake.mountpoints[""], "kbt"))
    mgr.destroy()
    again.destroy()


def test_destroy_reports_busy_cgroup(fake, monkeypatch):
    from kobako.linux.cgroups import fs
    mgr = open_v2(fake)
    mgr.create()
    mgr.add(4242)  # a "process" that never leaves
    real_remove = fs.remove_tree
    monkeypatch.setattr(fs, "remove_tree", lambda path: real_remove(path, timeout=0.05))
    with pytest.raises(cgroups.CgroupError, match=r"processes still inside: \[4242\]"):
        mgr.destroy()
