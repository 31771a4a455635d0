"""The cgroup layer's errors."""

from __future__ import annotations


class CgroupError(Exception):
    """A cgroup operation failed; the message names the file/directory and the value."""

    def __init__(self, message: str, path: str | None = None, errno: int | None = None):
        super().__init__(message)
        self.path = path
        self.errno = errno
