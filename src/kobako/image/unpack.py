"""Safe unpacking of untrusted layer tars into a layer directory.

Every path is resolved inside the layer root: parent directories with openat2's
RESOLVE_IN_ROOT (symlinks are followed as if the layer root were `/`, as Docker's
chrooted unpacker does) and the final component is never followed. Entries that
would break out (`../`, hardlinks to outside, relative symlinks climbing above the root)
are refused as Docker refuses them. Unlike tarfile's extraction filters, setuid/setgid
bits, device nodes (when we may create them) and xattrs are kept; overlayfs' own
`trusted.overlay.*` xattrs from the tar are never honoured.

Whiteouts: in overlay mode `.wh.name` becomes a 0:0 character device and
`.wh..wh..opq` the xattr trusted.overlay.opaque=y on its directory; in vfs mode
(unpacking on top of a copy of the parent layers) they delete what they hide.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import posixpath
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from typing import BinaryIO

from kobako.image.errors import ImageError, UnsafeArchive
from kobako.image.media import decompressed
from kobako.linux import syscalls

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_XATTR_PAX = "SCHILY.xattr."
_FORBIDDEN_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")
_BUF = 1 << 20
_RESOLVE = syscalls.RESOLVE_IN_ROOT | syscalls.RESOLVE_NO_MAGICLINKS
O_PATH = getattr(os, "O_PATH", 0o10000000)


@dataclass
class UnpackResult:
    diff_id: str  # sha256 of the uncompressed tar
    size: int  # bytes of regular file content written
    warnings: list[str] = field(default_factory=list)


class _HashingReader(io.RawIOBase):
    """Hashes everything read through it (the uncompressed tar -> the diff id)."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.hash = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        data = self.raw.read(len(b))
        n = len(data)
        b[:n] = data
        self.hash.update(data)
        self.count += n
        return n

    def drain(self) -> None:
        while chunk := self.raw.read(_BUF):
            self.hash.update(chunk)


def clean_name(name: str) -> str:
    """A tar member name as a clean path relative to the root, or raise on breakout."""
    cleaned = posixpath.normpath("/" + name.lstrip("/")) if name.startswith("/") else None
    if cleaned is None:
        cleaned = posixpath.normpath(name)
        if cleaned == ".." or cleaned.startswith("../"):
            raise UnsafeArchive(f"tar entry {name!r} points outside the layer")
    return cleaned.lstrip("/") or "."


def in_userns() -> bool:
    try:
        with open("/proc/self/uid_map") as f:
            parts = f.read().split()
    except OSError:
        return False
    return parts[:3] != ["0", "0", "4294967295"]


class Unpacker:
    """Applies one layer tar to a directory (use `unpack_layer`)."""

    def __init__(self, dest: str, mode: str = "overlay", userns: bool | None = None):
        if mode not in ("overlay", "vfs"):
            raise ValueError(f"unknown unpack mode {mode!r}")
        self.mode = mode
        self.userns = in_userns() if userns is None else userns
        self.sys = syscalls.real()
        self.root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.dest = dest
        self.size = 0
        self.warnings: list[str] = []
        self._dir_times: list[tuple[str, int]] = []
        self._unpacked: set[str] = set()
        self._opaque: list[str] = []
        self._cache: tuple[str, int] | None = None

    def close(self) -> None:
        self._drop_cache()
        os.close(self.root_fd)

    # -- path resolution -------------------------------------------------------------------

    def _drop_cache(self) -> None:
        if self._cache:
            os.close(self._cache[1])
            self._cache = None

    def _open_in_root(self, rel: str, flags: int) -> int:
        return self.sys.openat2(self.root_fd, rel, flags | os.O_CLOEXEC, 0, _RESOLVE)

    def parent_fd(self, rel_dir: str) -> int:
        """An O_PATH fd of directory `rel_dir` (created, mode 0755, if missing)."""
        if self._cache and self._cache[0] == rel_dir:
            return self._cache[1]
        self._drop_cache()
        fd = self._open_dir_creating(rel_dir)
        self._cache = (rel_dir, fd)
        return fd

    def _open_dir_creating(self, rel_dir: str) -> int:
        if rel_dir == ".":
            return os.dup(self.root_fd)
        parts = rel_dir.split("/")
        # find the deepest existing prefix, then create the rest one level at a time
        i = len(parts)
        while i > 0:
            try:
                fd = self._open_in_root("/".join(parts[:i]), O_PATH | os.O_DIRECTORY)
                break
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise UnsafeArchive(f"cannot open {'/'.join(parts[:i])!r}: {e}") from None
                i -= 1
        else:
            fd = os.dup(self.root_fd)
        try:
            for j in range(i, len(parts)):
                comp = parts[j]
                os.mkdir(comp, 0o755, dir_fd=fd)
                self._unpacked.add("/".join(parts[: j + 1]))
                nfd = os.open(comp, O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = nfd
        except OSError as e:
            os.close(fd)
            raise UnsafeArchive(f"cannot create directory {rel_dir!r}: {e}") from None
        return fd

    # -- entries ---------------------------------------------------------------------------

    def apply(self, tf: tarfile.TarFile) -> None:
        for member in tf:
            self.entry(tf, member)
        self._finish()

    def entry(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        rel = clean_name(m.name)
        if rel == ".":
            return
        parent, base = posixpath.split(rel)
        parent = parent or "."
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parent, base)
            return
        self._unpacked.add(rel)
        if not m.isreg():
            self._drop_cache()
        pfd = self.parent_fd(parent)
        existing = self._lstat(base, pfd)
        if existing is not None and not (m.isdir() and stat.S_ISDIR(existing.st_mode)):
            self._remove(base, pfd, existing)
            self._drop_cache()
            pfd = self.parent_fd(parent)

        if m.isreg():
            self._file(tf, m, base, pfd)
        elif m.isdir():
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                os.mkdir(base, 0o700, dir_fd=pfd)
            self._dir_times.append((rel, int(m.mtime)))
            fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=pfd)
            try:
                self._attrs_fd(fd, m, rel)
            finally:
                os.close(fd)
        elif m.issym():
            self._check_symlink(rel, m.linkname)
            os.symlink(m.linkname, base, dir_fd=pfd)
            self.size += len(m.linkname.encode())  # its lstat size, which dockerd counts too
            self._attrs_nofollow(pfd, base, m, rel)
        elif m.islnk():
            self._hardlink(m, base, pfd)
        elif m.ischr() or m.isblk() or m.isfifo():
            self._special(m, base, pfd, rel)
        else:
            self.warnings.append(f"skipped {rel}: unsupported tar type {m.type!r}")

    def _lstat(self, base: str, pfd: int) -> os.stat_result | None:
        try:
            return os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _remove(self, base: str, pfd: int, st: os.stat_result) -> None:
        if stat.S_ISDIR(st.st_mode):
            fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=pfd)
            try:
                _rmtree_contents(fd)
            finally:
                os.close(fd)
            os.rmdir(base, dir_fd=pfd)
        else:
            os.unlink(base, dir_fd=pfd)

    def _file(self, tf: tarfile.TarFile, m: tarfile.TarInfo, base: str, pfd: int) -> None:
        fd = os.open(
            base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600, dir_fd=pfd,
        )
        try:
            src = tf.extractfile(m)
            assert src is not None
            remaining = m.size
            while remaining > 0:
                chunk = src.read(min(_BUF, remaining))
                if not chunk:
                    raise ImageError(f"layer tar truncated in {m.name!r}")
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
                remaining -= len(chunk)
            self.size += m.size
            self._attrs_fd(fd, m, m.name)
            os.utime(fd, (m.mtime, m.mtime))
        finally:
            os.close(fd)

    def _check_symlink(self, rel: str, target: str) -> None:
        # Docker: a relative target joined to the link's directory must stay inside
        if not target.startswith("/"):
            joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
            if joined == ".." or joined.startswith("../"):
                raise UnsafeArchive(f"symlink {rel!r} -> {target!r} points outside the layer")

    def _hardlink(self, m: tarfile.TarInfo, base: str, pfd: int) -> None:
        target = clean_name(m.linkname)
        if target == ".":
            raise UnsafeArchive(f"hardlink {m.name!r} to the layer root")
        tparent, tbase = posixpath.split(target)
        try:
            tfd = self._open_in_root(tparent or ".", O_PATH | os.O_DIRECTORY)
        except OSError as e:
            raise UnsafeArchive(f"hardlink {m.name!r} -> {m.linkname!r}: {e}") from None
        try:
            st = self._lstat(tbase, tfd)
            if st is None:
                raise UnsafeArchive(f"hardlink {m.name!r} -> {m.linkname!r}: target missing")
            if stat.S_ISDIR(st.st_mode):
                raise UnsafeArchive(f"hardlink {m.name!r} -> {m.linkname!r} is a directory")
            os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)

    def _special(self, m: tarfile.TarInfo, base: str, pfd: int, rel: str) -> None:
        if m.isfifo():
            kind = stat.S_IFIFO
        else:
            if self.userns:
                self.warnings.append(f"skipped device {rel}: cannot mknod in a user namespace")
                return
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
        os.mknod(base, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=pfd)
        self._attrs_nofollow(pfd, base, m, rel, chmod=True)

    # -- metadata --------------------------------------------------------------------------

    def _xattrs(self, m: tarfile.TarInfo) -> list[tuple[str, bytes]]:
        out = []
        for key, value in m.pax_headers.items():
            if not key.startswith(_XATTR_PAX):
                continue
            name = key[len(_XATTR_PAX):]
            if name.startswith(_FORBIDDEN_XATTR_PREFIXES):
                self.warnings.append(f"ignored xattr {name} on {m.name}")
                continue
            raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
            out.append((name, raw))
        return out

    def _set_xattr(self, target, name: str, value: bytes, rel: str, follow: bool = True) -> None:
        try:
            os.setxattr(target, name, value, follow_symlinks=follow)
        except OSError as e:
            if e.errno not in (errno.ENOTSUP, errno.EPERM):
                raise
            self.warnings.append(f"xattr {name} on {rel} not set: {e.strerror}")

    def _chown(self, target, m: tarfile.TarInfo, dir_fd: int | None = None) -> None:
        try:
            if dir_fd is None:
                os.chown(target, m.uid, m.gid)
            else:
                os.chown(target, m.uid, m.gid, dir_fd=dir_fd, follow_symlinks=False)
        except PermissionError:
            if not self.userns:
                raise
            self.warnings.append(f"cannot chown {m.name} to {m.uid}:{m.gid} in a user namespace")

    def _attrs_fd(self, fd: int, m: tarfile.TarInfo, rel: str) -> None:
        self._chown(fd, m)  # before chmod: chown clears setuid/setgid
        os.chmod(fd, m.mode & 0o7777)
        for name, value in self._xattrs(m):
            self._set_xattr(fd, name, value, rel)

    def _attrs_nofollow(
        self, pfd: int, base: str, m: tarfile.TarInfo, rel: str, chmod: bool = False
    ) -> None:
        self._chown(base, m, dir_fd=pfd)
        if chmod:
            os.chmod(base, m.mode & 0o7777, dir_fd=pfd, follow_symlinks=True)
        xattrs = self._xattrs(m)
        if xattrs:
            # the parent fd is already resolved in-root; the last component is not followed
            path = f"/proc/self/fd/{pfd}/{base}"
            for name, value in xattrs:
                self._set_xattr(path, name, value, rel, follow=False)
        os.utime(base, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)

    # -- whiteouts -------------------------------------------------------------------------

    def _whiteout(self, parent: str, base: str) -> None:
        self._drop_cache()
        pfd = self.parent_fd(parent)
        if base == WHITEOUT_OPAQUE:
            if self.mode == "overlay":
                dfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY, dir_fd=pfd)
                try:
                    os.setxattr(dfd, OPAQUE_XATTR, b"y")
                finally:
                    os.close(dfd)
            else:
                self._opaque.append(parent)
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            return  # aufs bookkeeping (.wh..wh.plnk etc.): nothing to apply
        name = base[len(WHITEOUT_PREFIX):]
        if not name or name in (".", "..") or "/" in name:
            raise UnsafeArchive(f"invalid whiteout {parent}/{base}")
        existing = self._lstat(name, pfd)
        if existing is not None:
            self._remove(name, pfd, existing)
            self._drop_cache()
        if self.mode == "overlay":
            pfd = self.parent_fd(parent)
            os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)

    def _finish(self) -> None:
        self._drop_cache()
        for parent in self._opaque:  # vfs: opaque dirs drop all that this layer did not add
            pfd = self._open_in_root(parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                for name in os.listdir(pfd):
                    path = name if parent == "." else f"{parent}/{name}"
                    if path not in self._unpacked:
                        st = self._lstat(name, pfd)
                        if st is not None:
                            self._remove(name, pfd, st)
            finally:
                os.close(pfd)
        for rel, mtime in reversed(self._dir_times):  # children changed them: set last
            try:
                fd = self._open_in_root(rel, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            except OSError:
                continue  # removed later in the same tar
            try:
                os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)


def _rmtree_contents(dir_fd: int) -> None:
    for entry in os.scandir(dir_fd):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.name, dir_fd=dir_fd)
        else:
            os.unlink(entry.name, dir_fd=dir_fd)


def unpack_layer(
    stream: BinaryIO,
    dest: str | os.PathLike[str],
    *,
    mode: str = "overlay",
    compression: str | None = None,
    userns: bool | None = None,
) -> UnpackResult:
    """Unpack a (possibly compressed) layer tar into `dest`; returns its diff id and size."""
    reader = _HashingReader(decompressed(stream, compression))
    unpacker = Unpacker(os.fspath(dest), mode, userns)
    try:
        with tarfile.open(fileobj=reader, mode="r|", bufsize=_BUF) as tf:  # type: ignore[arg-type]
            unpacker.apply(tf)
        reader.drain()
    except tarfile.ReadError as e:
        if reader.count:  # (nothing at all is an empty layer, as dockerd takes it)
            raise ImageError(f"invalid layer tar: {e}") from None
    except tarfile.TarError as e:
        raise ImageError(f"invalid layer tar: {e}") from None
    finally:
        unpacker.close()
    return UnpackResult("sha256:" + reader.hash.hexdigest(), unpacker.size, unpacker.warnings)
