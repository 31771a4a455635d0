"""The chain of files one container's log lives in: `path.N[.gz] ... path.1[.gz], path`.

The writer (in the monitor process) rotates by renaming, so a reader in another process
cannot lock the chain; instead it opens every file and checks that no rename happened
while it did (each open fd still is the file at its name), and retries if one did.
"""

from __future__ import annotations

import errno
import os
import re
import time
from dataclasses import dataclass

_MAX_SNAPSHOT_TRIES = 50


@dataclass
class OpenLogFile:
    """A log file held open for reading; (dev, ino) identifies it across renames."""

    name: str
    fd: int
    dev: int
    ino: int
    compressed: bool

    @property
    def key(self) -> tuple[int, int]:
        return (self.dev, self.ino)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def rotated_paths(path: str) -> list[tuple[int, str]]:
    """The rotated files that exist now, as (index, name), oldest (highest index) first."""
    directory, base = os.path.split(path)
    pattern = re.compile(re.escape(base) + r"\.(\d+)(\.gz)?$")
    found: dict[int, str] = {}
    try:
        names = os.listdir(directory or ".")
    except FileNotFoundError:
        return []
    for name in names:
        m = pattern.match(name)
        if m is None:
            continue
        index = int(m.group(1))
        # While a rotated file is being compressed both forms exist; the plain one is
        # complete, the .gz may not be yet (Docker's reader prefers the plain one too).
        if index not in found or not m.group(2):
            found[index] = os.path.join(directory, name)
    return sorted(found.items(), reverse=True)


def _open(name: str) -> OpenLogFile | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    st = os.fstat(fd)
    return OpenLogFile(name, fd, st.st_dev, st.st_ino, name.endswith(".gz"))


def still_at_name(f: OpenLogFile) -> bool:
    return is_at(f.name, f)


def is_at(path: str, f: OpenLogFile) -> bool:
    """Whether `f` is (still) the file at `path`."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == f.key


def open_chain(path: str, *, with_rotated: bool = True) -> list[OpenLogFile]:
    """Open the log's files, oldest first, as one consistent snapshot.

    The current file comes last; it is absent when the log does not exist (yet).
    """
    for _ in range(_MAX_SNAPSHOT_TRIES):
        names = [name for _, name in rotated_paths(path)] if with_rotated else []
        names.append(path)
        files: list[OpenLogFile] = []
        consistent = True
        for name in names:
            f = _open(name)
            if f is None:
                if name != path:
                    consistent = False  # renamed away while we listed: list again
                    break
                continue
            files.append(f)
        if consistent and all(still_at_name(f) for f in files):
            if with_rotated and [n for _, n in rotated_paths(path)] != [
                    f.name for f in files if f.name != path]:
                consistent = False  # a rotation created a new path.1 meanwhile
            else:
                return files
        for f in files:
            f.close()
        # the monitor is in the middle of a rotation: let it finish its renames
        time.sleep(0.001)
    raise OSError(errno.EAGAIN, f"log files of {path} keep changing while being opened")


def log_usage(path: str) -> int:
    """Bytes used by the log and its rotated files (for `system df`)."""
    total = 0
    for name in [n for _, n in rotated_paths(path)] + [path]:
        try:
            total += os.stat(name).st_size
        except FileNotFoundError:
            continue
    return total


def remove_logs(path: str) -> None:
    """Delete the log, its rotations and any half-written compressed copy."""
    directory, base = os.path.split(path)
    pattern = re.compile(re.escape(base) + r"(\.\d+)?(\.gz)?(\.tmp)?$")
    try:
        names = os.listdir(directory or ".")
    except FileNotFoundError:
        return
    for name in names:
        if pattern.match(name):
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:
                continue
