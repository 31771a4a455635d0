"""The last steps before a container process runs, shared by the init and `exec`.

Order (as runc's finalizeNamespace): rlimits, cwd, bounding set, seccomp (early
when no_new_privileges is off, because loading it then needs CAP_SYS_ADMIN),
user switch with keepcaps, capabilities, no_new_privs, seccomp (late), and the
exec through the sealed stub (see stub.c).
"""

from __future__ import annotations

import os
import resource
import signal
import stat

from kobako.linux import syscalls as sc

from .errors import ConfigError, RuntimeFailure

STUB_PATH = os.path.join(os.path.dirname(__file__), "kobako-stub")

_F_ADD_SEALS = 1033
_SEALS = 0x0001 | 0x0002 | 0x0004 | 0x0008  # F_SEAL_SEAL | SHRINK | GROW | WRITE


class ExecFailed(RuntimeFailure):
    pass


def preload(process: dict, seccomp_cfg: dict | None, cache_dir: str | None = None):
    """Import now what the child needs after it enters the container: from then on the
    host's files (our modules among them) are out of its sight. Returns the seccomp
    filter compiled by libseccomp (cached in cache_dir), for the child to load."""
    from kobako.linux import capabilities  # noqa: F401

    compiled = None
    if seccomp_cfg:
        from kobako.linux import seccomp

        compiled = seccomp.compile_filter(seccomp_cfg, cache_dir)
    if process.get("terminal"):
        from . import console  # noqa: F401
    if process.get("rlimits"):
        import resource  # noqa: F401
    return compiled


def sealed_stub() -> int:
    """A memfd holding the exec stub, sealed against every write."""
    with open(STUB_PATH, "rb") as f:
        code = f.read()
    fd = os.memfd_create("kobako-stub", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(fd, code)
    import fcntl

    fcntl.fcntl(fd, _F_ADD_SEALS, _SEALS)
    return fd


def rlimit_number(name: str) -> int:
    value = getattr(resource, name, None)
    if not isinstance(value, int):
        raise ConfigError(f"unknown rlimit {name!r}")
    return value


def set_rlimits(rlimits: list[dict]) -> None:
    for limit in rlimits:
        name = limit.get("type", "")
        soft, hard = limit.get("soft", 0), limit.get("hard", 0)
        try:
            resource.setrlimit(rlimit_number(name), (soft, hard))
        except (OSError, ValueError) as err:
            reason = getattr(err, "strerror", None) or str(err)
            if isinstance(err, PermissionError) or "not allowed" in reason:
                reason += " (raising a hard limit needs CAP_SYS_RESOURCE)"
            raise RuntimeFailure(f"setrlimit {name} soft={soft} hard={hard}: {reason}") from err


def environment(process: dict, home: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in process.get("env") or []:
        key, sep, value = item.partition("=")
        if sep:
            env[key] = value
    env.setdefault("HOME", home)
    return env


def home_of(uid: int) -> str:
    """HOME from the container's /etc/passwd, as runc sets it when env lacks one."""
    try:
        with open("/etc/passwd") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2] == str(uid):
                    return fields[5] or "/"
    except OSError:
        pass
    return "/"


def find_executable(arg0: str, env: dict[str, str]) -> str:
    """Resolve args[0] against the container's PATH, with the error runc (and Docker) show."""
    def executable(path: str) -> bool:
        try:
            st = os.stat(path)
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and os.access(path, os.X_OK)

    if "/" in arg0:
        if not executable(arg0):
            if not os.path.exists(arg0):
                raise ExecFailed(f'exec: "{arg0}": stat {arg0}: no such file or directory')
            raise ExecFailed(f'exec: "{arg0}": permission denied')
        return arg0
    for directory in env.get("PATH", "").split(":"):
        candidate = os.path.join(directory or ".", arg0)
        if executable(candidate):
            return candidate
    raise ExecFailed(f'exec: "{arg0}": executable file not found in $PATH')


def enter_cwd(cwd: str) -> None:
    """chdir, then make sure the cwd is inside our root (CVE-2024-21626: a leaked fd as cwd)."""
    if not cwd.startswith("/"):
        raise ConfigError(f"process cwd {cwd!r} must be an absolute path")
    try:
        os.chdir(cwd)
    except OSError as err:
        # runc's words (Go's lowercase errno text)
        raise RuntimeFailure(f'chdir to cwd ("{cwd}") set in config.json failed: '
                             f"{(err.strerror or '').lower()}") from err
    try:
        here = os.getcwd()
    except FileNotFoundError:
        here = ""
    if not here.startswith("/"):
        raise RuntimeFailure(f"current working directory {cwd!r} is outside of the container root")


def close_fds_except(keep: set[int]) -> None:
    """Close every fd not in keep, so nothing of the runtime leaks into the container."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the fd of the listdir itself, already closed


def switch_user(user: dict) -> None:
    uid, gid = user.get("uid", 0), user.get("gid", 0)
    groups = user.get("additionalGids") or []
    try:
        os.setgroups(groups)
    except PermissionError:
        if groups:
            raise
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if user.get("umask") is not None:
        os.umask(user["umask"])


def finalize_and_exec(process: dict, seccomp_filter, stub_fd: int, sys: sc.Syscalls,
                      executable: str, env: dict[str, str]) -> None:
    """Apply user, capabilities, no_new_privs and seccomp, then exec. Never returns."""
    from kobako.linux import capabilities

    default_signals()

    caps = process.get("capabilities")
    nnp = bool(process.get("noNewPrivileges"))
    if caps is not None:
        capabilities.apply_bounding(caps.get("bounding") or [], sys=sys)
    if seccomp_filter and not nnp:
        _load_seccomp(seccomp_filter)
    sys.prctl(sc.PR_SET_KEEPCAPS, 1)
    switch_user(process.get("user") or {})
    sys.prctl(sc.PR_SET_KEEPCAPS, 0)
    if caps is not None:
        capabilities.apply(caps, sys=sys)
    if nnp:
        sys.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
    if seccomp_filter and nnp:
        _load_seccomp(seccomp_filter)
    args = process["args"]
    os.execve(stub_fd, ["kobako-stub", executable, *args], env)


def default_signals() -> None:
    """The container's program starts with every signal at its default action and none
    blocked, as under runc. An ignored signal survives execve: without this, what our
    Python (SIGPIPE, SIGXFSZ) or the monitor (SIGTERM, SIGINT, SIGHUP) ignores would be
    ignored in the container too, and a shell there could not even trap SIGTERM."""
    for number in signal.valid_signals():
        if number in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(number, signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # libc's own real-time signals
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _load_seccomp(compiled) -> None:
    from kobako.linux import seccomp

    seccomp.load_compiled(compiled)
