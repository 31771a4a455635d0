"""Which resource limits this host's cgroups can enforce (dockerd's pkg/sysinfo).

The engine discards what the kernel cannot do, with Docker's warnings, instead of
letting the runtime fail on a missing control file: a kernel without BFQ/CFQ has no
blkio weight files, one without swap accounting no memory.memsw.*. `docker info`
shows the same facts and warnings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import CgroupError
from .host import Host, detect, join, own_cgroup


@dataclass(frozen=True)
class SysInfo:
    version: str = "1"  # the cgroup version, as `docker info` names it
    memory_limit: bool = False
    swap_limit: bool = False
    memory_reservation: bool = False
    memory_swappiness: bool = False
    oom_kill_disable: bool = False
    kernel_memory: bool = False
    cpu_shares: bool = False
    cpu_cfs: bool = False
    cpu_realtime: bool = False
    cpuset: bool = False
    pids_limit: bool = False
    blkio_weight: bool = False
    blkio_weight_device: bool = False
    blkio_read_bps_device: bool = False
    blkio_write_bps_device: bool = False
    blkio_read_iops_device: bool = False
    blkio_write_iops_device: bool = False
    cpus: str = ""  # the cpus and memory nodes a cpuset may ask for ("0-3")
    mems: str = ""

    def warnings(self) -> list[str]:
        """`docker info`'s warnings for what is missing, as current dockerd words them:
        none for what no setting can bring back (oom kill disable on v2, blkio weight on
        v1 since kernel 5.0)."""
        v1 = self.version == "1"
        checks = (
            (self.memory_limit, "No memory limit support"),
            (self.swap_limit, "No swap limit support"),
            (self.oom_kill_disable or not v1, "No oom kill disable support"),
            (self.cpu_cfs, "No cpu cfs quota support"),
            (self.cpu_cfs, "No cpu cfs period support"),
            (self.cpu_shares, "No cpu shares support"),
            (self.cpuset, "No cpuset support"),
            (self.blkio_weight or v1, "No io.weight support"),
            (self.blkio_weight_device or v1, "No io.weight (per device) support"),
            (self.blkio_read_bps_device,
             "No blkio throttle.read_bps_device support" if v1 else "No io.max (rbps) support"),
            (self.blkio_write_bps_device,
             "No blkio throttle.write_bps_device support" if v1 else "No io.max (wbps) support"),
            (self.blkio_read_iops_device,
             "No blkio throttle.read_iops_device support" if v1 else "No io.max (riops) support"),
            (self.blkio_write_iops_device,
             "No blkio throttle.write_iops_device support" if v1
             else "No io.max (wiops) support"),
        )
        return [f"WARNING: {text}" for present, text in checks if not present]


def _v1(host: Host) -> SysInfo:
    def has(controller: str, *files: str) -> bool:
        hierarchy = host.v1.get(controller)
        if hierarchy is None:
            return False
        directory = join(hierarchy.mountpoint, own_cgroup(host, controller))
        return any(os.path.exists(os.path.join(directory, name)) for name in files)

    return SysInfo(
        memory_limit=has("memory", "memory.limit_in_bytes"),
        swap_limit=has("memory", "memory.memsw.limit_in_bytes"),
        memory_reservation=has("memory", "memory.soft_limit_in_bytes"),
        memory_swappiness=has("memory", "memory.swappiness"),
        oom_kill_disable=has("memory", "memory.oom_control"),
        kernel_memory=has("memory", "memory.kmem.limit_in_bytes"),
        cpu_shares=has("cpu", "cpu.shares"),
        cpu_cfs=has("cpu", "cpu.cfs_quota_us"),
        cpu_realtime=has("cpu", "cpu.rt_runtime_us"),
        cpuset=has("cpuset", "cpuset.cpus"),
        pids_limit="pids" in host.v1,
        # CFQ's files, or BFQ's (runc writes whichever exists)
        blkio_weight=has("blkio", "blkio.weight", "blkio.bfq.weight"),
        blkio_weight_device=has("blkio", "blkio.weight_device", "blkio.bfq.weight_device"),
        blkio_read_bps_device=has("blkio", "blkio.throttle.read_bps_device"),
        blkio_write_bps_device=has("blkio", "blkio.throttle.write_bps_device"),
        blkio_read_iops_device=has("blkio", "blkio.throttle.read_iops_device"),
        blkio_write_iops_device=has("blkio", "blkio.throttle.write_iops_device"),
        **_cpuset_lists(host.v1["cpuset"].mountpoint if "cpuset" in host.v1 else None,
                        "cpuset.effective_cpus", "cpuset.effective_mems"),
    )


def _v2(host: Host) -> SysInfo:
    """What the hierarchy's root offers (as dockerd probes "/"): containers go under their
    own parent, which enables what it needs, not under the daemon's cgroup."""
    assert host.unified is not None
    directory = host.unified.mountpoint
    try:
        with open(os.path.join(directory, "cgroup.controllers")) as handle:
            controllers = set(handle.read().split())
    except OSError:
        controllers = set()
    memory, cpu, io = "memory" in controllers, "cpu" in controllers, "io" in controllers
    return SysInfo(
        version="2", memory_limit=memory, swap_limit=memory, memory_reservation=memory,
        cpu_shares=cpu, cpu_cfs=cpu, cpuset="cpuset" in controllers,
        pids_limit="pids" in controllers,
        blkio_weight=io, blkio_weight_device=io, blkio_read_bps_device=io,
        blkio_write_bps_device=io, blkio_read_iops_device=io, blkio_write_iops_device=io,
        **_cpuset_lists(host.unified.mountpoint, "cpuset.cpus.effective",
                        "cpuset.mems.effective"),
    )


def _cpuset_lists(root: str | None, cpus_file: str, mems_file: str) -> dict[str, str]:
    """The root cpuset's cpus and mems (as dockerd reads them), else this machine's cpus."""
    def read(name: str) -> str:
        try:
            with open(os.path.join(root or "", name)) as handle:
                return handle.read().strip()
        except OSError:
            return ""

    cpus = read(cpus_file) if root else ""
    if not cpus:
        cpus = ",".join(str(cpu) for cpu in sorted(os.sched_getaffinity(0)))
    return {"cpus": cpus, "mems": (read(mems_file) if root else "") or "0"}


_probed: SysInfo | None = None


def probe(host: Host | None = None) -> SysInfo:
    """This host's SysInfo; probed once per process unless `host` is given."""
    global _probed
    if host is None:
        if _probed is not None:
            return _probed
        try:
            host = detect()
        except CgroupError:
            return SysInfo()  # no cgroups mounted: nothing can be limited
        _probed = probe(host)
        return _probed
    return _v2(host) if host.mode == "v2" else _v1(host)
