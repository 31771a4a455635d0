"""Seccomp filters loaded into real (forked) processes."""

import ctypes
import errno
import os
import signal
import socket
import tempfile
import uuid

import pytest
from forked import in_child, run_child

from kobako.engine import seccomp_default
from kobako.linux import seccomp, syscalls

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

DOCKER_DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]


def errno_of(call, *args):
    try:
        call(*args)
    except OSError as e:
        return e.errno
    return 0


@pytest.fixture
def scratch():
    with tempfile.TemporaryDirectory(prefix=f"kobako-test-seccomp-{uuid.uuid4().hex[:8]}-") as d:
        yield d


def test_errno_rules(scratch):
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EROFS},
        ],
    }
    os.mkdir(os.path.join(scratch, "existing"))

    def child():
        seccomp.load(profile)
        return [
            errno_of(os.mkdir, os.path.join(scratch, "new")),
            errno_of(os.rmdir, os.path.join(scratch, "existing")),
            errno_of(os.listdir, scratch),
        ]

    assert in_child(child) == [errno.EPERM, errno.EROFS, 0]
    # The parent is not filtered, and the child really did nothing.
    assert os.listdir(scratch) == ["existing"]


def test_argument_condition():
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{
            "names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES,
            "args": [{"index": 0, "value": socket.AF_INET, "op": "SCMP_CMP_EQ"}],
        }],
    }

    def child():
        seccomp.load(profile)

        def make(family):
            socket.socket(family, socket.SOCK_DGRAM).close()

        return [errno_of(make, socket.AF_INET), errno_of(make, socket.AF_UNIX)]

    assert in_child(child) == [errno.EACCES, 0]


def test_kill_process_action():
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"}],
    }

    def child():
        seccomp.load(profile)
        os.getppid()
        return "survived"

    status, result = run_child(child)
    assert result is None
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


# --- Docker's default profile -------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
SYS = {"unshare": 272, "mount": 165, "keyctl": 250, "clone3": 435, "personality": 135,
       "getpid": 39, "socket": 41, "add_key": 248, "ptrace": 101, "reboot": 169}


def raw(name, *args):
    """errno of a raw syscall (0 on success)."""
    ctypes.set_errno(0)
    rc = _libc.syscall(ctypes.c_long(SYS[name]), *[ctypes.c_long(a) for a in args])
    return ctypes.get_errno() if rc < 0 else 0


needs_x86_64 = pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86_64 numbers")


@needs_x86_64
def test_docker_default_profile_blocks_privileged_calls(scratch):
    profile = seccomp_default.default_profile(DOCKER_DEFAULT_CAPS)

    def child():
        # A private mount namespace first, so that a broken filter cannot leak the tmpfs.
        sys = syscalls.real()
        sys.unshare(syscalls.CLONE_NEWNS)
        sys.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
        seccomp.load(profile)
        return {
            "unshare": raw("unshare", syscalls.CLONE_NEWUTS),
            "mount": errno_of(syscalls.real().mount, "tmpfs", scratch, "tmpfs"),
            "keyctl": raw("keyctl", 0, 0),
            "add_key": raw("add_key", 0, 0, 0, 0, 0),
            "reboot": raw("reboot", 0, 0, 0, 0),
            # PTRACE_PEEKDATA on a pid that cannot exist: ESRCH once seccomp lets it by
            "ptrace": raw("ptrace", 2, 0x3FFFFFFF, 0, 0),
            "clone3": raw("clone3", 0, 0),
            "vsock": errno_of(socket.socket, 40, socket.SOCK_STREAM),  # AF_VSOCK
            "personality_bad": raw("personality", 0x0040000),  # ADDR_NO_RANDOMIZE
            # and normal life goes on
            "personality_query": raw("personality", 0xFFFFFFFF),
            "getpid": raw("getpid"),
            "mkdir": errno_of(os.mkdir, os.path.join(scratch, "d")),
            "inet": errno_of(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()),
            "fork": _fork_works(),
        }

    got = in_child(child)
    assert got == {
        "unshare": errno.EPERM, "mount": errno.EPERM, "keyctl": errno.EPERM,
        "add_key": errno.EPERM, "reboot": errno.EPERM, "ptrace": errno.ESRCH,
        "clone3": errno.ENOSYS, "vsock": errno.EPERM, "personality_bad": errno.EPERM,
        "personality_query": 0, "getpid": 0, "mkdir": 0, "inet": 0, "fork": True,
    }
    assert os.listdir(scratch) == ["d"]  # mkdir worked; the tmpfs mount did not happen
    assert not os.path.ismount(scratch)


def _fork_works():
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 7


@needs_x86_64
def test_docker_default_profile_with_sys_admin_allows_unshare():
    profile = seccomp_default.default_profile(DOCKER_DEFAULT_CAPS + ["CAP_SYS_ADMIN"])

    def child():
        seccomp.load(profile)
        return {"unshare": raw("unshare", syscalls.CLONE_NEWUTS),
                "keyctl": raw("keyctl", 0, 0)}

    assert in_child(child) == {"unshare": 0, "keyctl": errno.EPERM}


def test_compiled_filter_is_cached_and_loads_like_libseccomp(scratch, tmp_path):
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
    }
    cache = str(tmp_path / "cache")
    compiled = seccomp.compile_filter(profile, cache)
    [cached] = os.listdir(cache)
    with open(os.path.join(cache, cached), "rb") as f:
        assert f.read() == compiled.program  # the next start reads it instead of building
    again = seccomp.compile_filter(profile, cache)
    assert again.program == compiled.program and os.listdir(cache) == [cached]
    other = seccomp.compile_filter({**profile, "defaultAction": "SCMP_ACT_LOG"}, cache)
    assert other.program != compiled.program and len(os.listdir(cache)) == 2

    def child():
        from kobako.linux import syscalls as sc

        sc.real().prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
        seccomp.load_compiled(again)
        return [errno_of(os.mkdir, os.path.join(scratch, "new")), errno_of(os.listdir, scratch)]

    assert in_child(child) == [errno.EPERM, 0]
