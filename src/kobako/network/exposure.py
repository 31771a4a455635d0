"""Containers' network namespaces shown to `ip netns`: links under /var/run/netns.

`kobako netns expose` bind-mounts /proc/<pid>/ns/net onto /var/run/netns/<name>
(what `ip netns attach` does) and records the exposure under RECORDS: which
container, which namespace (device and inode of the nsfs file). The daemon reads
the records when a container stops and removes its links, checking first that the
link still holds the very namespace that was exposed, so a name reused since is
never touched. The record is needed because a link outlives the process: after the
container has exited, the link is the only thing left that names its namespace.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass

from kobako.linux.files import write_atomic
from kobako.linux.syscalls import MNT_DETACH, MS_BIND, SyscallError, real

NETNS_DIR = "/var/run/netns"
RECORDS = "/run/kobako-netns-exposed"
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
EINVAL, ENOENT = 22, 2


class ExposureError(OSError):
    """A link could not be made or removed; says which and why."""


@dataclass(frozen=True)
class Exposure:
    name: str  # /var/run/netns/<name>
    container_id: str
    dev: int  # the nsfs file's st_dev and st_ino: which namespace it is
    ino: int

    @property
    def link(self) -> str:
        return os.path.join(NETNS_DIR, self.name)


def _record_path(name: str) -> str:
    return os.path.join(RECORDS, name + ".json")


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _is_mount_point(path: str) -> bool:
    try:
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == os.path.realpath(path) for line in f)
    except OSError:
        return False


def records() -> list[Exposure]:
    out = []
    try:
        names = sorted(os.listdir(RECORDS))
    except FileNotFoundError:
        return []
    for entry in names:
        if not entry.endswith(".json"):
            continue
        try:
            with open(os.path.join(RECORDS, entry)) as f:
                out.append(Exposure(**json.load(f)))
        except (OSError, ValueError, TypeError):
            continue  # half-written or foreign: not ours to interpret
    return out


def expose(name: str, container_id: str, pid: int) -> Exposure:
    """Link the network namespace of process `pid` (a container's) as `name`."""
    if not _NAME.match(name):
        raise ExposureError(EINVAL, f"invalid netns name {name!r}")
    source = f"/proc/{pid}/ns/net"
    ident = _identity(source)
    if ident is None:
        raise ExposureError(ENOENT, f"process {pid} of {name} is gone")
    if ident in (_identity("/proc/1/ns/net"), _identity("/proc/self/ns/net")):
        raise ExposureError(EINVAL, f"{name} uses the host's network namespace; "
                                    "there is nothing to expose")
    link = os.path.join(NETNS_DIR, name)
    exposure = Exposure(name, container_id, *ident)
    if os.path.exists(link):
        if _identity(link) == ident:
            _write_record(exposure)  # already there: make sure the daemon knows
            return exposure
        raise ExposureError(17, f"{link} already exists and is another namespace")
    os.makedirs(NETNS_DIR, mode=0o755, exist_ok=True)
    os.close(os.open(link, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444))
    try:
        real().mount(source, link, None, MS_BIND)
    except SyscallError as err:
        os.unlink(link)
        raise ExposureError(err.errno, f"cannot bind {source} to {link}: {err}") from None
    _write_record(exposure)
    return exposure


def _write_record(exposure: Exposure) -> None:
    os.makedirs(RECORDS, mode=0o700, exist_ok=True)
    write_atomic(_record_path(exposure.name), json.dumps(asdict(exposure)))


def _drop_record(name: str) -> None:
    try:
        os.unlink(_record_path(name))
    except FileNotFoundError:
        pass


def unexpose(exposure: Exposure) -> bool:
    """Remove the link if it still holds the exposed namespace; drop the record.

    Returns whether a link was removed."""
    removed = False
    if _identity(exposure.link) == (exposure.dev, exposure.ino):
        if _is_mount_point(exposure.link):
            try:
                real().umount2(exposure.link, MNT_DETACH)
            except SyscallError as err:
                if err.errno not in (EINVAL, ENOENT):
                    raise ExposureError(err.errno, f"cannot unmount {exposure.link}: "
                                                   f"{err}") from None
        try:
            os.unlink(exposure.link)
            removed = True
        except FileNotFoundError:
            pass
    _drop_record(exposure.name)
    return removed


def unexpose_container(container_id: str) -> list[str]:
    """Remove every link recorded for a container (it stopped); the names removed."""
    return [e.name for e in records() if e.container_id == container_id and unexpose(e)]


def by_name(name: str) -> Exposure | None:
    return next((e for e in records() if e.name == name), None)
