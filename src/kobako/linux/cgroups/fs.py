"""Reading and writing cgroupfs files, with errors that name the file and the value.

Writes go through `write()` (one `write(2)` per value, as the kernel expects);
unit tests wrap it to record the order of writes against a fake tree.
"""

from __future__ import annotations

import errno as _errno
import os
import time

from .errors import CgroupError

# What v2 "max" (and an unlimited v1 limit when read as u64) reports in runc's stats.
UINT64_MAX = 2**64 - 1


def write(directory: str, name: str, value: str | int) -> None:
    """Write one value to one control file; a missing file or a refused value is a CgroupError."""
    path = os.path.join(directory, name)
    text = str(value)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CgroupError(
            f"cannot set {name}={text!r}: {path} does not exist "
            "(controller not available or not supported by this kernel)",
            path, _errno.ENOENT,
        ) from None
    except OSError as err:
        raise CgroupError(f"open {path}: {err.strerror}", path, err.errno) from None
    try:
        os.write(fd, text.encode())
    except OSError as err:
        raise CgroupError(
            f"write {text!r} to {path}: {err.strerror}", path, err.errno
        ) from None
    finally:
        os.close(fd)


def exists(directory: str, name: str) -> bool:
    return os.path.exists(os.path.join(directory, name))


def read(directory: str, name: str) -> str:
    path = os.path.join(directory, name)
    try:
        with open(path) as handle:
            return handle.read()
    except OSError as err:
        raise CgroupError(f"read {path}: {err.strerror}", path, err.errno) from None


def read_optional(directory: str, name: str) -> str | None:
    """The file's text, or None when this kernel/controller does not have it."""
    try:
        with open(os.path.join(directory, name)) as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise CgroupError(f"read {os.path.join(directory, name)}: {err.strerror}",
                          os.path.join(directory, name), err.errno) from None


def parse_uint(text: str) -> int:
    """A u64 as cgroupfs prints it; "max" is unlimited (UINT64_MAX) as runc reports it."""
    text = text.strip()
    if text == "max":
        return UINT64_MAX
    value = int(text)
    return max(value, 0)


def read_uint(directory: str, name: str) -> int | None:
    text = read_optional(directory, name)
    if text is None or not text.strip():
        return None
    return parse_uint(text)


def parse_flat_keyed(text: str) -> dict[str, int]:
    """Files like memory.stat, cpu.stat, memory.events: "key value" per line."""
    result: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                result[parts[0]] = parse_uint(parts[1])
            except ValueError:
                continue  # a non-numeric field (none known today); stats carry numbers only
    return result


def read_flat_keyed(directory: str, name: str) -> dict[str, int] | None:
    text = read_optional(directory, name)
    return None if text is None else parse_flat_keyed(text)


def read_pids(directory: str) -> list[int]:
    text = read_optional(directory, "cgroup.procs")
    if text is None:
        return []
    return [int(line) for line in text.split()]


def make_dirs(path: str) -> list[str]:
    """mkdir -p; returns the directories that were actually created, top-down."""
    created: list[str] = []
    missing: list[str] = []
    current = path
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for directory in reversed(missing):
        try:
            mkdir(directory)
        except FileExistsError:
            continue  # raced with another creator: fine, it exists now
        except OSError as err:
            raise CgroupError(f"mkdir {directory}: {err.strerror}", directory, err.errno) from None
        created.append(directory)
    return created


def remove_tree(path: str, timeout: float = 5.0) -> None:
    """rmdir a cgroup and any child cgroups bottom-up, retrying while processes drain.

    A cgroup with live (or not yet reaped) tasks answers EBUSY; that clears
    once they exit, so we retry until `timeout` and then report what is left.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            _remove_once(path)
            return
        except OSError as err:
            if err.errno not in (_errno.EBUSY, _errno.ENOTEMPTY) or time.monotonic() > deadline:
                left = read_pids(path) if os.path.isdir(path) else []
                raise CgroupError(
                    f"rmdir {err.filename or path}: {err.strerror}"
                    + (f" (processes still inside: {left})" if left else ""),
                    path, err.errno,
                ) from None
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _remove_once(path: str) -> None:
    if not os.path.isdir(path):
        return
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            _remove_once(entry.path)
    try:
        rmdir(path)
    except FileNotFoundError:
        return


def mkdir(path: str) -> None:
    """Create one cgroup directory (a seam: a fake tree fills in the control files)."""
    os.mkdir(path, 0o755)


def rmdir(path: str) -> None:
    """Remove one cgroup directory (a seam: a fake tree in unit tests holds real files)."""
    os.rmdir(path)
