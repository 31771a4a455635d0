"""What cgroup layout this host has: from /proc/self/mountinfo and /proc/self/cgroup.

"v2" means the unified hierarchy is the only one; "v1" means v1 controller
hierarchies are mounted, possibly beside a cgroup2 "unified" mount (hybrid).
The two file paths are parameters so unit tests can describe a fake host whose
mountpoints live in a temporary directory.
"""

from __future__ import annotations

import os
from collections import namedtuple

from kobako.linux.mountpoints import unescape

from .errors import CgroupError

MOUNTINFO = "/proc/self/mountinfo"
PROC_CGROUP = "/proc/self/cgroup"

# The key of the unified (cgroup2) hierarchy in paths dicts, as runc uses it.
UNIFIED = ""


# mountpoint; controllers: for v1 those the hierarchy carries ("cpu", "cpuacct",
# "name=systemd"), for the unified hierarchy ("",); root: the mount's root inside the
# hierarchy (not "/" inside a cgroup namespace).
# (namedtuple rather than a dataclass: the runtime's start-up time counts every import)
Hierarchy = namedtuple("Hierarchy", ["mountpoint", "controllers", "root"], defaults=["/"])


class Host:
    def __init__(self, mode: str, v1: dict[str, Hierarchy] | None = None,
                 unified: Hierarchy | None = None, self_cgroups: dict[str, str] | None = None):
        self.mode = mode  # "v1" (including hybrid) or "v2"
        self.v1 = v1 or {}  # controller -> hierarchy
        self.unified = unified
        # controller -> this process's cgroup path ("" for the unified hierarchy)
        self.self_cgroups = self_cgroups or {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Host) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"Host({vars(self)!r})"

    @property
    def hybrid(self) -> bool:
        return self.mode == "v1" and self.unified is not None


# cgroup v1 super options that are not controller names (kernel/cgroup/cgroup-v1.c)
_V1_MOUNT_OPTIONS = frozenset({"rw", "ro", "none", "all", "noprefix", "clone_children",
                               "xattr", "cpuset_v2_mode", "favordynmods", "nofavordynmods"})


def parse_mountinfo(text: str) -> tuple[dict[str, Hierarchy], Hierarchy | None]:
    v1: dict[str, Hierarchy] = {}
    unified: Hierarchy | None = None
    for line in text.splitlines():
        try:
            left, right = line.split(" - ", 1)
        except ValueError:
            continue  # not a mount line
        fields = left.split()
        fstype, _source, *options = right.split()
        root, mountpoint = unescape(fields[3]), unescape(fields[4])
        if fstype == "cgroup2":
            # prefer the first mount (a later one is usually a bind into a container)
            if unified is None:
                unified = Hierarchy(mountpoint, (UNIFIED,), root)
        elif fstype == "cgroup":
            super_options = options[0].split(",") if options else []
            controllers = tuple(
                opt for opt in super_options
                if opt not in _V1_MOUNT_OPTIONS and ("=" not in opt or opt.startswith("name="))
            )
            hierarchy = Hierarchy(mountpoint, controllers, root)
            for controller in controllers:
                v1.setdefault(controller, hierarchy)
    return v1, unified


def parse_proc_cgroup(text: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _hid, controllers, path = parts
        if controllers == "":
            result[UNIFIED] = path
        else:
            for controller in controllers.split(","):
                result[controller] = path
    return result


def detect(mountinfo: str = MOUNTINFO, proc_cgroup: str = PROC_CGROUP) -> Host:
    try:
        with open(mountinfo) as handle:
            v1, unified = parse_mountinfo(handle.read())
        with open(proc_cgroup) as handle:
            self_cgroups = parse_proc_cgroup(handle.read())
    except OSError as err:
        raise CgroupError(f"read {err.filename}: {err.strerror}", err.filename) from None
    # a v1 hierarchy with no controller (name=systemd, mounted on v2 hosts for old
    # systemd containers) does not make the host v1, as runc sees it
    if any(not c.startswith("name=") for c in v1):
        return Host("v1", v1, unified, self_cgroups)
    if unified is not None:
        return Host("v2", {}, unified, self_cgroups)
    raise CgroupError("no cgroup filesystem is mounted (see /proc/self/mountinfo)")


def own_cgroup(host: Host, controller: str) -> str:
    """This process's cgroup in `controller`'s hierarchy, relative to that mount's root."""
    path = host.self_cgroups.get(controller, "/")
    hierarchy = host.unified if controller == UNIFIED else host.v1.get(controller)
    root = hierarchy.root if hierarchy else "/"
    # Inside a cgroup namespace the mount root and our path share a prefix.
    if root != "/" and (path == root or path.startswith(root + "/")):
        path = path[len(root):] or "/"
    return path


def host_mode(mountinfo: str = MOUNTINFO, proc_cgroup: str = PROC_CGROUP) -> str:
    return detect(mountinfo, proc_cgroup).mode


def join(mountpoint: str, cgroup_path: str) -> str:
    """mountpoint + an absolute cgroup path, never escaping the mountpoint."""
    clean = os.path.normpath("/" + cgroup_path.lstrip("/"))
    return mountpoint if clean == "/" else mountpoint.rstrip("/") + clean
