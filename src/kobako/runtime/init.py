"""The processes `create` forks: they enter the namespaces and become the container's init.

    runtime (create) ──fork──► stage1: joins namespaces by path, unshares new ones
                                  └──fork──► stage2 (the init; PID 1 in a new pid ns):
                                             rootfs, pivot_root, console, sysctl, hostname,
                                             rlimits; "ready"; blocks on exec.fifo until
                                             `start`; caps, seccomp; exec via the stub

stage1 exists because a new pid (or time) namespace applies only to children. The
runtime and the stages talk over a SOCK_SEQPACKET socketpair, one JSON message a packet.
Both stages are non-dumpable, so nothing in the container can open their
/proc/<pid>/exe (the host's interpreter) or their fds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys as _sys

from kobako.linux import syscalls as sc
from kobako.linux.loopback import loopback_up

from . import hooks
from .errors import RuntimeFailure
from .namespaces import NAMESPACES, NamespacePlan, write_time_offsets


class ChildFailed(RuntimeFailure):
    pass


class PeerGone(ChildFailed):
    """The sync socket's other end closed: in a child, the runtime failed and reports it."""


def send(sock: socket.socket, kind: str, **data) -> None:
    sock.send(json.dumps({"type": kind, **data}).encode())


def recv(sock: socket.socket, expect: str | None = None) -> dict:
    raw = sock.recv(1 << 20)
    if not raw:
        raise PeerGone("the other side of the sync socket went away")
    msg = json.loads(raw)
    if msg.get("type") == "error":
        raise ChildFailed(msg.get("message", "unknown error"))
    if expect and msg.get("type") != expect:
        raise ChildFailed(f"sync: expected {expect!r}, got {msg.get('type')!r}")
    return msg


class InitContext:
    """What the forked stages need; they can import nothing once inside the container."""

    def __init__(self, *, config: dict, rootfs: str, bundle: str, plan: NamespacePlan,
                 sock: socket.socket, fifo_fd: int, stub_fd: int, cgroup_paths: dict,
                 console: socket.socket | None = None, no_pivot: bool = False,
                 no_new_keyring: bool = False, preserve_fds: int = 0, container_id: str = "",
                 stdio: tuple[int, int, int] | None = None, seccomp_filter=None):
        self.config = config
        self.rootfs = rootfs
        self.bundle = bundle
        self.plan = plan
        self.sock = sock
        self.fifo_fd = fifo_fd
        self.stub_fd = stub_fd
        self.cgroup_paths = cgroup_paths
        self.console = console
        self.no_pivot = no_pivot
        self.no_new_keyring = no_new_keyring
        self.preserve_fds = preserve_fds
        self.container_id = container_id
        self.stdio = stdio  # fds to become the container's 0, 1, 2 (else ours are inherited)
        self.seccomp_filter = seccomp_filter  # compiled before the fork


def run_child(body, sock: socket.socket, *args) -> None:
    """Run a forked child's body; report any failure to the runtime; never return."""
    code = 0
    try:
        body(*args)
    except BaseException as err:  # noqa: BLE001 - a forked child must never unwind into the CLI
        code = 1
        if isinstance(err, PeerGone):
            os._exit(code)  # the runtime gave up first and reports its own error
        if isinstance(err, (RuntimeFailure, sc.SyscallError)):
            message = str(err)
        else:
            message = f"{type(err).__name__}: {err} (at {_where(err)})"
        try:
            send(sock, "error", message=message)
        except OSError:
            _sys.stderr.write(message + "\n")
    finally:
        os._exit(code)


def _where(err: BaseException) -> str:
    """file:line where an unexpected error was raised (no traceback module: after pivot_root
    nothing more can be imported)."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "?"
    return f"{os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"


def use_stdio(stdio: tuple[int, int, int] | None) -> None:
    if stdio:
        for target, fd in enumerate(stdio):
            if fd != target:
                os.dup2(fd, target)


def stage1(ctx: InitContext) -> None:
    sys = sc.real()
    use_stdio(ctx.stdio)
    sys.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    sys.prctl(sc.PR_SET_DUMPABLE, 0)
    recv(ctx.sock, "go")
    for kind, fd in ctx.plan.open_join_fds():
        sys.setns(fd, NAMESPACES[kind][0])
        os.close(fd)
    if "user" in ctx.plan.new:
        sys.unshare(sc.CLONE_NEWUSER)
        send(ctx.sock, "userns")
        recv(ctx.sock, "mapped")
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    flags = ctx.plan.unshare_flags()
    if flags:
        sys.unshare(flags)
    offsets = (ctx.config.get("linux") or {}).get("timeOffsets")
    if offsets:
        # /proc/self/* belongs to host root while we are not dumpable, and host root is
        # unmapped in a new user namespace (EACCES): be dumpable for this one write. No
        # container process can see us: we are in none of the container's pid namespaces.
        userns = "user" in ctx.plan.new or "user" in ctx.plan.join
        if userns:
            sys.prctl(sc.PR_SET_DUMPABLE, 1)
        write_time_offsets(offsets)
        if userns:
            sys.prctl(sc.PR_SET_DUMPABLE, 0)
    fork_stage2(ctx.sock, stage2, ctx)


def fork_stage2(sock: socket.socket, body, ctx) -> None:
    """Stage 1's end: fork the child that lives in the namespaces (new pid and time
    namespaces apply only to children), tell the runtime its pid, and go."""
    pid = os.fork()
    if pid:
        send(sock, "child", pid=pid)
        os._exit(0)
    run_child(body, sock, ctx)


def stage2(ctx: InitContext) -> None:
    from . import process as proc
    from .rootfs import Rootfs

    sys = sc.real()
    config, linux = ctx.config, ctx.config.get("linux") or {}
    spec_process = config.get("process") or {}
    os.setsid()
    state = recv(ctx.sock, "state")["state"]

    if "oomScoreAdj" in spec_process:
        _write("/proc/self/oom_score_adj", str(spec_process["oomScoreAdj"]), "oomScoreAdj")
    if "network" in ctx.plan.new:
        loopback_up()

    if "mount" not in ctx.plan.new and "mount" not in ctx.plan.join:
        raise RuntimeFailure("config.json must have a mount namespace (new or joined)")
    rootfs = Rootfs(config, ctx.rootfs, ctx.bundle, sys, ctx.cgroup_paths,
                    in_userns="user" in ctx.plan.new or "user" in ctx.plan.join,
                    new_netns="network" in ctx.plan.new)
    rootfs.prepare()
    if hooks.has_hooks(config, "prestart", "createRuntime"):
        send(ctx.sock, "hooks")
        recv(ctx.sock, "hooks-done")
    hooks.run_hooks(config, "createContainer", state)
    rootfs.pivot(ctx.no_pivot)

    if spec_process.get("terminal"):
        _setup_console(ctx, rootfs)
    for key, value in (linux.get("sysctl") or {}).items():
        _write("/proc/sys/" + key.replace(".", "/"), str(value), f"sysctl {key}")
    rootfs.finish()
    _set_names(config, ctx.plan, sys)
    if not ctx.no_new_keyring:
        sys.join_session_keyring(f"_ses.{ctx.container_id}"[:255])
    proc.set_rlimits(spec_process.get("rlimits") or [])

    user = spec_process.get("user") or {}
    env = proc.environment(spec_process, proc.home_of(user.get("uid", 0)))
    args = spec_process.get("args") or []
    if not args:
        raise RuntimeFailure("process.args must not be empty")
    executable = proc.find_executable(args[0], env)
    proc.enter_cwd(spec_process.get("cwd") or "/")

    keep = {0, 1, 2, ctx.sock.fileno(), ctx.fifo_fd, ctx.stub_fd}
    keep.update(range(3, 3 + ctx.preserve_fds))
    proc.close_fds_except(keep)
    send(ctx.sock, "ready")
    ctx.sock.close()

    # Block until `start` opens the other end of exec.fifo.
    fifo = os.open(f"/proc/self/fd/{ctx.fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
    os.write(fifo, b"0")
    os.close(fifo)
    os.close(ctx.fifo_fd)
    hooks.run_hooks(config, "startContainer", state)
    proc.finalize_and_exec(spec_process, ctx.seccomp_filter, ctx.stub_fd, sys, executable, env)


def _setup_console(ctx: InitContext, rootfs) -> None:
    from . import console

    if ctx.console is None:
        raise RuntimeFailure("process.terminal is set but no --console-socket was given")

    def bind_dev_console(slave: str) -> None:
        # /dev/console is the container's terminal, as in runc
        fd = rootfs.root.make_file("/dev/console")
        try:
            sc.real().mount(slave, f"/proc/self/fd/{fd}", None, sc.MS_BIND, None)
        finally:
            os.close(fd)

    console.become_terminal_of(ctx.console, ctx.config.get("process") or {}, bind_dev_console)


def _set_names(config: dict, plan: NamespacePlan, sys: sc.Syscalls) -> None:
    for key, setter in (("hostname", sys.sethostname), ("domainname", sys.setdomainname)):
        value = config.get(key)
        if value:
            if "uts" not in plan.new:
                raise RuntimeFailure(f"unable to set {key} without a private UTS namespace")
            setter(value)


def _write(path: str, value: str, what: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as err:
        raise RuntimeFailure(f"{what}: write {value!r} to {path}: {err.strerror}") from err
