"""Where a container's cgroup lives: OCI linux.cgroupsPath, cgroupfs or systemd style.

- absolute "/a/b": relative to each hierarchy's root;
- relative "a/b": relative to the calling process's cgroup in each hierarchy;
- empty: "/kobako/<container id>";
- systemd ("slice:prefix:name", runc --systemd-cgroup): laid out on cgroupfs as
  systemd would, "<expanded slice>/<prefix>-<name>.scope".
"""

from __future__ import annotations

import posixpath
from collections import namedtuple

from .errors import CgroupError

DEFAULT_PARENT = "/kobako"
DEFAULT_SLICE = "system.slice"


# relative: True when joined onto the caller's own cgroup in each hierarchy
CgroupPath = namedtuple("CgroupPath", ["path", "relative"])


def resolve(cgroups_path: str | None, container_id: str, systemd: bool = False) -> CgroupPath:
    if systemd:
        return CgroupPath(systemd_path(cgroups_path or "", container_id), relative=False)
    if not cgroups_path:
        return CgroupPath(f"{DEFAULT_PARENT}/{container_id}", relative=False)
    if cgroups_path.startswith("/"):
        if posixpath.normpath(cgroups_path) == "/":
            # the hierarchy root belongs to the host: never create, limit or remove it
            raise CgroupError(f"cgroupsPath {cgroups_path!r} is the root cgroup")
        return CgroupPath(cgroups_path, relative=False)
    return CgroupPath(cgroups_path, relative=True)


def systemd_path(spec: str, container_id: str) -> str:
    """Map "slice:prefix:name" onto the cgroupfs path systemd would use."""
    if not spec:
        slice_name, prefix, name = DEFAULT_SLICE, "kobako", container_id
    else:
        parts = spec.split(":")
        if len(parts) != 3:
            raise CgroupError(
                f'expected cgroupsPath to be of format "slice:prefix:name" for systemd cgroups, '
                f"got {spec!r}"
            )
        slice_name, prefix, name = parts
        slice_name = slice_name or DEFAULT_SLICE
        name = name or container_id
    if name.endswith(".slice"):
        # a unit that is itself a slice: systemd places slices by their name alone
        return expand_slice(name)
    if "/" in name or "/" in prefix:
        raise CgroupError(f"invalid systemd unit name in cgroupsPath {spec!r}")
    unit = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    return posixpath.join(expand_slice(slice_name), unit)


def expand_slice(slice_name: str) -> str:
    """"a-b-c.slice" -> "/a.slice/a-b.slice/a-b-c.slice"; "-.slice" is the root."""
    suffix = ".slice"
    if not slice_name.endswith(suffix) or "/" in slice_name:
        raise CgroupError(f"invalid systemd slice name {slice_name!r}")
    if slice_name == "-.slice":
        return "/"
    stem = slice_name[: -len(suffix)]
    if not stem or stem.startswith("-") or stem.endswith("-") or "--" in stem:
        raise CgroupError(f"invalid systemd slice name {slice_name!r}")
    path = ""
    prefix = ""
    for component in stem.split("-"):
        prefix = f"{prefix}-{component}" if prefix else component
        path += f"/{prefix}{suffix}"
    return path
