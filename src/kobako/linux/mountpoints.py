"""Whether a path is a mount point, from /proc/self/mountinfo.

os.path.ismount compares device numbers with the parent's, so it misses a bind mount
from the same filesystem (a volume with `-o bind` on the host's disk, say); the mount
table does not.
"""

from __future__ import annotations

import os

MOUNTINFO = "/proc/self/mountinfo"


def unescape(text: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return (text.replace("\\040", " ").replace("\\011", "\t")
            .replace("\\012", "\n").replace("\\134", "\\"))


def is_mountpoint(path: str, mountinfo: str = MOUNTINFO) -> bool:
    target = os.path.realpath(path)
    try:
        with open(mountinfo) as f:
            return any(unescape(line.split(" ", 5)[4]) == target for line in f)
    except OSError:
        return os.path.ismount(path)
