"""The container's filesystem: mounts, /dev, pivot_root, masked and read-only paths.

Runs inside the container's new mount namespace, in this order (as runc does):
  prepare()  — / made rslave (or rootfsPropagation), rootfs bind-mounted on itself,
               config mounts, /dev devices and links            [createRuntime hooks here]
  pivot()    — pivot_root into the rootfs (or MS_MOVE + chroot with --no-pivot)
  finish()   — masked paths, read-only paths, read-only root, root propagation
"""

from __future__ import annotations

import errno
import os
import stat

from kobako.linux import syscalls as sc

from .errors import ConfigError, RuntimeFailure
from .mounts import PROPAGATION_OPTIONS, MountOptions, Root, fd_path, is_directory_source

# The devices every container gets (runtime-spec "Default Devices").
DEFAULT_DEVICES = [
    {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666},
    {"path": "/dev/zero", "type": "c", "major": 1, "minor": 5, "fileMode": 0o666},
    {"path": "/dev/full", "type": "c", "major": 1, "minor": 7, "fileMode": 0o666},
    {"path": "/dev/random", "type": "c", "major": 1, "minor": 8, "fileMode": 0o666},
    {"path": "/dev/urandom", "type": "c", "major": 1, "minor": 9, "fileMode": 0o666},
    {"path": "/dev/tty", "type": "c", "major": 5, "minor": 0, "fileMode": 0o666},
]

DEV_SYMLINKS = [
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
    ("pts/ptmx", "/dev/ptmx"),
]

_DEVICE_TYPES = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}


class Rootfs:
    def __init__(self, config: dict, rootfs: str, bundle: str, sys: sc.Syscalls,
                 cgroup_paths: dict[str, str], in_userns: bool, new_netns: bool):
        self.config = config
        self.linux = config.get("linux") or {}
        self.rootfs = rootfs
        self.bundle = bundle
        self.sys = sys
        self.cgroup_paths = cgroup_paths
        self.in_userns = in_userns
        self.new_netns = new_netns
        self.root: Root | None = None

    # -- before pivot_root -------------------------------------------------------------

    def prepare(self) -> None:
        propagation = self.linux.get("rootfsPropagation")
        if propagation and propagation not in PROPAGATION_OPTIONS:
            raise ConfigError(f"invalid rootfsPropagation {propagation!r}")
        flags = PROPAGATION_OPTIONS[propagation] if propagation else sc.MS_SLAVE | sc.MS_REC
        self.sys.mount(None, "/", None, flags, None)
        self._make_parent_private()
        self.sys.mount(self.rootfs, self.rootfs, "bind", sc.MS_BIND | sc.MS_REC, None)
        self.root = Root(self.rootfs, self.sys)
        for mount in self.config.get("mounts") or []:
            try:
                self._mount(mount)
            except OSError as err:  # name the mount: the syscall only shows /proc/self/fd/N
                what = mount.get("type") or "bind"
                raise RuntimeFailure(
                    f"mount {what} {mount.get('source')!r} on {mount.get('destination')!r}: {err}"
                ) from err
        self._create_devices()
        self._create_dev_links()

    def _make_parent_private(self) -> None:
        """pivot_root needs the rootfs' parent mount not to be shared."""
        path = self.rootfs
        mount_points = _mount_points()
        while path not in mount_points and path != "/":
            path = os.path.dirname(path)
        if mount_points.get(path, False):
            self.sys.mount(None, path, None, sc.MS_PRIVATE, None)

    def _mount(self, mount: dict) -> None:
        assert self.root is not None
        dest = mount.get("destination")
        if not dest or not dest.startswith("/"):
            raise ConfigError(f"mount destination {dest!r} must be an absolute path")
        fstype = mount.get("type") or ""
        options = MountOptions(mount.get("options"))
        source = mount.get("source") or fstype or "none"

        if options.is_bind or fstype == "bind":
            self._bind(source, dest, options)
        elif fstype in ("proc", "sysfs"):
            self._refuse_symlink(dest, fstype)
            try:
                self.root.mount_on(dest, source, fstype, options.flags, options.data)
            except OSError as err:
                if fstype != "sysfs" or err.errno != errno.EPERM or self.new_netns:
                    raise
                # sysfs cannot be mounted without a network namespace of our own
                self._bind("/sys", dest, MountOptions(["rbind", "nosuid", "noexec", "nodev"]))
        elif fstype == "mqueue":
            try:
                self.root.mount_on(dest, source, fstype, options.flags, options.data)
            except OSError as err:
                if err.errno != errno.EPERM:
                    raise
                self._bind("/dev/mqueue", dest, MountOptions(["bind", "nosuid", "noexec", "nodev"]))
        elif fstype in ("cgroup", "cgroup2"):
            self._mount_cgroups(dest, options)
        else:
            self.root.mount_on(dest, source, fstype, options.flags, options.data)
        for propagation in options.propagation:
            self.root.set_propagation(dest, propagation)

    def _refuse_symlink(self, dest: str, fstype: str) -> None:
        st = self.root.lstat(dest) if self.root else None
        if st is not None and not stat.S_ISDIR(st.st_mode):
            raise ConfigError(
                f"cannot mount {fstype} on {dest}: it is not a directory in the rootfs"
                + (" (a symlink)" if stat.S_ISLNK(st.st_mode) else "")
            )

    def _bind(self, source: str, dest: str, options: MountOptions) -> None:
        assert self.root is not None
        if not os.path.isabs(source):
            source = os.path.join(self.bundle, source)
        is_dir = is_directory_source(source)
        src_fd = os.open(source, os.O_PATH | os.O_CLOEXEC)
        try:
            bind_flags = sc.MS_BIND | (options.flags & sc.MS_REC)
            self.root.mount_on(dest, fd_path(src_fd), None, bind_flags, None, is_dir)
        finally:
            os.close(src_fd)
        extra = options.flags & ~(sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT)
        if extra:
            self.root.remount(dest, sc.MS_BIND | extra)

    def _mount_cgroups(self, dest: str, options: MountOptions) -> None:
        """The container's own cgroups: v2 as one bind, v1 as a tmpfs of per-controller binds."""
        assert self.root is not None
        ro = options.flags & sc.MS_RDONLY
        base = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
        unified = self.cgroup_paths.get("")
        v1 = {name: path for name, path in self.cgroup_paths.items() if name}
        if not v1:
            if unified:
                self._bind(unified, dest, MountOptions(["rbind", "nosuid", "nodev", "noexec"]
                                                       + (["ro"] if ro else [])))
            return
        self.root.mount_on(dest, "tmpfs", "tmpfs", base, "mode=755")
        hierarchies: dict[str, str] = {}
        for path in v1.values():
            # /sys/fs/cgroup/cpu,cpuacct/kobako/x -> "cpu,cpuacct"
            hierarchy = _hierarchy_name(path)
            if hierarchy:
                hierarchies[hierarchy] = path
        for hierarchy, path in sorted(hierarchies.items()):
            sub = os.path.join(dest, hierarchy)
            self._bind(path, sub, MountOptions(["bind", "nosuid", "nodev", "noexec"]
                                               + (["ro"] if ro else [])))
            if "," in hierarchy:  # cpu,cpuacct: also reachable as cpu and cpuacct
                for part in hierarchy.split(","):
                    self._symlink(hierarchy, os.path.join(dest, part))
        if unified:
            self._bind(unified, os.path.join(dest, "unified"),
                       MountOptions(["bind", "nosuid", "nodev", "noexec"] + (["ro"] if ro else [])))
        if ro:
            self.root.remount(dest, sc.MS_RDONLY | base)

    def _symlink(self, target: str, link: str) -> None:
        assert self.root is not None
        parent_fd = self.root.mkdir_all(os.path.dirname(link))
        try:
            os.symlink(target, os.path.basename(link), dir_fd=parent_fd)
        except FileExistsError:
            pass
        finally:
            os.close(parent_fd)

    def _create_devices(self) -> None:
        assert self.root is not None
        devices = {d["path"]: d for d in DEFAULT_DEVICES}
        for device in self.linux.get("devices") or []:
            devices[device["path"]] = device
        for device in devices.values():
            self._create_device(device)

    def _create_device(self, device: dict) -> None:
        assert self.root is not None
        path = device["path"]
        if not path.startswith("/dev/"):
            raise ConfigError(f"device path {path!r} must be under /dev")
        kind = _DEVICE_TYPES.get(device.get("type", ""))
        if kind is None:
            raise ConfigError(f"device {path}: unknown type {device.get('type')!r}")
        parent_fd = self.root.mkdir_all(os.path.dirname(path))
        name = os.path.basename(path)
        try:
            _remove_non_directory(name, parent_fd)
            if self.in_userns:
                # mknod is not allowed in a user namespace: bind the host's device instead
                fd = os.open(name, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o644, dir_fd=parent_fd)
                os.close(fd)
                self.root.mount_on(path, path, "bind", sc.MS_BIND, None, is_dir=False)
                return
            mode = (device.get("fileMode") or 0o666) & 0o7777
            rdev = os.makedev(device.get("major", 0), device.get("minor", 0))
            os.mknod(name, mode | kind, rdev, dir_fd=parent_fd)
            os.chmod(name, mode, dir_fd=parent_fd, follow_symlinks=False)
            os.chown(name, device.get("uid", 0), device.get("gid", 0), dir_fd=parent_fd,
                     follow_symlinks=False)
        finally:
            os.close(parent_fd)

    def _create_dev_links(self) -> None:
        assert self.root is not None
        links = list(DEV_SYMLINKS)
        if os.path.exists("/proc/kcore"):
            links.append(("/proc/kcore", "/dev/core"))
        for target, link in links:
            st = self.root.lstat(link)
            if st is not None:
                continue  # the rootfs or a mount already provides it
            self._symlink(target, link)

    # -- pivot_root --------------------------------------------------------------------

    def pivot(self, no_pivot: bool) -> None:
        os.chdir(self.rootfs)
        if no_pivot:
            self.sys.mount(self.rootfs, "/", None, sc.MS_MOVE, None)
            os.chroot(".")
        else:
            old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
            new_root = os.open(self.rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
            try:
                self.sys.pivot_root(".", ".")
                # the old root is now stacked under the new one: detach it
                os.fchdir(old_root)
                self.sys.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC, None)
                self.sys.umount2(".", sc.MNT_DETACH)
                os.fchdir(new_root)
            finally:
                os.close(old_root)
                os.close(new_root)
        os.chdir("/")
        if self.root is not None:
            self.root.close()
        self.root = Root("/", self.sys)

    # -- after pivot_root --------------------------------------------------------------

    def finish(self) -> None:
        assert self.root is not None
        for path in self.linux.get("readonlyPaths") or []:
            self._readonly(path)
        if self.linux.get("maskedPaths"):
            null_fd = self._verified_dev_null()
            try:
                for path in self.linux["maskedPaths"]:
                    self._mask(path, null_fd)
            finally:
                os.close(null_fd)
        if (self.config.get("root") or {}).get("readonly"):
            self.root.remount("/", sc.MS_BIND | sc.MS_RDONLY)
        propagation = self.linux.get("rootfsPropagation")
        if propagation:
            self.sys.mount(None, "/", None, PROPAGATION_OPTIONS[propagation], None)
        self.root.close()
        self.root = None

    def _verified_dev_null(self) -> int:
        """/dev/null, checked to be the real device (it may have been swapped for a symlink)."""
        assert self.root is not None
        fd = self.root.open("/dev/null", os.O_PATH | os.O_NOFOLLOW)
        st = os.fstat(fd)
        if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
            os.close(fd)
            raise ConfigError("/dev/null in the container is not the null device; refusing to mask")
        return fd

    def _mask(self, path: str, null_fd: int) -> None:
        assert self.root is not None
        try:
            fd = self.root.open(path, os.O_PATH | os.O_NOFOLLOW)
        except FileNotFoundError:
            return
        try:
            target = fd_path(fd)
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                self.sys.mount("tmpfs", target, "tmpfs", sc.MS_RDONLY, None)
            else:
                self.sys.mount(fd_path(null_fd), target, None, sc.MS_BIND, None)
        finally:
            os.close(fd)

    def _readonly(self, path: str) -> None:
        assert self.root is not None
        try:
            fd = self.root.open(path, os.O_PATH | os.O_NOFOLLOW)
        except FileNotFoundError:
            return
        try:
            self.sys.mount(fd_path(fd), fd_path(fd), None, sc.MS_BIND | sc.MS_REC, None)
        finally:
            os.close(fd)
        self.root.remount(path, sc.MS_BIND | sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV
                          | sc.MS_NOEXEC)


def _remove_non_directory(name: str, dir_fd: int) -> None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"cannot create device {name}: a directory is in the way")
    os.unlink(name, dir_fd=dir_fd)


def _hierarchy_name(path: str) -> str:
    """The hierarchy directory under /sys/fs/cgroup that a v1 cgroup path lives in."""
    for mount_point in _mount_points():
        if mount_point.startswith("/sys/fs/cgroup/") and (
            path == mount_point or path.startswith(mount_point + "/")
        ):
            return os.path.basename(mount_point)
    return ""


def _mount_points() -> dict[str, bool]:
    """mount point -> whether it is shared, from /proc/self/mountinfo."""
    points: dict[str, bool] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mount_point = fields[4].replace("\\040", " ")
            optional = fields[6:fields.index("-")]
            points[mount_point] = any(o.startswith("shared:") for o in optional)
    return points
