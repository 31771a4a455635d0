"""What the host's cgroups can enforce, read from a fake cgroupfs (pkg/sysinfo's checks)."""

from __future__ import annotations

import os

from kobako.linux.cgroups.host import Hierarchy, Host
from kobako.linux.cgroups.sysinfo import probe


def touch(directory, *names: str) -> None:
    os.makedirs(directory, exist_ok=True)
    for name in names:
        open(os.path.join(directory, name), "w").close()


def test_v1_host_without_blkio_weight_or_swap_accounting(tmp_path):
    # as a 6.x kernel without BFQ/CFQ and booted without swapaccount
    touch(tmp_path / "memory", "memory.limit_in_bytes", "memory.soft_limit_in_bytes",
          "memory.oom_control", "memory.swappiness")
    touch(tmp_path / "cpu", "cpu.shares", "cpu.cfs_quota_us")
    touch(tmp_path / "blkio", "blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device",
          "blkio.throttle.read_iops_device", "blkio.throttle.write_iops_device")
    host = Host("v1", {name: Hierarchy(str(tmp_path / name), (name,))
                       for name in ("memory", "cpu", "blkio", "pids")},
                self_cgroups={"memory": "/", "cpu": "/", "blkio": "/", "pids": "/"})
    info = probe(host)
    assert info.memory_limit and info.memory_reservation and info.oom_kill_disable
    assert not info.swap_limit and not info.kernel_memory and not info.cpu_realtime
    assert info.cpu_shares and info.cpu_cfs and info.pids_limit and not info.cpuset
    assert not info.blkio_weight and not info.blkio_weight_device
    assert info.blkio_read_bps_device and info.blkio_write_iops_device
    # blkio weight goes unmentioned on v1, as in dockerd: no setting brings it back
    assert info.warnings() == ["WARNING: No swap limit support", "WARNING: No cpuset support"]


def test_v1_bfq_weight_files_count_and_the_own_cgroup_is_read(tmp_path):
    touch(tmp_path / "blkio" / "daemon", "blkio.bfq.weight", "blkio.bfq.weight_device")
    host = Host("v1", {"blkio": Hierarchy(str(tmp_path / "blkio"), ("blkio",))},
                self_cgroups={"blkio": "/daemon"})
    info = probe(host)
    assert info.blkio_weight and info.blkio_weight_device and not info.memory_limit


def test_v2_controllers_of_the_hierarchy_root(tmp_path):
    """As dockerd: the root's controllers, not the daemon's own cgroup's (a service's
    cgroup may enable fewer; containers get their own parent)."""
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu pids memory\n")
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "cgroup.controllers").write_text("memory\n")
    host = Host("v2", unified=Hierarchy(str(tmp_path), ("",)), self_cgroups={"": "/svc"})
    info = probe(host)
    assert info.version == "2"
    assert info.memory_limit and info.swap_limit and info.cpu_cfs and info.pids_limit
    assert not info.oom_kill_disable and not info.memory_swappiness and not info.blkio_weight
    assert info.warnings() == ["WARNING: No io.weight support",
                               "WARNING: No io.weight (per device) support",
                               "WARNING: No io.max (rbps) support",
                               "WARNING: No io.max (wbps) support",
                               "WARNING: No io.max (riops) support",
                               "WARNING: No io.max (wiops) support"]
