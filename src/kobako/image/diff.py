"""Writing layer tars from directories: export, overlay upper dirs, and vfs diffs.

Overlay's whiteouts (0:0 character devices) and opaque dirs (trusted.overlay.opaque=y)
become the image format's `.wh.name` and `.wh..wh..opq` entries again.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from collections.abc import Iterator
from typing import BinaryIO

from kobako.image.unpack import OPAQUE_XATTR, WHITEOUT_OPAQUE, WHITEOUT_PREFIX

_SKIP_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.", "security.selinux")
_BUF = 1 << 20


def _xattrs(path: str) -> dict[str, str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EPERM):
            return {}
        raise
    out = {}
    for name in names:
        if name.startswith(_SKIP_XATTR_PREFIXES):
            continue
        value = os.getxattr(path, name, follow_symlinks=False)
        out["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
    return out


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


class LayerTarWriter:
    """A PAX tar writer with host-independent owners and hardlink detection."""

    def __init__(self, out: BinaryIO):
        self.tf = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT,
                               bufsize=_BUF)
        self.size = 0

    def add(self, path: str, arcname: str) -> None:
        ti = self.tf.gettarinfo(path, arcname)
        ti.uname = ti.gname = ""
        ti.pax_headers.update(_xattrs(path))
        if ti.isreg():
            with open(path, "rb") as f:
                self.tf.addfile(ti, f)
            self.size += ti.size
        else:
            if ti.isdir() and not ti.name.endswith("/"):
                ti.name += "/"
            self.tf.addfile(ti)

    def add_empty(self, arcname: str, mtime: float = 0) -> None:
        ti = tarfile.TarInfo(arcname)
        ti.mode = 0o644
        ti.mtime = int(mtime)
        self.tf.addfile(ti)

    def close(self) -> None:
        self.tf.close()


def _walk(root: str, rel: str = "") -> Iterator[tuple[str, str, os.stat_result]]:
    """(absolute path, relative name, lstat) for everything under root, sorted, pre-order."""
    base = os.path.join(root, rel) if rel else root
    with os.scandir(base) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        name = f"{rel}/{e.name}" if rel else e.name
        st = e.stat(follow_symlinks=False)
        yield e.path, name, st
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(root, name)


def write_tree(root: str, out: BinaryIO) -> int:
    """A tar of everything under `root` (docker export); returns file bytes written."""
    w = LayerTarWriter(out)
    for path, name, _ in _walk(root):
        w.add(path, name)
    w.close()
    return w.size


def write_overlay_diff(upper: str, out: BinaryIO) -> int:
    """A layer tar from an overlay upper dir, whiteouts converted back (docker commit)."""
    w = LayerTarWriter(out)
    for path, name, st in _walk(upper):
        if is_whiteout(st):
            d, base = os.path.split(name)
            w.add_empty(os.path.join(d, WHITEOUT_PREFIX + base), st.st_mtime)
            continue
        w.add(path, name)
        if stat.S_ISDIR(st.st_mode) and is_opaque(path):
            w.add_empty(f"{name}/{WHITEOUT_OPAQUE}", st.st_mtime)
    w.close()
    return w.size


def _same(a: os.stat_result, b: os.stat_result, pa: str, pb: str) -> bool:
    if stat.S_IFMT(a.st_mode) != stat.S_IFMT(b.st_mode):
        return False
    if (a.st_mode, a.st_uid, a.st_gid) != (b.st_mode, b.st_uid, b.st_gid):
        return False
    if stat.S_ISDIR(a.st_mode):
        return True  # a directory changes through its children, reported separately
    if stat.S_ISLNK(a.st_mode):
        return os.readlink(pa) == os.readlink(pb)
    if stat.S_ISCHR(a.st_mode) or stat.S_ISBLK(a.st_mode):
        return a.st_rdev == b.st_rdev
    return a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns


def write_naive_diff(base: str | None, new: str, out: BinaryIO, init: str | None = None) -> int:
    """A layer tar of what changed from `base` (None: nothing) to `new` (the vfs driver's
    commit); what `init` has counts as in the base, over it (Docker's init layer)."""
    w = LayerTarWriter(out)
    emitted_dirs: set[str] = set()

    def emit_parents(name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in emitted_dirs:
                emitted_dirs.add(d)
                w.add(os.path.join(new, d), d)

    for path, name, st in _walk(new):
        other = os.path.join(base, name) if base else ""
        if init and os.path.lexists(os.path.join(init, name)):
            other = os.path.join(init, name)
        try:
            ost = os.lstat(other)
        except FileNotFoundError:
            ost = None
        if ost is not None and _same(st, ost, path, other):
            continue
        emit_parents(name)
        if stat.S_ISDIR(st.st_mode):
            emitted_dirs.add(name)
        w.add(path, name)
    for _path, name, st in _walk(base) if base else ():
        parent = os.path.dirname(name)
        if parent and not os.path.isdir(os.path.join(new, parent)):
            continue  # the whole parent went away: one whiteout covers it
        if os.path.lexists(os.path.join(new, name)):
            continue
        emit_parents(name)
        w.add_empty(os.path.join(parent, WHITEOUT_PREFIX + os.path.basename(name)), st.st_mtime)
    w.close()
    return w.size
