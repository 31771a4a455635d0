"""`exec`: a new process inside a running container's namespaces and cgroup.

As with `create`, forked non-dumpable children do the entering (stage 1 joins the
namespaces, stage 2 is born into the pid namespace and the cgroup) and the final
exec goes through the sealed stub; the runtime's own process never enters the
container.
"""

from __future__ import annotations

import json
import os
import signal
import socket

from kobako.linux import syscalls as sc
from kobako.linux.files import write_atomic

from . import foreground
from .container import Runtime, _reap
from .errors import BadState, ConfigError, RuntimeFailure
from .init import ChildFailed, recv, run_child, send, use_stdio
from .namespaces import JOIN_ORDER, NAMESPACES
from .state import CREATED, PAUSED, RUNNING, ContainerState

TYPE_CHECKING = False  # (not from typing: the runtime's start-up counts every import)
if TYPE_CHECKING:
    from kobako.linux.cgroups.birth import CgroupBirth


class ExecContext:
    """What the forked stages of exec need; nothing can be imported once inside."""

    def __init__(self, *, process: dict, seccomp, ns_paths: list[tuple[str, str]],
                 sock: socket.socket, stub_fd: int, console: socket.socket | None,
                 preserve_fds: int, birth: CgroupBirth,
                 stdio: tuple[int, int, int] | None = None):
        self.process = process
        self.seccomp = seccomp
        self.ns_paths = ns_paths
        self.sock = sock
        self.stub_fd = stub_fd
        self.console = console
        self.preserve_fds = preserve_fds
        self.birth = birth  # the cgroup's files, opened on the host
        self.cgroup_ns: int | None = None  # stage 1 opens it, stage 2 joins it
        self.stdio = stdio


def exec_from_cli(runtime: Runtime, args) -> int:
    state, status = runtime.status(args.container_id)
    process = _process_from_args(state, args)
    return exec_process(
        runtime, state, status, process, detach=args.detach, pid_file=args.pid_file,
        console_socket=args.console_socket, preserve_fds=args.preserve_fds,
        ignore_paused=args.ignore_paused,
    )


def _process_from_args(state: ContainerState, args) -> dict:
    if args.process:
        try:
            with open(args.process) as f:
                process = json.load(f)
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot read process file {args.process}: {err}") from None
        if not isinstance(process, dict) or not process.get("args"):
            raise ConfigError("process file: args must not be empty")
        return process
    if not args.exec_args:
        raise ConfigError("exec: no command given")
    base = state.config.get("process") or {}
    process = {
        "args": args.exec_args,
        "env": list(base.get("env") or []) + list(args.env),
        "cwd": args.cwd or base.get("cwd") or "/",
        "terminal": args.tty,
        "user": dict(base.get("user") or {"uid": 0, "gid": 0}),
        "capabilities": json.loads(json.dumps(base.get("capabilities") or {})),
        "noNewPrivileges": base.get("noNewPrivileges", False) or args.no_new_privs,
        "rlimits": base.get("rlimits") or [],
    }
    if args.user:
        uid, _, gid = args.user.partition(":")
        if not uid.isdigit() or not (gid or "0").isdigit():
            raise ConfigError(f"invalid --user {args.user!r}: want UID[:GID], as numbers")
        process["user"] = {"uid": int(uid), "gid": int(gid or 0)}
    if args.additional_gids:
        if not all(g.isdigit() for g in args.additional_gids):
            raise ConfigError(f"invalid --additional-gids {args.additional_gids}: want numbers")
        process["user"]["additionalGids"] = [int(g) for g in args.additional_gids]
    for cap in args.cap:
        for kind in ("bounding", "effective", "permitted"):
            process["capabilities"].setdefault(kind, [])
            if cap not in process["capabilities"][kind]:
                process["capabilities"][kind].append(cap)
    return process


def exec_process(runtime: Runtime, state: ContainerState, status: str, process: dict, *,
                 detach: bool, pid_file: str | None = None, console_socket: str | None = None,
                 preserve_fds: int = 0, ignore_paused: bool = False) -> int:
    """runc's exec: spawn, write --pid-file, and unless detached wait; the exit code."""
    from .console import receive_master

    terminal = bool(process.get("terminal"))
    if terminal and detach and not console_socket:
        raise ConfigError("cannot allocate tty if runtime will detach without setting console socket")
    ours = console = None
    if terminal and not console_socket:
        ours, console = foreground.console_pair()
    if not detach:
        foreground.become_subreaper()
    exec_pid = spawn_exec(state, status, process, console_socket=console_socket,
                          console=console, preserve_fds=preserve_fds,
                          ignore_paused=ignore_paused, seccomp_cache=runtime.seccomp_cache)
    if pid_file:
        write_atomic(os.path.abspath(pid_file), str(exec_pid))
    if detach:
        return 0
    master = None
    if ours is not None:
        master = receive_master(ours)
        ours.close()
    return foreground.wait_for(exec_pid, master)


def spawn_exec(state: ContainerState, status: str, process: dict, *,
               console_socket: str | None = None, console: socket.socket | None = None,
               preserve_fds: int = 0, ignore_paused: bool = False,
               stdio: tuple[int, int, int] | None = None,
               seccomp_cache: str | None = None) -> int:
    """Start `process` in the container; its pid. It is reparented to the nearest child
    subreaper, so a caller that wants its exit status makes itself one first.

    With a terminal, the pty master goes to `console` (a connected unix socket) or to
    the --console-socket path."""
    if status == PAUSED and not ignore_paused:
        raise BadState("cannot exec in a paused container")
    if status not in (RUNNING, CREATED, PAUSED):
        raise BadState(f"cannot exec in a {status} container")
    from kobako.linux.cgroups.birth import CgroupBirth

    from .console import connect_console_socket
    from .process import preload, sealed_stub

    seccomp_filter = preload(process, (state.config.get("linux") or {}).get("seccomp"),
                             seccomp_cache)
    if process.get("terminal") and console is None:
        if not console_socket:
            raise ConfigError("a terminal needs a console socket")
        console = connect_console_socket(console_socket)
    ns_paths = [
        (kind, f"/proc/{state.pid}/ns/{NAMESPACES[kind][1]}")
        for kind in sorted(state.namespaces, key=JOIN_ORDER.index)
    ]
    birth = CgroupBirth(state.cgroup_paths)
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stub_fd = sealed_stub()
    ctx = ExecContext(process=process, seccomp=seccomp_filter, ns_paths=ns_paths, sock=child,
                      stub_fd=stub_fd, console=console, preserve_fds=preserve_fds,
                      birth=birth, stdio=stdio)
    try:
        pid = os.fork()
        if pid == 0:
            parent.close()
            run_child(_exec_stage1, child, ctx)
        child.close()
        try:
            exec_pid = recv(parent, "child")["pid"]
        finally:
            _reap(pid)
        # The sync socket is close-on-exec: EOF means the exec happened, a message an error.
        raw = parent.recv(1 << 20)
        if raw:
            _reap(exec_pid)
            raise ChildFailed(json.loads(raw).get("message", "exec failed"))
    finally:
        parent.close()
        birth.close()
        os.close(stub_fd)
        if console is not None:
            console.close()
    return exec_pid


def _exec_stage1(ctx: ExecContext) -> None:
    """Join the container's namespaces, then fork the process that is born inside (pid
    and time namespaces apply to children only) and in the container's cgroup (see
    kobako.linux.cgroups.birth). Joining first is safe: we are not dumpable, and no
    process of the container can see us (the pid namespace is not ours, only our
    child's). The cgroup namespace is the child's to join: entering the cgroup checks
    that the source and the target are both inside our cgroup namespace."""
    sys = sc.real()
    use_stdio(ctx.stdio)
    sys.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    sys.prctl(sc.PR_SET_DUMPABLE, 0)
    fds = []
    try:
        for kind, path in ctx.ns_paths:
            fds.append((kind, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
    except OSError as err:
        raise RuntimeFailure(f"cannot open the container's namespaces: {err}") from err
    for kind, fd in fds:
        if kind == "cgroup":
            ctx.cgroup_ns = fd
            continue
        sys.setns(fd, NAMESPACES[kind][0])
        os.close(fd)
    pid = ctx.birth.fork()
    if pid:
        send(ctx.sock, "child", pid=pid)
        os._exit(0)
    run_child(_exec_stage2, ctx.sock, ctx)


def _exec_stage2(ctx: ExecContext) -> None:
    from . import process as proc

    sys = sc.real()
    if ctx.cgroup_ns is not None:
        sys.setns(ctx.cgroup_ns, sc.CLONE_NEWCGROUP)
        os.close(ctx.cgroup_ns)
    process = ctx.process
    os.setsid()
    if process.get("terminal"):
        from . import console

        console.become_terminal_of(ctx.console, process)
    proc.set_rlimits(process.get("rlimits") or [])
    user = process.get("user") or {}
    env = proc.environment(process, proc.home_of(user.get("uid", 0)))
    executable = proc.find_executable(process["args"][0], env)
    proc.enter_cwd(process.get("cwd") or "/")
    keep = {0, 1, 2, ctx.sock.fileno(), ctx.stub_fd}
    keep.update(range(3, 3 + ctx.preserve_fds))
    proc.close_fds_except(keep)
    proc.finalize_and_exec(process, ctx.seccomp, ctx.stub_fd, sys, executable, env)
