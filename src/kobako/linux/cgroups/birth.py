"""Fork a child that is born in a container's cgroup, without the kernel's grace-period wait.

Writing a pid to cgroup.procs takes the global cgroup_threadgroup_rwsem for writing,
and that first waits for an RCU grace period (8-20 ms on these machines) unless
another migration took it within the last one: a third of back-to-back execs paid
it. Two ways around that lock, both used from inside the single-threaded stage that
forks the container's process:

- v1 hierarchies: a process that writes "0" (itself) to a `tasks` file moves only
  its calling thread, which the kernel does without the threadgroup lock; for a
  single-threaded process that is the whole process, and its children follow.
- the unified hierarchy (v2, or a hybrid host's cgroup2 mount): clone3 with
  CLONE_INTO_CGROUP (Linux 5.7) creates the child in the cgroup. Where clone3 is
  missing or filtered, the stage writes its own pid to cgroup.procs and forks,
  paying the wait as before.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
import signal

from kobako.linux import syscalls as sc

from .errors import CgroupError
from .host import UNIFIED

_SYS_CLONE3 = 435  # one number on every architecture (the table is asm-generic's)
_CLONE_INTO_CGROUP = 0x200000000
# clone3 absent (old kernel, seccomp'd ENOSYS or EPERM) or CLONE_INTO_CGROUP unknown
_NO_CLONE3 = {_errno.ENOSYS, _errno.EPERM, _errno.EINVAL, _errno.E2BIG}


class _CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size",
        "tls", "set_tid", "set_tid_size", "cgroup")]


class CgroupBirth:
    """The files of a cgroup, opened while our paths are still the host's (before any
    setns); `fork()` may come after the namespaces are joined."""

    def __init__(self, paths: dict[str, str]):
        self._tasks: list[tuple[str, int]] = []
        self._unified: tuple[str, int] | None = None
        try:
            for directory in sorted({path for key, path in paths.items() if key != UNIFIED}):
                self._tasks.append(_open(os.path.join(directory, "tasks"), os.O_WRONLY))
            if UNIFIED in paths:
                self._unified = _open(paths[UNIFIED], os.O_RDONLY | os.O_DIRECTORY)
        except BaseException:
            self.close()
            raise

    def fork(self) -> int:
        """Move ourselves into the v1 hierarchies, then fork a child that is in every
        hierarchy of the cgroup from its first instruction: its pid, or 0 in the child.
        Only for a single-threaded caller (raw clone3 leaves libc's cached thread id
        stale in the child, harmless until a thread API needs it)."""
        for path, fd in self._tasks:
            _write(path, fd, "0")
        if self._unified is None:
            return os.fork()
        path, fd = self._unified
        pid = _clone_into(path, fd)
        if pid is None:
            procs = _open(os.path.join(path, "cgroup.procs"), os.O_WRONLY)
            try:
                _write(*procs, str(os.getpid()))
            finally:
                os.close(procs[1])
            pid = os.fork()
        return pid

    def close(self) -> None:
        for _, fd in self._tasks + ([self._unified] if self._unified else []):
            os.close(fd)
        self._tasks, self._unified = [], None


def _open(path: str, flags: int) -> tuple[str, int]:
    try:
        return path, os.open(path, flags | os.O_CLOEXEC)
    except OSError as err:
        raise CgroupError(f"open {path}: {err.strerror}", path, err.errno) from None


def _write(path: str, fd: int, text: str) -> None:
    try:
        os.write(fd, text.encode())
    except OSError as err:
        raise CgroupError(f"write {text!r} to {path}: {err.strerror}", path, err.errno) from None


# libc and Python's own API through one PyDLL: the GIL stays held across the clone, as in
# os.fork
_API = ctypes.PyDLL(None, use_errno=True)
_API.syscall.restype = ctypes.c_long


def _clone_into(path: str, cgroup_fd: int) -> int | None:
    """clone3(CLONE_INTO_CGROUP) wrapped as os.fork wraps fork(2) (Python's own before and
    after hooks); None when this kernel or its seccomp filter has no clone3 for us."""
    args = _CloneArgs(flags=_CLONE_INTO_CGROUP, exit_signal=signal.SIGCHLD, cgroup=cgroup_fd)
    _API.PyOS_BeforeFork()
    pid = _API.syscall(ctypes.c_long(_SYS_CLONE3), ctypes.byref(args),
                      ctypes.c_size_t(ctypes.sizeof(args)))
    if pid == 0:
        _API.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno() if pid < 0 else 0
    _API.PyOS_AfterFork_Parent()
    if pid > 0:
        return pid
    if err in _NO_CLONE3:
        return None
    raise sc.syscall_error("clone3", {"cgroup": path}, err)
