"""The v1/hybrid manager against a fake cgroupfs: paths, write order, stats."""

import os

import pytest
from fake_cgroups import installed_fake
from fake_cgroups import open_on as open_v1

from kobako.linux import cgroups


@pytest.fixture
def fake(tmp_path):
    with installed_fake(str(tmp_path), mode="hybrid", self_cgroup="/outer") as tree:
        yield tree


def test_hybrid_reports_v1_and_has_every_hierarchy(fake):
    assert cgroups.host_mode(fake.mountinfo, fake.proc_cgroup) == "v1"
    mgr = open_v1(fake)
    assert set(mgr.paths) == {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer",
                              "blkio", "pids", "name=systemd", ""}
    assert mgr.paths["memory"] == fake.mountpoints["memory"] + "/kbt/c1"
    assert mgr.paths[""] == fake.mountpoints[""] + "/kbt/c1"
    assert open_v1(fake, "rel").paths["pids"] == fake.mountpoints["pids"] + "/outer/rel"


def test_create_copies_cpuset_into_every_new_level_and_enables_unified_hugetlb(fake):
    mgr = open_v1(fake)
    mgr.create()
    for level in (fake.mountpoints["cpuset"] + "/kbt", mgr.paths["cpuset"]):
        assert fake.read(level + "/cpuset.cpus") == "0-3"
        assert fake.read(level + "/cpuset.mems") == "0"
    assert fake.read(fake.mountpoints[""] + "/cgroup.subtree_control") == "hugetlb"
    assert os.path.exists(mgr.paths[""] + "/hugetlb.2MB.max")


def test_apply_writes_in_runc_order(fake):
    mgr = open_v1(fake)
    mgr.create()
    fake.writes.clear()
    mgr.apply({
        "devices": [{"allow": False, "access": "rwm"},
                    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}],
        "memory": {"limit": 100 << 20, "swap": 200 << 20, "reservation": 10 << 20,
                   "swappiness": 0, "disableOOMKiller": True},
        "cpu": {"shares": 512, "quota": 20000, "period": 50000, "cpus": "1", "mems": "0"},
        "pids": {"limit": 0},
        "blockIO": {"weight": 300, "weightDevice": [{"major": 8, "minor": 0, "weight": 200}],
                    "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 4096}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 2 << 20}],
    })
    rel = [(os.path.relpath(path, fake.mountpoints[""] + "/..").split("/", 1)[0]
            + ":" + os.path.basename(path), value) for path, value in fake.writes]
    assert rel == [
        ("cpuset:cpuset.cpus", "1"), ("cpuset:cpuset.mems", "0"),
        ("devices:devices.deny", "a"), ("devices:devices.deny", "a *:* rwm"),
        ("devices:devices.allow", "c 1:3 rwm"),
        # memory limit was "unlimited" (> swap): memory first, then memsw
        ("memory:memory.limit_in_bytes", str(100 << 20)),
        ("memory:memory.memsw.limit_in_bytes", str(200 << 20)),
        ("memory:memory.soft_limit_in_bytes", str(10 << 20)),
        ("memory:memory.swappiness", "0"), ("memory:memory.oom_control", "1"),
        ("cpu:cpu.shares", "512"), ("cpu:cpu.cfs_period_us", "50000"),
        ("cpu:cpu.cfs_quota_us", "20000"),
        ("pids:pids.max", "max"),
        ("blkio:blkio.weight", "300"), ("blkio:blkio.weight_device", "8:0 200"),
        ("blkio:blkio.throttle.write_bps_device", "8:0 4096"),
        # no v1 hugetlb hierarchy on this host: the hybrid unified dir takes the limit
        ("unified:hugetlb.2MB.max", str(2 << 20)),
    ]


def test_raising_memory_and_swap_writes_swap_first(fake):
    mgr = open_v1(fake)
    mgr.create()
    mgr.apply({"memory": {"limit": 100, "swap": 200}})
    fake.writes.clear()
    mgr.apply({"memory": {"limit": 300, "swap": 600}})
    assert [os.path.basename(p) for p, _ in fake.writes] == [
        "memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]


def test_requested_value_for_missing_file_names_it(fake):
    mgr = open_v1(fake)
    mgr.create()
    os.remove(mgr.paths["memory"] + "/memory.kmem.limit_in_bytes")
    mgr.apply({"memory": {"kernel": 0}})  # unset: nothing to do
    with pytest.raises(cgroups.CgroupError, match="memory.kmem.limit_in_bytes does not exist"):
        mgr.apply({"memory": {"kernel": 1 << 20}})
    with pytest.raises(cgroups.CgroupError, match="cgroup v2"):
        mgr.apply({"unified": {"memory.high": "1"}})


def test_cpu_shares_clamped_by_kernel_is_an_error(fake, monkeypatch):
    from kobako.linux.cgroups import fs
    mgr = open_v1(fake)
    mgr.create()
    real_write = fs.write

    def clamping_write(directory, name, value):
        real_write(directory, name, min(int(value), 262144) if name == "cpu.shares" else value)
    monkeypatch.setattr(fs, "write", clamping_write)
    with pytest.raises(cgroups.CgroupError, match="maximum allowed cpu-shares is 262144"):
        mgr.apply({"cpu": {"shares": 999999}})


def test_freeze_kill_and_stats(fake):
    mgr = open_v1(fake)
    mgr.create()
    mgr.freeze()
    assert mgr.frozen()
    mgr.thaw()
    assert not mgr.frozen()
    stats = mgr.stats()
    assert stats["cpu"]["usage"]["total"] == 3000
    assert stats["cpu"]["usage"]["percpu"] == [1000, 2000]
    assert stats["cpu"]["usage"]["user"] == 3 * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    assert stats["cpu"]["throttling"] == {"periods": 7, "throttledPeriods": 2,
                                          "throttledTime": 5000}
    assert stats["memory"]["usage"] == {"limit": 9223372036854771712, "usage": 4096,
                                        "max": 8192, "failcnt": 1}
    assert stats["memory"]["raw"] == {"cache": 100, "rss": 200}
    assert stats["blkio"]["ioServiceBytesRecursive"][1] == {"major": 8, "minor": 0,
                                                            "op": "Write", "value": 20}
    assert stats["pids"] == {"current": 2, "limit": 0}
    assert "hugetlb" in stats
    assert mgr.oom_kill_count() == 3


def test_manager_for_paths_and_destroy(fake):
    mgr = open_v1(fake)
    mgr.create()
    again = cgroups.manager_for_paths(mgr.paths)
    assert isinstance(again, cgroups.V1Manager)
    again.add(777)
    assert mgr.procs() == [777]
    fake.write(mgr.paths["pids"], "cgroup.procs", "")  # the process "left"
    for directory in mgr.directories():
        with open(directory + "/cgroup.procs", "w"):
            pass
    again.destroy()
    assert not any(os.path.exists(p) for p in mgr.paths.values())
    mgr.destroy()  # idempotent; also drops the /kbt parents it created
    assert not os.path.exists(fake.mountpoints["memory"] + "/kbt")


def test_create_fills_an_empty_cpuset_parent_made_by_someone_else(fake):
    parent = fake.mountpoints["cpuset"] + "/kbt"
    fake.mkdir(parent)  # exists already, with empty cpus/mems (clone_children off)
    mgr = open_v1(fake)
    mgr.create()
    assert fake.read(parent + "/cpuset.cpus") == "0-3"
    assert fake.read(mgr.paths["cpuset"] + "/cpuset.mems") == "0"
