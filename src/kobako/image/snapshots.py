"""Snapshot drivers: where unpacked layers live and how a container's rootfs is made.

overlay: one directory per layer (keyed by chain id) holding only that layer's changes,
  stacked as overlayfs lowerdirs under a fresh upper/work dir per container. Layers do
  not depend on their parents' content, so they can be unpacked in parallel. Each layer
  also gets a short name under ``l/`` (a symlink to its diff dir) so that long chains
  fit overlay's one-page mount option limit when mounted relative to the driver root.
vfs: one full copy of the filesystem per layer (the parent's copy plus the layer, with
  whiteouts applied as deletions) and a full copy per container. Slow, works anywhere.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import BinaryIO

from kobako.image.errors import ImageError, InvalidParameter, NotFound
from kobako.image.unpack import UnpackResult, unpack_layer
from kobako.linux import syscalls

_MAX_OPTIONS = 4000  # overlay's mount data must fit in one page (4096 with the NUL)
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _hex(chain_id: str) -> str:
    return chain_id.split(":", 1)[-1]


def _check_id(container_id: str) -> str:
    if not _ID_RE.match(container_id):
        raise InvalidParameter(f"invalid container id {container_id!r}")
    return container_id


@dataclass
class MountSpec:
    """How to assemble a container's root filesystem.

    For overlay, `options` are relative to `cwd` when they would not fit in a page with
    absolute paths (`mount()` then mounts from a child that chdirs there, as Docker
    does); `absolute_options` is always given for reading/diagnostics.
    """

    type: str  # "overlay" or "bind"
    source: str
    target: str  # the directory to mount on (the container's merged dir)
    options: list[str] = field(default_factory=list)
    cwd: str | None = None
    upper: str | None = None  # where the container's changes land
    lower: list[str] = field(default_factory=list)  # absolute lowerdirs, top first

    @property
    def options_string(self) -> str:
        return ",".join(self.options)

    def oci_mount(self) -> dict:
        """An OCI runtime-spec mount entry (absolute paths) for this rootfs."""
        if self.type == "bind":
            return {"destination": "/", "type": "bind", "source": self.source,
                    "options": ["rbind", "rw"]}
        opts = [f"lowerdir={':'.join(self.lower)}", f"upperdir={self.upper}",
                f"workdir={pathlib.Path(self.upper or '').parent / 'work'}"]
        return {"destination": "/", "type": "overlay", "source": "overlay", "options": opts}


# Docker's init layer (daemon/initlayer): what every container's root has below its own
# changes, so that neither `docker diff` nor a commit shows it: the mount points the
# runtime needs, /.dockerenv (how programs tell they run under Docker) and /etc/mtab.
INIT_LAYER = {"dev/pts": "dir", "dev/shm": "dir", "proc": "dir", "sys": "dir",
              ".dockerenv": "file", "etc/resolv.conf": "file", "etc/hosts": "file",
              "etc/hostname": "file", "dev/console": "file", "etc/mtab": "/proc/mounts"}


def write_init_layer(root: pathlib.Path) -> None:
    for rel, kind in INIT_LAYER.items():
        path = root / rel
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if kind == "dir":
            path.mkdir(mode=0o755, exist_ok=True)
        elif kind == "file":
            path.touch(mode=0o755)
        elif not path.is_symlink():
            path.symlink_to(kind)


def mount(spec: MountSpec, target: str | None = None) -> str:
    """Mount the rootfs described by `spec` on `target` (default spec.target)."""
    target = target or spec.target
    os.makedirs(target, exist_ok=True)
    if spec.type == "bind":
        syscalls.real().mount(spec.source, target, None, syscalls.MS_BIND | syscalls.MS_REC)
        return target
    if spec.cwd is None:
        syscalls.real().mount("overlay", target, "overlay", 0, spec.options_string)
        return target
    # relative lowerdirs: mount from a child process that chdirs, so the daemon's
    # own cwd (shared by all its threads) never changes
    target = os.path.abspath(target)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.chdir(spec.cwd)
            syscalls.real().mount("overlay", target, "overlay", 0, spec.options_string)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise ImageError(f"mounting overlay on {target} failed (options {spec.options_string})")
    return target


def unmount(target: str) -> None:
    try:
        syscalls.real().umount2(target, syscalls.MNT_DETACH)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOENT):  # not mounted
            raise


@functools.cache
def overlay_supported(probe_root: str) -> bool:
    """Whether an overlay mount works on the filesystem holding `probe_root`."""
    try:
        with open("/proc/filesystems") as f:
            if "overlay" not in f.read():
                return False
        os.makedirs(probe_root, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="overlay-probe-", dir=probe_root) as d:
            for sub in ("lower", "upper", "work", "merged"):
                os.mkdir(os.path.join(d, sub))
            opts = f"lowerdir={d}/lower,upperdir={d}/upper,workdir={d}/work"
            syscalls.real().mount("overlay", f"{d}/merged", "overlay", 0, opts)
            syscalls.real().umount2(f"{d}/merged", syscalls.MNT_DETACH)
        return True
    except OSError:
        return False


class Snapshotter:
    """Common interface of the drivers."""

    name = ""
    parallel_unpack = False

    def __init__(self, root: str | os.PathLike[str]):
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._cleanup_tmp()

    def _cleanup_tmp(self) -> None:
        # unfinished unpacks of a crashed process
        for entry in self.root.iterdir():
            if entry.name.startswith("tmp-"):
                _force_rmtree(entry)

    # layers --------------------------------------------------------------------------------

    def layer_dir(self, chain_id: str) -> pathlib.Path:
        return self.root / _hex(chain_id)

    def has_layer(self, chain_id: str) -> bool:
        return (self.layer_dir(chain_id) / "diff").is_dir()

    def layer_ids(self) -> list[str]:
        return [
            "sha256:" + p.name for p in self.root.iterdir()
            if len(p.name) == 64 and (p / "diff").is_dir()
        ]

    def unpack(
        self, stream: BinaryIO, parent_chain: str | None, compression: str | None = None
    ) -> tuple[pathlib.Path, UnpackResult]:
        """Unpack a layer into a temporary directory; `commit_layer` puts it in place."""
        raise NotImplementedError

    def commit_layer(self, tmp: pathlib.Path, chain_id: str) -> None:
        final = self.layer_dir(chain_id)
        if final.exists():
            _force_rmtree(tmp)  # someone else unpacked the same layer meanwhile
            return
        os.rename(tmp, final)

    def discard(self, tmp: pathlib.Path) -> None:
        _force_rmtree(tmp)

    def remove_layer(self, chain_id: str) -> None:
        d = self.layer_dir(chain_id)
        if d.exists():
            _force_rmtree(d)

    def lower_path(self, chain_id: str) -> pathlib.Path:
        return self.layer_dir(chain_id) / "diff"

    # containers ----------------------------------------------------------------------------

    def container_dir(self, container_id: str) -> pathlib.Path:
        return self.root / f"c-{_check_id(container_id)}"

    def prepare(self, container_id: str, chain_ids: list[str]) -> MountSpec:
        raise NotImplementedError

    def remove_container(self, container_id: str) -> None:
        d = self.container_dir(container_id)
        merged = d / "merged"
        if merged.exists() and os.path.ismount(merged):
            unmount(str(merged))
        if d.exists():
            _force_rmtree(d)

    def container_ids(self) -> list[str]:
        return [p.name[2:] for p in self.root.iterdir() if p.name.startswith("c-")]

    def upper_dir(self, container_id: str) -> pathlib.Path:
        return self.container_dir(container_id) / "diff"

    def init_dir(self, container_id: str) -> pathlib.Path:
        """The container's init layer, kept apart (containers made before it have none)."""
        return self.container_dir(container_id) / "init"


class OverlaySnapshotter(Snapshotter):
    name = "overlay2"
    parallel_unpack = True

    def __init__(self, root: str | os.PathLike[str]):
        super().__init__(root)
        (self.root / "l").mkdir(exist_ok=True)
        (self.root / "empty").mkdir(exist_ok=True)

    def unpack(self, stream, parent_chain, compression=None):
        tmp = self.root / f"tmp-{uuid.uuid4().hex}"
        (tmp / "diff").mkdir(parents=True)
        try:
            result = unpack_layer(stream, tmp / "diff", mode="overlay", compression=compression)
        except BaseException:
            _force_rmtree(tmp)
            raise
        return tmp, result

    def commit_layer(self, tmp, chain_id):
        short = base64.b32encode(os.urandom(10)).decode().lower().rstrip("=")[:12]
        (tmp / "link").write_text(short)
        final = self.layer_dir(chain_id)
        if final.exists():
            _force_rmtree(tmp)
            return
        os.rename(tmp, final)
        os.symlink(f"../{final.name}/diff", self.root / "l" / short)

    def remove_layer(self, chain_id):
        d = self.layer_dir(chain_id)
        with contextlib.suppress(FileNotFoundError):
            (self.root / "l" / (d / "link").read_text().strip()).unlink()
        super().remove_layer(chain_id)

    def short_link(self, chain_id: str) -> str:
        try:
            return "l/" + (self.layer_dir(chain_id) / "link").read_text().strip()
        except FileNotFoundError:
            raise NotFound(f"layer {chain_id} is not unpacked") from None

    def prepare(self, container_id, chain_ids):
        d = self.container_dir(container_id)
        for sub in ("diff", "work", "merged"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        for c in chain_ids:
            if not self.has_layer(c):
                raise NotFound(f"layer {c} is not unpacked")
        init = self.init_dir(container_id)
        write_init_layer(init)
        top_first = list(reversed(chain_ids))
        lower = [str(init)] + [str(self.lower_path(c)) for c in top_first]
        absolute = [f"lowerdir={':'.join(lower)}", f"upperdir={d}/diff", f"workdir={d}/work"]
        spec = MountSpec(
            type="overlay", source="overlay", target=str(d / "merged"), options=absolute,
            upper=str(d / "diff"), lower=lower,
        )
        if len(spec.options_string) >= _MAX_OPTIONS:
            rel = [f"{d.name}/{init.name}"] + [self.short_link(c) for c in top_first]
            spec.options = [f"lowerdir={':'.join(rel)}", f"upperdir={d.name}/diff",
                            f"workdir={d.name}/work"]
            spec.cwd = str(self.root)
            if len(spec.options_string) >= _MAX_OPTIONS:
                raise ImageError(f"too many layers ({len(chain_ids)}) for an overlay mount")
        return spec


class VfsSnapshotter(Snapshotter):
    name = "vfs"
    parallel_unpack = False

    def unpack(self, stream, parent_chain, compression=None):
        tmp = self.root / f"tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            if parent_chain:
                _copy_tree(self.lower_path(parent_chain), tmp / "diff")
            else:
                (tmp / "diff").mkdir()
            result = unpack_layer(stream, tmp / "diff", mode="vfs", compression=compression)
        except BaseException:
            _force_rmtree(tmp)
            raise
        return tmp, result

    def prepare(self, container_id, chain_ids):
        d = self.container_dir(container_id)
        d.mkdir(parents=True, exist_ok=True)
        rootfs = d / "diff"
        if not rootfs.exists():
            if chain_ids:
                _copy_tree(self.lower_path(chain_ids[-1]), rootfs)
            else:
                rootfs.mkdir()
            # the init layer over the image's files, kept apart too so that the diff
            # can leave it out as overlay's lowerdir does
            write_init_layer(self.init_dir(container_id))
            _copy_tree(self.init_dir(container_id), rootfs, into=True)
        (d / "merged").mkdir(exist_ok=True)
        return MountSpec(type="bind", source=str(rootfs), target=str(d / "merged"),
                         options=["bind"], upper=str(rootfs))


def _copy_tree(src: pathlib.Path, dst: pathlib.Path, into: bool = False) -> None:
    """A faithful copy (owners, modes, xattrs, devices, hardlinks) via cp -a; `into`: the
    contents of src over the existing dst."""
    if not src.is_dir():
        raise NotFound(f"layer directory {src} missing")
    proc = subprocess.run(
        ["cp", "-a", "--reflink=auto", "--", f"{src}/." if into else str(src), str(dst)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise ImageError(f"copying {src} to {dst} failed: {proc.stderr.strip()}")


def _force_rmtree(path: pathlib.Path) -> None:
    """Remove a tree even when it holds read-only directories or stray mounts."""
    def onerror(func, p, exc_info):
        exc = exc_info[1]
        if isinstance(exc, FileNotFoundError):
            return
        raise exc

    shutil.rmtree(path, onerror=onerror)


def make_snapshotter(root: str | os.PathLike[str], driver: str | None = None) -> Snapshotter:
    """The overlay driver when it works here (or when asked for), else vfs. As dockerd,
    the driver of an earlier start is kept (its directory exists) without probing."""
    root = pathlib.Path(root)
    if driver in (None, "", "auto"):
        prior = [name for name in ("overlay2", "vfs") if (root / name).is_dir()]
        driver = prior[0] if len(prior) == 1 else (
            "overlay2" if overlay_supported(str(root)) else "vfs")
    if driver in ("overlay", "overlay2"):
        return OverlaySnapshotter(root / "overlay2")
    if driver == "vfs":
        return VfsSnapshotter(root / "vfs")
    raise InvalidParameter(f"unknown storage driver {driver!r}")
