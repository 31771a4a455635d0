"""Files written atomically: to a temporary file beside the target, fsynced, then renamed
over it, so a crash leaves the old file or the new one, never a half-written one."""

from __future__ import annotations

import os


def write_atomic(path: str, data: str | bytes, mode: int = 0o644, fsync: bool = True) -> None:
    """fsync=False: still all-or-nothing for readers, but not durable across a power
    loss — for files rebuilt each time they are needed."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
