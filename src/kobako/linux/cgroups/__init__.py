"""cgroup managers for the runtime: v1 (and hybrid) and v2 behind one interface.

    mgr = open_manager(cgroups_path, container_id, systemd=False)
    mgr.create(); mgr.apply(resources); mgr.add(pid) ... mgr.destroy()
    manager_for_paths(mgr.paths)   # later, from the saved paths

Only the small modules load at import time; devices' eBPF code loads when used.
"""

from __future__ import annotations

from . import paths as _paths
from .errors import CgroupError
from .host import MOUNTINFO, PROC_CGROUP, UNIFIED, Host, detect, host_mode
from .manager import CgroupManager
from .v1 import V1Manager
from .v2 import V2Manager

__all__ = [
    "CgroupError", "CgroupManager", "Host", "UNIFIED", "V1Manager", "V2Manager", "detect",
    "host_mode", "manager_for_paths", "open_manager",
]


def open_manager(
    cgroups_path: str | None, container_id: str, systemd: bool = False, *,
    mountinfo: str = MOUNTINFO, proc_cgroup: str = PROC_CGROUP,
) -> CgroupManager:
    """The manager for a container's cgroup on this host (nothing is created yet)."""
    host = detect(mountinfo, proc_cgroup)
    cgroup = _paths.resolve(cgroups_path, container_id, systemd)
    if host.mode == "v2":
        from .v2 import paths_for as v2_paths
        assert host.unified is not None
        return V2Manager(v2_paths(host, cgroup), mountpoint=host.unified.mountpoint)
    from .v1 import paths_for as v1_paths
    return V1Manager(v1_paths(host, cgroup))


def manager_for_paths(paths: dict[str, str]) -> CgroupManager:
    """Rebuild a manager from `mgr.paths` saved earlier."""
    if not paths:
        raise CgroupError("no cgroup paths saved for this container")
    if set(paths) == {UNIFIED}:
        return V2Manager(paths)
    return V1Manager(paths)
