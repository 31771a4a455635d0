"""Network namespaces as files: create, remove, and open sockets inside one.

A container's network namespace is created before the container (so its veth and
addresses are ready when the process starts) and kept alive by a bind mount of
the namespace onto a file, as `ip netns add` does; the runtime then joins it.

Namespaces are per task in Linux, so the work is done on a fresh, short-lived
thread that unshares or joins the network namespace and then ends: the daemon's
own threads never leave the host's namespace, and nothing else of the container
(mounts, pids) is ever entered. A socket stays in the namespace it was created in,
which is how the daemon keeps talking netlink or serving DNS inside one afterwards.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

from kobako.linux.loopback import loopback_up
from kobako.linux.syscalls import CLONE_NEWNET, MNT_DETACH, MS_BIND, SyscallError, real

T = TypeVar("T")


class NetnsError(OSError):
    """A namespace operation failed; says which file and why."""


def _on_fresh_thread(fn: Callable[[], T]) -> T:
    """Run fn on a new thread that exits afterwards (so a namespace switch dies with it)."""
    box: dict[str, object] = {}

    def body() -> None:
        try:
            box["result"] = fn()
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = err

    thread = threading.Thread(target=body, name="kobako-netns")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]


def create(path: str, loopback: bool = False) -> None:
    """A new, empty network namespace bind-mounted at `path`; lo down, as the kernel makes
    it, unless `loopback` (when nothing else will set the namespace up)."""
    os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(fd)

    def make() -> None:
        sys = real()
        sys.unshare(CLONE_NEWNET)
        if loopback:
            loopback_up()
        sys.mount(f"/proc/self/task/{threading.get_native_id()}/ns/net", path, None, MS_BIND)

    try:
        _on_fresh_thread(make)
    except SyscallError as err:
        os.unlink(path)
        raise NetnsError(err.errno, f"cannot create network namespace {path}: {err}") from None


def remove(path: str) -> None:
    """Unmount and delete a namespace file; a missing file is fine (already removed)."""
    try:
        real().umount2(path, MNT_DETACH)
    except SyscallError as err:
        if err.errno not in (22, 2):  # EINVAL: not a mount point; ENOENT: gone
            raise NetnsError(err.errno, f"cannot unmount network namespace {path}: {err}") from None
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def is_mounted(path: str) -> bool:
    """Whether `path` holds a namespace (nsfs) rather than being a plain file."""
    try:
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == path and " nsfs " in line for line in f)
    except OSError:
        return False


def run_in(path: str, fn: Callable[[], T]) -> T:
    """Call fn inside the network namespace at `path` (on a throwaway thread)."""

    def body() -> T:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            real().setns(fd, CLONE_NEWNET)
        finally:
            os.close(fd)
        return fn()

    try:
        return _on_fresh_thread(body)
    except SyscallError as err:
        raise NetnsError(err.errno, f"cannot enter network namespace {path}: {err}") from None


def socket_in(path: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket created inside the network namespace at `path`."""
    return run_in(path, lambda: socket.socket(family, kind, proto))
