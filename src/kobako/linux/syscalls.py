"""The kernel calls kobako makes that Python 3.11's `os` module lacks.

Everything goes through one `Syscalls` interface with two implementations:
`RealSyscalls` (ctypes on libc) and `RecordingSyscalls` (a fake that records
the calls, so mount/namespace logic can be unit-tested without root).

A failing call raises `SyscallError`, which names the call, its arguments and
the errno text, e.g. ``mount(source='proc', target='/x/proc', ...): Operation
not permitted``.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os

# clone(2) / unshare(2) / setns(2) namespace flags
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000
MS_LAZYTIME = 0x2000000

MNT_FORCE = 1
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

# prctl(2) options
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

# openat2(2) resolve flags
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# keyctl(2)
KEYCTL_JOIN_SESSION_KEYRING = 1

# x86_64 / aarch64 syscall numbers for calls glibc 2.36 has no wrapper for
_SYSCALL_NUMBERS = {
    "x86_64": {"pivot_root": 155, "openat2": 437, "capget": 125, "capset": 126, "keyctl": 250},
    "aarch64": {"pivot_root": 41, "openat2": 437, "capget": 90, "capset": 91, "keyctl": 219},
}

# Annotations only: `typing` costs start-up time the runtime can't spare.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol

    class Syscalls(Protocol):
        """The kernel interface the runtime uses. See RealSyscalls for semantics."""

        def unshare(self, flags: int) -> None: ...
        def setns(self, fd: int, nstype: int = 0) -> None: ...
        def mount(
            self, source: str | None, target: str, fstype: str | None, flags: int = 0,
            data: str | None = None,
        ) -> None: ...
        def umount2(self, target: str, flags: int = 0) -> None: ...
        def pivot_root(self, new_root: str, put_old: str) -> None: ...
        def sethostname(self, name: str) -> None: ...
        def setdomainname(self, name: str) -> None: ...
        def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int: ...
        def capget(self) -> tuple[int, int, int]: ...
        def capset(self, effective: int, permitted: int, inheritable: int) -> None: ...
        def openat2(self, dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int: ...
        def join_session_keyring(self, name: str | None) -> None: ...


MOUNT_FLAG_NAMES = {
    value: name
    for name, value in globals().items()
    if name.startswith("MS_") and isinstance(value, int)
}


class SyscallError(OSError):
    """A failed kernel call: names the call, its arguments and the errno text."""

    def __init__(self, call: str, args: dict[str, Any], err: int):
        self.call = call
        self.call_args = args
        described = ", ".join(f"{k}={_describe(call, k, v)}" for k, v in args.items())
        super().__init__(err, f"{call}({described}): {os.strerror(err)}")

    def __str__(self) -> str:
        return self.strerror or super().__str__()


_ERRNO_CLASSES: dict[int, type[OSError]] = {
    _errno.ENOENT: FileNotFoundError, _errno.EEXIST: FileExistsError,
    _errno.EPERM: PermissionError, _errno.EACCES: PermissionError,
    _errno.ESRCH: ProcessLookupError, _errno.ENOTDIR: NotADirectoryError,
    _errno.EISDIR: IsADirectoryError, _errno.EINTR: InterruptedError,
}
_SPECIFIC: dict[type[OSError], type[SyscallError]] = {}


def syscall_error(call: str, args: dict[str, Any], err: int) -> SyscallError:
    """A SyscallError that is also the matching builtin (FileNotFoundError for ENOENT...),
    so callers can catch it as they would catch the same error from `os`."""
    base = _ERRNO_CLASSES.get(err)
    if base is None:
        return SyscallError(call, args, err)
    cls = _SPECIFIC.get(base)
    if cls is None:
        cls = _SPECIFIC[base] = type(f"Syscall{base.__name__}", (SyscallError, base), {})
    return cls(call, args, err)


def _describe(call: str, key: str, value: Any) -> str:
    if call == "mount" and key == "flags" and isinstance(value, int) and value:
        names = [name for bit, name in sorted(MOUNT_FLAG_NAMES.items()) if value & bit]
        if names:
            return "|".join(names)
    if isinstance(value, int) and key in ("nstype", "flags"):
        return hex(value)
    return repr(value)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _enc(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


class RealSyscalls:
    """The real kernel, through ctypes on the process's libc."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long
        self._numbers = _SYSCALL_NUMBERS.get(os.uname().machine, _SYSCALL_NUMBERS["x86_64"])

    def _check(self, result: int, call: str, args: dict[str, Any]) -> int:
        if result < 0:
            raise syscall_error(call, args, ctypes.get_errno())
        return result

    def _syscall(self, name: str, *args: Any) -> int:
        return self._libc.syscall(ctypes.c_long(self._numbers[name]), *args)

    def unshare(self, flags: int) -> None:
        self._check(self._libc.unshare(ctypes.c_int(flags)), "unshare", {"flags": flags})

    def setns(self, fd: int, nstype: int = 0) -> None:
        self._check(self._libc.setns(fd, nstype), "setns", {"fd": fd, "nstype": nstype})

    def mount(self, source, target, fstype, flags=0, data=None) -> None:
        result = self._libc.mount(
            _enc(source), _enc(target), _enc(fstype), ctypes.c_ulong(flags), _enc(data)
        )
        self._check(
            result, "mount",
            {"source": source, "target": target, "fstype": fstype, "flags": flags, "data": data},
        )

    def umount2(self, target: str, flags: int = 0) -> None:
        self._check(
            self._libc.umount2(_enc(target), flags), "umount2", {"target": target, "flags": flags}
        )

    def pivot_root(self, new_root: str, put_old: str) -> None:
        result = self._syscall("pivot_root", _enc(new_root), _enc(put_old))
        self._check(result, "pivot_root", {"new_root": new_root, "put_old": put_old})

    def sethostname(self, name: str) -> None:
        raw = name.encode()
        self._check(self._libc.sethostname(raw, len(raw)), "sethostname", {"name": name})

    def setdomainname(self, name: str) -> None:
        raw = name.encode()
        self._check(self._libc.setdomainname(raw, len(raw)), "setdomainname", {"name": name})

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        result = self._libc.prctl(
            option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(arg4),
            ctypes.c_ulong(arg5),
        )
        return self._check(result, "prctl", {"option": option, "arg2": arg2, "arg3": arg3})

    def capget(self) -> tuple[int, int, int]:
        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        self._check(
            self._syscall("capget", ctypes.byref(header), ctypes.byref(data)), "capget", {}
        )
        def join(field: str) -> int:
            return getattr(data[0], field) | (getattr(data[1], field) << 32)
        return join("effective"), join("permitted"), join("inheritable")

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        for index, shift in ((0, 0), (1, 32)):
            data[index].effective = (effective >> shift) & 0xFFFFFFFF
            data[index].permitted = (permitted >> shift) & 0xFFFFFFFF
            data[index].inheritable = (inheritable >> shift) & 0xFFFFFFFF
        self._check(
            self._syscall("capset", ctypes.byref(header), ctypes.byref(data)), "capset",
            {"effective": hex(effective), "permitted": hex(permitted),
             "inheritable": hex(inheritable)},
        )

    def openat2(self, dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
        how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
        result = self._syscall(
            "openat2", ctypes.c_int(dirfd), _enc(path), ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        return self._check(
            result, "openat2", {"dirfd": dirfd, "path": path, "flags": flags, "resolve": resolve}
        )

    def join_session_keyring(self, name: str | None) -> None:
        result = self._syscall(
            "keyctl", ctypes.c_long(KEYCTL_JOIN_SESSION_KEYRING), _enc(name)
        )
        # ENOSYS/EPERM happen under some seccomp profiles and old kernels; runc ignores them too.
        if result < 0 and ctypes.get_errno() not in (_errno.ENOSYS, _errno.EPERM):
            self._check(result, "keyctl", {"op": "JOIN_SESSION_KEYRING", "name": name})


class RecordingSyscalls:
    """A fake kernel for unit tests: records every call, optionally fails some.

    `fail` maps a call name to an errno that the fake raises for that call.
    """

    def __init__(self, fail: dict[str, int] | None = None):
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail = fail or {}
        self._next_fd = 1000

    def _record(self, call: str, **args: Any) -> None:
        self.calls.append((call, args))
        if call in self.fail:
            raise syscall_error(call, args, self.fail[call])

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def unshare(self, flags):
        self._record("unshare", flags=flags)

    def setns(self, fd, nstype=0):
        self._record("setns", fd=fd, nstype=nstype)

    def mount(self, source, target, fstype, flags=0, data=None):
        self._record("mount", source=source, target=target, fstype=fstype, flags=flags, data=data)

    def umount2(self, target, flags=0):
        self._record("umount2", target=target, flags=flags)

    def pivot_root(self, new_root, put_old):
        self._record("pivot_root", new_root=new_root, put_old=put_old)

    def sethostname(self, name):
        self._record("sethostname", name=name)

    def setdomainname(self, name):
        self._record("setdomainname", name=name)

    def prctl(self, option, arg2=0, arg3=0, arg4=0, arg5=0):
        self._record("prctl", option=option, arg2=arg2, arg3=arg3)
        return 0

    def capget(self):
        self._record("capget")
        return (0, 0, 0)

    def capset(self, effective, permitted, inheritable):
        self._record("capset", effective=effective, permitted=permitted, inheritable=inheritable)

    def openat2(self, dirfd, path, flags, mode=0, resolve=0):
        self._record("openat2", dirfd=dirfd, path=path, flags=flags, resolve=resolve)
        self._next_fd += 1
        return self._next_fd

    def join_session_keyring(self, name):
        self._record("join_session_keyring", name=name)


_real: RealSyscalls | None = None


def real() -> RealSyscalls:
    """The process-wide RealSyscalls (libc is loaded once)."""
    global _real
    if _real is None:
        _real = RealSyscalls()
    return _real
