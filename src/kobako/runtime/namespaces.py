"""Namespaces from config.json: which to create, which to join by path, and in what order."""

from __future__ import annotations

import os

from kobako.linux import syscalls as sc

from .errors import ConfigError

# OCI namespace type -> (clone flag, /proc/<pid>/ns entry)
NAMESPACES: dict[str, tuple[int, str]] = {
    "user": (sc.CLONE_NEWUSER, "user"),
    "pid": (sc.CLONE_NEWPID, "pid"),
    "network": (sc.CLONE_NEWNET, "net"),
    "mount": (sc.CLONE_NEWNS, "mnt"),
    "ipc": (sc.CLONE_NEWIPC, "ipc"),
    "uts": (sc.CLONE_NEWUTS, "uts"),
    "cgroup": (sc.CLONE_NEWCGROUP, "cgroup"),
    "time": (sc.CLONE_NEWTIME, "time"),
}

# When joining, the user namespace goes first (it grants the rights to join the rest),
# the mount namespace last (it changes what paths mean).
JOIN_ORDER = ["user", "ipc", "uts", "network", "pid", "cgroup", "time", "mount"]


class NamespacePlan:
    def __init__(self, linux: dict):
        self.new: list[str] = []
        self.join: dict[str, str] = {}
        seen: set[str] = set()
        for ns in linux.get("namespaces") or []:
            kind = ns.get("type")
            if kind not in NAMESPACES:
                raise ConfigError(f"unknown namespace type {kind!r}")
            if kind in seen:
                raise ConfigError(f"namespace {kind!r} is listed twice")
            seen.add(kind)
            if ns.get("path"):
                self.join[kind] = ns["path"]
            else:
                self.new.append(kind)
        if "user" not in self.new and (linux.get("uidMappings") or linux.get("gidMappings")):
            raise ConfigError("uidMappings/gidMappings need a new user namespace")
        if "user" in self.new:
            for key in ("uidMappings", "gidMappings"):
                validate_mappings(linux.get(key) or [], key)
        if linux.get("timeOffsets") and "time" not in self.new:
            raise ConfigError("timeOffsets need a new time namespace")

    def unshare_flags(self, *, without_user: bool = True) -> int:
        flags = 0
        for kind in self.new:
            if without_user and kind == "user":
                continue
            flags |= NAMESPACES[kind][0]
        return flags

    def open_join_fds(self) -> list[tuple[str, int]]:
        """Open every namespace to join before entering any (paths change as we enter)."""
        fds = []
        for kind in sorted(self.join, key=JOIN_ORDER.index):
            path = self.join[kind]
            try:
                fds.append((kind, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
            except OSError as err:
                for _, fd in fds:
                    os.close(fd)
                raise ConfigError(f"cannot open {kind} namespace {path}: {err.strerror}") from err
        return fds


def validate_mappings(mappings: list[dict], key: str) -> None:
    ranges = []
    for m in mappings:
        try:
            inside, outside, size = int(m["containerID"]), int(m["hostID"]), int(m["size"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"invalid {key} entry {m!r}: needs containerID, hostID, size") from None
        if size <= 0 or inside < 0 or outside < 0:
            raise ConfigError(f"invalid {key} entry {m!r}: ids must be >= 0 and size > 0")
        ranges.append((inside, inside + size))
    ranges.sort()
    for (_, end), (start, _) in zip(ranges, ranges[1:], strict=False):
        if start < end:
            raise ConfigError(f"invalid {key}: container id ranges overlap")
    if not mappings:
        raise ConfigError(f"a new user namespace needs {key}")


def write_id_maps(pid: int, linux: dict) -> None:
    for key, file in (("uidMappings", "uid_map"), ("gidMappings", "gid_map")):
        lines = "".join(
            f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in linux.get(key) or []
        )
        try:
            with open(f"/proc/{pid}/{file}", "w") as f:
                f.write(lines)
        except OSError as err:
            raise ConfigError(f"writing {file} ({lines.strip()!r}): {err.strerror}") from err


def write_time_offsets(offsets: dict) -> None:
    """Set the new time namespace's clock offsets (before any process is born in it)."""
    lines = []
    for clock in ("monotonic", "boottime"):
        if clock in offsets:
            o = offsets[clock]
            lines.append(f"{clock} {o.get('secs', 0)} {o.get('nanosecs', 0)}\n")
    with open("/proc/self/timens_offsets", "w") as f:
        f.write("".join(lines))


def ns_inode(pid: int | str, entry: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{entry}")


