"""`docker cp`: the archive endpoints (stat, get a tar of a path, put a tar into a dir).

Every path is resolved inside the container's root with openat2(RESOLVE_IN_ROOT |
RESOLVE_NO_MAGICLINKS), starting from an fd of that root, and every file is opened
relative to its parent's fd with O_NOFOLLOW: a symlink in the container (even one
swapped in while we copy) can never make the daemon read or write host files.

The root fd is:
- for a running container, /proc/<pid>/root: lookups from it see the container's
  own mount tree, volumes, binds and tmpfs included, without entering the container;
- for a stopped one, a private view: a short-lived thread unshares a mount namespace
  (its mounts are invisible to the host and vanish with the thread), mounts the
  container's rootfs and its volumes and binds there, and holds them while we work.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import posixpath
import stat
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from kobako.engine.errors import EngineError, Forbidden, InvalidParameter, NotFound
from kobako.image.errors import ImageError, UnsafeArchive
from kobako.image.unpack import Unpacker, clean_name
from kobako.linux import syscalls

_RESOLVE = syscalls.RESOLVE_IN_ROOT | syscalls.RESOLVE_NO_MAGICLINKS
_O_PATH = getattr(os, "O_PATH", 0o10000000)
_BUF = 1 << 20
_MAX_LINKS = 40

# Go's os.FileMode type bits: the docker CLI decodes the stat header with them.
GO_MODE_DIR = 1 << 31
GO_MODE_SYMLINK = 1 << 27
GO_MODE_DEVICE = 1 << 26
GO_MODE_NAMED_PIPE = 1 << 25
GO_MODE_SOCKET = 1 << 24
GO_MODE_SETUID = 1 << 23
GO_MODE_SETGID = 1 << 22
GO_MODE_CHAR_DEVICE = 1 << 21
GO_MODE_STICKY = 1 << 20


class ArchiveError(EngineError):
    """A cp operation failed inside the container's filesystem."""


def go_file_mode(st_mode: int) -> int:
    """A unix st_mode as Go's os.FileMode (fillFileStatFromSys)."""
    mode = st_mode & 0o777
    kind = stat.S_IFMT(st_mode)
    mode |= {stat.S_IFDIR: GO_MODE_DIR, stat.S_IFLNK: GO_MODE_SYMLINK,
             stat.S_IFBLK: GO_MODE_DEVICE, stat.S_IFCHR: GO_MODE_DEVICE | GO_MODE_CHAR_DEVICE,
             stat.S_IFIFO: GO_MODE_NAMED_PIPE, stat.S_IFSOCK: GO_MODE_SOCKET}.get(kind, 0)
    if st_mode & stat.S_ISUID:
        mode |= GO_MODE_SETUID
    if st_mode & stat.S_ISGID:
        mode |= GO_MODE_SETGID
    if st_mode & stat.S_ISVTX:
        mode |= GO_MODE_STICKY
    return mode


def _rfc3339_nano(ts_ns: int) -> str:
    seconds, nanos = divmod(ts_ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{base}.{nanos:09d}".rstrip("0").rstrip(".") + "Z"


@dataclass
class PathStat:
    """Docker's container.PathStat, sent base64-encoded in X-Docker-Container-Path-Stat."""

    name: str
    size: int
    mode: int
    mtime: str
    link_target: str

    def to_json(self) -> dict:
        return {"name": self.name, "size": self.size, "mode": self.mode, "mtime": self.mtime,
                "linkTarget": self.link_target}

    def header(self) -> str:
        return base64.b64encode(json.dumps(self.to_json()).encode()).decode()


# -- paths inside the root ------------------------------------------------------------------

def _clean(path: str) -> str:
    """An absolute, cleaned container path."""
    return posixpath.normpath("/" + path.lstrip("/"))  # (normpath keeps a leading "//")


def _rel(path: str) -> str:
    return path.lstrip("/") or "."


def _open_in_root(root_fd: int, path: str, flags: int) -> int:
    return syscalls.real().openat2(root_fd, _rel(path), flags | os.O_CLOEXEC, 0, _RESOLVE)


def _split(path: str) -> tuple[str, str]:
    """(parent, base) of a cleaned absolute path; base "" for the root."""
    if path == "/":
        return "/", ""
    parent, base = posixpath.split(path)
    return parent or "/", base


def _not_found(path: str, container: str) -> NotFound:
    return NotFound(f"Could not find the file {_clean(path)} in container {container}")


def _open_parent(root_fd: int, path: str, container: str) -> tuple[int, str]:
    """An O_PATH fd of the path's parent (resolved in the root) and the last component."""
    parent, base = _split(path)
    try:
        return _open_in_root(root_fd, parent, _O_PATH | os.O_DIRECTORY), base
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            raise _not_found(path, container) from None
        raise ArchiveError(f"cannot open {parent} in the container: {err.strerror}") from None


def resolve_scoped(root_fd: int, path: str) -> str:
    """Where `path` leads inside the root, symlinks followed as the kernel would there."""
    pending = [p for p in _clean(path).split("/") if p]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = "/" + "/".join(resolved + [part])
        parent, base = _split(candidate)
        try:
            pfd = _open_in_root(root_fd, parent, _O_PATH | os.O_DIRECTORY)
        except OSError:
            return candidate  # a missing parent: nothing more to follow
        try:
            target = os.readlink(base, dir_fd=pfd)
        except OSError:
            target = None  # not a symlink (or missing)
        finally:
            os.close(pfd)
        if target is None:
            resolved.append(part)
            continue
        links += 1
        if links > _MAX_LINKS:
            raise InvalidParameter(f"too many levels of symbolic links in {path}")
        if target.startswith("/"):
            resolved = []
        pending = [p for p in target.split("/") if p and p != "."] + pending
    return "/" + "/".join(resolved)


def _requested(root_fd: int, path: str, container: str) -> str:
    """The cleaned container path a request names. As dockerd's ResolvePath, a trailing
    "/" (or "/.") means the directory itself: a last symlink is followed, and anything
    but a directory is an error."""
    abs_path = _clean(path)
    if abs_path == "/" or not path.endswith(("/", "/.")):
        return abs_path
    resolved = resolve_scoped(root_fd, abs_path)
    try:
        os.close(_open_in_root(root_fd, resolved, _O_PATH | os.O_DIRECTORY))
    except OSError as err:
        if err.errno == errno.ENOTDIR:
            raise InvalidParameter(f"{path}: not a directory") from None
        if err.errno == errno.ENOENT:
            raise _not_found(path, container) from None
        raise ArchiveError(f"cannot open {path} in the container: {err.strerror}") from None
    return resolved


def stat_path(root_fd: int, path: str, container: str) -> PathStat:
    """Docker's StatPath: lstat of the last component; linkTarget fully resolved."""
    abs_path = _requested(root_fd, path, container)
    pfd, base = _open_parent(root_fd, abs_path, container)
    try:
        try:
            st = os.stat(base or ".", dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            raise _not_found(path, container) from None
    finally:
        os.close(pfd)
    link = resolve_scoped(root_fd, abs_path) if stat.S_ISLNK(st.st_mode) else ""
    name = posixpath.basename(path.rstrip("/")) or "/"
    return PathStat(name, st.st_size, go_file_mode(st.st_mode), _rfc3339_nano(st.st_mtime_ns),
                    link)


# -- GET: a tar of a path ---------------------------------------------------------------------

def _xattrs(dir_fd: int, name: str) -> dict[str, str]:
    path = f"/proc/self/fd/{dir_fd}/{name}" if name else f"/proc/self/fd/{dir_fd}"
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for key in names:
        if key.startswith(("trusted.overlay.", "user.overlay.", "security.selinux")):
            continue
        try:
            value = os.getxattr(path, key, follow_symlinks=False)
        except OSError:
            continue
        out["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")
    return out


class _TarWriter:
    """Writes entries from directory fds; never follows a symlink."""

    def __init__(self, out: BinaryIO):
        self.tf = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=_BUF)
        self.links: dict[tuple[int, int], str] = {}

    def close(self) -> None:
        self.tf.close()

    def _info(self, st: os.stat_result, arcname: str) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(arcname)
        ti.mode = stat.S_IMODE(st.st_mode)
        ti.uid, ti.gid = st.st_uid, st.st_gid
        ti.mtime = int(st.st_mtime)
        return ti

    def add(self, dir_fd: int, name: str, arcname: str) -> None:
        """Add dir_fd/name (name "" is the directory itself), recursing into directories."""
        try:
            st = os.stat(name or ".", dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return  # removed while we walk
        ti = self._info(st, arcname)
        if name:
            ti.pax_headers.update(_xattrs(dir_fd, name))
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFREG:
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self.links:
                ti.type, ti.linkname = tarfile.LNKTYPE, self.links[key]
                self.tf.addfile(ti)
                return
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                             dir_fd=dir_fd)
            except OSError as err:
                if err.errno in (errno.ENOENT, errno.ELOOP):
                    return  # replaced meanwhile
                raise
            with os.fdopen(fd, "rb") as f:
                again = os.fstat(f.fileno())
                if not stat.S_ISREG(again.st_mode):
                    return
                ti.size = again.st_size
                self.tf.addfile(ti, _Exactly(f, again.st_size))
            if st.st_nlink > 1:
                self.links[key] = arcname
        elif kind == stat.S_IFDIR:
            ti.type = tarfile.DIRTYPE
            self.tf.addfile(ti)
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                fd = os.open(name or ".", flags, dir_fd=dir_fd)
            except OSError as err:
                if err.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                    return
                raise
            try:
                for child in sorted(os.listdir(fd)):
                    self.add(fd, child, f"{arcname.rstrip('/')}/{child}")
            finally:
                os.close(fd)
        elif kind == stat.S_IFLNK:
            ti.type = tarfile.SYMTYPE
            ti.linkname = os.readlink(name, dir_fd=dir_fd)
            self.tf.addfile(ti)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK):
            ti.type = tarfile.CHRTYPE if kind == stat.S_IFCHR else tarfile.BLKTYPE
            ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            self.tf.addfile(ti)
        elif kind == stat.S_IFIFO:
            ti.type = tarfile.FIFOTYPE
            self.tf.addfile(ti)
        # sockets are not archived (as Go's archive/tar)


class _Exactly:
    """Reads exactly `size` bytes (zero-padded if the file shrank while we read)."""

    def __init__(self, f: BinaryIO, size: int):
        self.f = f
        self.left = size

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        if len(data) < n:
            data += b"\0" * (n - len(data))
        self.left -= len(data)
        return data


def write_tar(root_fd: int, path: str, out: BinaryIO, container: str) -> None:
    """A tar of `path` as Docker's GET archive: entries rebased on the path's base name."""
    name = posixpath.basename(_clean(path))
    abs_path = _requested(root_fd, path, container)
    dot = path.endswith("/.") or path == "." or abs_path == "/"
    pfd, base = _open_parent(root_fd, abs_path, container)
    try:
        if base:
            try:
                os.stat(base, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                raise _not_found(path, container) from None
        writer = _TarWriter(out)
        try:
            if not base:
                fd = _open_in_root(root_fd, "/", os.O_RDONLY | os.O_DIRECTORY)
                try:
                    writer.add(fd, "", ".")
                finally:
                    os.close(fd)
            else:
                writer.add(pfd, base, "." if dot else name)
        finally:
            writer.close()
    finally:
        os.close(pfd)


# -- PUT: extract a tar into a directory ------------------------------------------------------

def extract_tar(root_fd: int, path: str, stream: BinaryIO, container: str, *,
                no_overwrite_dir_non_dir: bool = False,
                owner: tuple[int, int] | None = None, read_only_message: str = "") -> None:
    """Extract `stream` into the directory `path` (resolved in the root, which it must be)."""
    try:
        dfd = _open_in_root(root_fd, _clean(path), os.O_RDONLY | os.O_DIRECTORY)
    except OSError as err:
        if err.errno == errno.ENOENT:
            raise _not_found(path, container) from None
        if err.errno == errno.ENOTDIR:
            raise InvalidParameter("extraction point is not a directory") from None
        raise ArchiveError(f"cannot open {path} in the container: {err.strerror}") from None
    try:
        unpacker = CopyUnpacker(f"/proc/self/fd/{dfd}", no_overwrite_dir_non_dir, owner)
    finally:
        os.close(dfd)
    try:
        with tarfile.open(fileobj=stream, mode="r|*", bufsize=_BUF) as tf:
            unpacker.apply(tf)
    except tarfile.ReadError as err:
        if str(err) != "empty file":  # no bytes at all: an empty archive, as Go reads it
            raise InvalidParameter(f"invalid tar: {err}") from None
    except tarfile.TarError as err:
        raise InvalidParameter(f"invalid tar: {err}") from None
    except UnsafeArchive as err:
        raise InvalidParameter(str(err)) from None
    except ImageError as err:
        raise InvalidParameter(str(err)) from None
    except OSError as err:
        if err.errno == errno.EROFS:
            raise Forbidden(read_only_message or "mounted volume is marked read-only") from None
        raise ArchiveError(f"extracting into {path}: {err}") from None
    finally:
        unpacker.close()


class CopyUnpacker(Unpacker):
    """The layer unpacker with cp's options; whiteout names are refused, not applied."""

    def __init__(self, dest: str, no_overwrite: bool, owner: tuple[int, int] | None):
        super().__init__(dest, mode="vfs")
        self.no_overwrite = no_overwrite
        self.owner = owner

    def entry(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        if self.owner is not None:
            m.uid, m.gid = self.owner
        rel = clean_name(m.name)
        if self.no_overwrite and rel != ".":
            parent, base = posixpath.split(rel)
            try:
                pfd = self._open_in_root(parent or ".", _O_PATH | os.O_DIRECTORY)
            except OSError:
                pfd = -1
            if pfd >= 0:
                try:
                    existing = self._lstat(base, pfd)
                finally:
                    os.close(pfd)
                if existing is not None:
                    is_dir = stat.S_ISDIR(existing.st_mode)
                    if is_dir and not m.isdir():
                        raise InvalidParameter(
                            f'cannot overwrite directory "/{rel}" with non-directory '
                            f'"/{rel}"')
                    if not is_dir and m.isdir():
                        raise InvalidParameter(
                            f'cannot overwrite non-directory "/{rel}" with directory '
                            f'"/{rel}"')
        super().entry(tf, m)

    def _whiteout(self, parent: str, base: str) -> None:
        raise InvalidParameter(f"refusing to extract {parent}/{base}: a whiteout name")



# -- the container's root -------------------------------------------------------------------

@contextmanager
def running_root(pid: int) -> Iterator[int]:
    """An fd of a running container's root (its mount tree, seen from the host)."""
    try:
        fd = os.open(f"/proc/{pid}/root", _O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise ArchiveError(f"container process {pid} is gone: {err.strerror}") from None
    try:
        yield fd
    finally:
        os.close(fd)


@dataclass
class ViewMount:
    """A mount in a stopped container's private view (bind of a host path)."""

    destination: str
    source: str
    read_only: bool = False


class _PrivateView(threading.Thread):
    """A thread in its own mount namespace holding a stopped container's filesystem."""

    def __init__(self, rootfs_spec, mounts: list[ViewMount], read_only: bool):
        super().__init__(name="kobako-cp-view", daemon=True)
        self.spec = rootfs_spec
        self.mounts = mounts
        self.read_only = read_only
        self.ready = threading.Event()
        self.release = threading.Event()
        self.root_fd = -1
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._setup()
        except BaseException as err:  # reported to the caller, which re-raises it
            self.error = err
            self.ready.set()
            return
        self.ready.set()
        self.release.wait()

    def _setup(self) -> None:
        from kobako.image.snapshots import mount
        from kobako.runtime.mounts import Root

        sys = syscalls.real()
        # this thread only: its own mount namespace (and fs struct), nothing shared back
        sys.unshare(syscalls.CLONE_NEWNS)
        sys.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE, None)
        target = mount(self.spec)
        root = Root(target, sys)
        try:
            for m in sorted(self.mounts, key=lambda m: m.destination.count("/")):
                is_dir = os.path.isdir(m.source)
                root.mount_on(m.destination, m.source, None, syscalls.MS_BIND | syscalls.MS_REC,
                              None, is_dir)
                if m.read_only:
                    root.remount(m.destination,
                                 syscalls.MS_BIND | syscalls.MS_RDONLY)
            if self.read_only:
                sys.mount(None, target, None,
                          syscalls.MS_REMOUNT | syscalls.MS_BIND | syscalls.MS_RDONLY, None)
            self.root_fd = os.open(target, _O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        finally:
            root.close()


@contextmanager
def stopped_root(rootfs_spec, mounts: list[ViewMount], read_only: bool = False
                 ) -> Iterator[int]:
    """An fd of a stopped container's root with its volumes and binds mounted, privately."""
    view = _PrivateView(rootfs_spec, mounts, read_only)
    view.start()
    view.ready.wait()
    if view.error is not None:
        view.join()
        err = view.error
        raise ArchiveError(f"cannot mount the container's filesystem: {err}") from err
    try:
        yield view.root_fd
    finally:
        os.close(view.root_fd)
        view.release.set()
        view.join()


# -- streaming a worker thread's output -------------------------------------------------------

class _QueueWriter:
    """A file-like for a worker thread; chunks go to the event loop through a bounded queue."""

    def __init__(self, loop, queue):
        self.loop = loop
        self.queue = queue
        self.gone = threading.Event()
        self.buf = bytearray()

    def write(self, data: bytes) -> int:
        if self.gone.is_set():
            raise BrokenPipeError("the client went away")
        self.buf += data
        if len(self.buf) >= _BUF // 4:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self.buf:
            chunk, self.buf = bytes(self.buf), bytearray()
            self._put(chunk)

    def _put(self, item) -> None:
        import asyncio

        future = asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop)
        while True:
            try:
                future.result(timeout=1)
                return
            except TimeoutError:
                if self.gone.is_set():
                    future.cancel()
                    raise BrokenPipeError("the client went away") from None


async def thread_stream(work, first=None):
    """Run work(out) in a thread; (first's result, async iterator of what it writes).

    `first(ready)`: work calls `ready(value)` once before writing (e.g. a stat for the
    response headers); an exception before that is raised here, not in the stream.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(maxsize=8)
    writer = _QueueWriter(loop, queue)
    head: asyncio.Future = loop.create_future()

    started = threading.Event()

    def ready(value) -> None:
        if not started.is_set():
            started.set()
            loop.call_soon_threadsafe(head.set_result, value)

    def run() -> None:
        try:
            work(writer, ready)
            writer.flush()
        except BaseException as err:  # handed to the event loop, which re-raises it
            if started.is_set():
                writer._put(err)
            else:
                started.set()
                loop.call_soon_threadsafe(head.set_exception, err)
            return
        ready(None)
        writer._put(None)

    task = loop.run_in_executor(None, run)
    try:
        value = await head
    except BaseException:
        await asyncio.gather(task, return_exceptions=True)
        raise

    async def chunks():
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
            await task
        finally:
            writer.gone.set()
            while not queue.empty():
                queue.get_nowait()
            await asyncio.gather(task, return_exceptions=True)

    return value, chunks()
