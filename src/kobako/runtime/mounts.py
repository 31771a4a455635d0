"""Mount options and safe paths inside the container's root.

Every path inside the rootfs is opened with openat2(RESOLVE_IN_ROOT), so a
symlink planted in the rootfs can never lead outside it, and every mount is
made onto the opened fd (/proc/self/fd/N), so a swap between the check and the
mount cannot redirect it.
"""

from __future__ import annotations

import errno
import os
import stat

from kobako.linux import syscalls as sc

from .errors import ConfigError

# option -> (flags to set, flags to clear)
_FLAG_OPTIONS: dict[str, tuple[int, int]] = {
    "ro": (sc.MS_RDONLY, 0),
    "rw": (0, sc.MS_RDONLY),
    "nosuid": (sc.MS_NOSUID, 0),
    "suid": (0, sc.MS_NOSUID),
    "nodev": (sc.MS_NODEV, 0),
    "dev": (0, sc.MS_NODEV),
    "noexec": (sc.MS_NOEXEC, 0),
    "exec": (0, sc.MS_NOEXEC),
    "sync": (sc.MS_SYNCHRONOUS, 0),
    "async": (0, sc.MS_SYNCHRONOUS),
    "dirsync": (sc.MS_DIRSYNC, 0),
    "remount": (sc.MS_REMOUNT, 0),
    "mand": (sc.MS_MANDLOCK, 0),
    "nomand": (0, sc.MS_MANDLOCK),
    "atime": (0, sc.MS_NOATIME),
    "noatime": (sc.MS_NOATIME, 0),
    "diratime": (0, sc.MS_NODIRATIME),
    "nodiratime": (sc.MS_NODIRATIME, 0),
    "relatime": (sc.MS_RELATIME, 0),
    "norelatime": (0, sc.MS_RELATIME),
    "strictatime": (sc.MS_STRICTATIME, 0),
    "nostrictatime": (0, sc.MS_STRICTATIME),
    "nosymfollow": (sc.MS_NOSYMFOLLOW, 0),
    "symfollow": (0, sc.MS_NOSYMFOLLOW),
    "lazytime": (sc.MS_LAZYTIME, 0),
    "nolazytime": (0, sc.MS_LAZYTIME),
    "bind": (sc.MS_BIND, 0),
    "rbind": (sc.MS_BIND | sc.MS_REC, 0),
}

PROPAGATION_OPTIONS: dict[str, int] = {
    "private": sc.MS_PRIVATE,
    "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED,
    "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE,
    "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE,
    "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}

# options runc accepts that are not kernel flags nor filesystem data
_IGNORED_OPTIONS = {"tmpcopyup", "defaults", "auto", "noauto", "user", "nouser"}


class MountOptions:
    """config.json mount options split into flags, propagation and fs data."""

    def __init__(self, options: list[str] | None):
        self.flags = 0
        self.propagation: list[int] = []
        data: list[str] = []
        for option in options or []:
            if option in _FLAG_OPTIONS:
                set_bits, clear_bits = _FLAG_OPTIONS[option]
                self.flags = (self.flags | set_bits) & ~clear_bits
            elif option in PROPAGATION_OPTIONS:
                self.propagation.append(PROPAGATION_OPTIONS[option])
            elif option in ("idmap", "ridmap"):
                raise ConfigError(f"mount option {option!r} is not supported")
            elif option not in _IGNORED_OPTIONS:
                data.append(option)
        self.data = ",".join(data) or None

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & sc.MS_BIND)


def fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def statvfs_flags(path: str) -> int:
    """The mount flags a bind remount must keep (locked ones fail with EPERM otherwise)."""
    st = os.statvfs(path)
    flags = 0
    for bit, mount_bit in (
        (os.ST_RDONLY, sc.MS_RDONLY), (os.ST_NOSUID, sc.MS_NOSUID), (os.ST_NODEV, sc.MS_NODEV),
        (os.ST_NOEXEC, sc.MS_NOEXEC), (os.ST_NOATIME, sc.MS_NOATIME),
        (os.ST_NODIRATIME, sc.MS_NODIRATIME), (os.ST_RELATIME, sc.MS_RELATIME),
    ):
        if st.f_flag & bit:
            flags |= mount_bit
    return flags


class Root:
    """The container's root directory, held open; paths are resolved inside it."""

    def __init__(self, path: str, sys: sc.Syscalls):
        self.path = path
        self.sys = sys
        self.fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self.fd)

    def open(self, path: str, flags: int = os.O_PATH, mode: int = 0) -> int:
        return self.sys.openat2(self.fd, path, flags | os.O_CLOEXEC, mode, sc.RESOLVE_IN_ROOT)

    def lstat(self, path: str) -> os.stat_result | None:
        """lstat of the final component, its parents resolved inside the root."""
        parent, name = os.path.split(path.rstrip("/") or "/")
        if not name:
            return os.stat(self.fd)
        try:
            parent_fd = self.open(parent or "/", os.O_PATH | os.O_DIRECTORY)
        except OSError:
            return None
        try:
            return os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        finally:
            os.close(parent_fd)

    def mkdir_all(self, path: str, mode: int = 0o755, _links: int = 0) -> int:
        """Create a directory and its parents inside the root; an O_PATH fd to it.

        A dangling symlink on the way is followed as the kernel would inside the root
        (its target is created inside the root, never on the host), as runc does.
        """
        try:
            return self.open(path, os.O_PATH | os.O_DIRECTORY)
        except OSError as err:
            if err.errno != errno.ENOENT:
                raise
        if _links > 40:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
        parent, name = os.path.split(path.rstrip("/"))
        parent_fd = self.mkdir_all(parent or "/", mode, _links)
        try:
            try:
                os.mkdir(name, mode, dir_fd=parent_fd)
            except FileExistsError:
                # a racing creator, or a symlink: if it dangles, create its target
                target = self._symlink_target(parent_fd, name)
                if target is not None:
                    os.close(self.mkdir_all(target, mode, _links + 1))
        finally:
            os.close(parent_fd)
        return self.open(path, os.O_PATH | os.O_DIRECTORY)

    def _symlink_target(self, parent_fd: int, name: str) -> str | None:
        """Where the symlink parent/name points, as a path inside the root (None if the
        entry is not a symlink). ".." cannot climb above the root, as with RESOLVE_IN_ROOT."""
        try:
            link = os.readlink(name, dir_fd=parent_fd)
        except OSError as err:
            if err.errno == errno.EINVAL:
                return None
            raise
        root = os.readlink(fd_path(self.fd))
        parent = os.readlink(fd_path(parent_fd))
        if root != "/":
            if parent != root and not parent.startswith(root + "/"):
                raise ConfigError(f"{parent} is outside the container root {root}")
            parent = parent[len(root):] or "/"
        return os.path.normpath(os.path.join(parent, link))

    def make_file(self, path: str, mode: int = 0o644) -> int:
        """Create an empty file (a bind mount target) inside the root; an O_PATH fd to it."""
        try:
            return self.open(path, os.O_PATH)
        except OSError as err:
            if err.errno != errno.ENOENT:
                raise
        parent, name = os.path.split(path.rstrip("/"))
        parent_fd = self.mkdir_all(parent or "/")
        try:
            fd = os.open(name, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                         dir_fd=parent_fd)
            os.close(fd)
        except FileExistsError:
            pass
        finally:
            os.close(parent_fd)
        return self.open(path, os.O_PATH)

    def mount_target(self, path: str, is_dir: bool) -> int:
        return self.mkdir_all(path) if is_dir else self.make_file(path)

    def mount_on(self, path: str, source: str | None, fstype: str | None, flags: int,
                 data: str | None, is_dir: bool = True) -> None:
        fd = self.mount_target(path, is_dir)
        try:
            self.sys.mount(source, fd_path(fd), fstype, flags, data)
        finally:
            os.close(fd)

    def remount(self, path: str, flags: int) -> None:
        """Remount what is now mounted at path (re-opened, so the fd is the new mount's root).

        If the kernel refuses (EPERM: flags locked by a user namespace), retry keeping the
        flags the mount already has, as runc does.
        """
        fd = self.open(path, os.O_PATH)
        try:
            target = fd_path(fd)
            try:
                self.sys.mount(None, target, None, flags | sc.MS_REMOUNT, None)
            except OSError as err:
                if err.errno != errno.EPERM:
                    raise
                locked = statvfs_flags(target) & ~sc.MS_RDONLY
                self.sys.mount(None, target, None, flags | locked | sc.MS_REMOUNT, None)
        finally:
            os.close(fd)

    def set_propagation(self, path: str, flags: int) -> None:
        fd = self.open(path, os.O_PATH)
        try:
            self.sys.mount(None, fd_path(fd), None, flags, None)
        finally:
            os.close(fd)


def is_directory_source(source: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(source).st_mode)
    except FileNotFoundError:
        raise ConfigError(f"mount source {source} does not exist") from None
