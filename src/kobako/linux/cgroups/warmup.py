"""Take the kernel's grace-period wait off the path of a cgroup migration.

Writing a pid to cgroup.procs takes the kernel's cgroup_threadgroup_rwsem for
writing, and that first waits for an RCU grace period (~8 ms on these machines)
unless another writer took it within the last grace period. Every container start
and every exec migrates a process, so each would pay that wait in full, after the
forks that prepare the process. `start()` begins a no-op migration (this process
into the cgroup it is already in) on a thread, so the wait runs alongside that
preparation and the real migration that follows finds the lock's fast path.
"""

from __future__ import annotations

import _thread
import os

from .errors import CgroupError
from .host import UNIFIED, detect, join, own_cgroup

_procs_file: str | None = None


def _own_procs_file() -> str:
    """cgroup.procs of the cgroup this process is in, in one of the host's hierarchies
    (the lock is one for all of them)."""
    global _procs_file
    if _procs_file is None:
        host = detect()
        if host.mode == "v2":
            assert host.unified is not None
            mountpoint, controller = host.unified.mountpoint, UNIFIED
        else:
            controller, hierarchy = next(iter(sorted(host.v1.items())))
            mountpoint = hierarchy.mountpoint
        _procs_file = os.path.join(join(mountpoint, own_cgroup(host, controller)),
                                   "cgroup.procs")
    return _procs_file


def _migrate_to_same_cgroup() -> None:
    try:
        with open(_own_procs_file(), "w") as f:
            f.write(str(os.getpid()))
    except (OSError, CgroupError):
        pass  # only an optimization: the real migration then waits as it would anyway


def start() -> None:
    """Begin the warm-up and return at once (a bare thread: `threading` costs the
    runtime's start-up an import)."""
    _thread.start_new_thread(_migrate_to_same_cgroup, ())
