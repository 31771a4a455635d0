"""The zygote: a pre-imported, single-threaded process that forks monitors.

The daemon forks it at start-up, before any thread exists. It imports the runtime
and the monitor once; each container start is then a fork, not an interpreter
start (Python's start-up and imports cost more than everything else a start does).
The forked monitors share the zygote's memory copy-on-write, and gc.freeze() keeps
the garbage collector from touching (and so copying) those shared pages.

Daemon and zygote talk over a SOCK_SEQPACKET socketpair, one JSON message a
packet: {"req": n, "op": "container"|"exec", "params": {...}}. The forked monitor
answers the request itself on the same socket ({"req": n, "ok": ..., ...}), so the
daemon learns whether the container really started.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket


class ZygoteError(Exception):
    pass


class Zygote:
    """The daemon's handle on the zygote process."""

    def __init__(self) -> None:
        self.pid = 0
        self.sock: socket.socket | None = None
        self._next = 0
        self._waiting: dict[int, asyncio.Future] = {}

    def start(self) -> None:
        """Fork the zygote. Call before the daemon starts any thread."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                # keep nothing of the daemon's: not its data-root lock (monitors would hold
                # it for as long as they live), not its database, not its sockets
                from kobako.runtime.process import close_fds_except

                close_fds_except({0, 1, 2, theirs.fileno()})
                _serve(theirs)
            except BaseException:  # noqa: BLE001 - the zygote must never unwind into the daemon
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        self.pid = pid
        self.sock = ours
        ours.setblocking(False)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.sock is not None
        loop.add_reader(self.sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        assert self.sock is not None
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                return
            if not data:
                asyncio.get_running_loop().remove_reader(self.sock.fileno())
                for future in self._waiting.values():
                    if not future.done():
                        future.set_exception(ZygoteError("the zygote process died"))
                self._waiting.clear()
                return
            msg = json.loads(data)
            future = self._waiting.pop(msg.get("req"), None)
            if future is not None and not future.done():
                future.set_result(msg)

    async def request(self, op: str, params: dict) -> dict:
        assert self.sock is not None
        self._next += 1
        req = self._next
        future = asyncio.get_running_loop().create_future()
        self._waiting[req] = future
        self.sock.send(json.dumps({"req": req, "op": op, "params": params}).encode())
        return await future

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGTERM)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.pid = 0


def _preload() -> None:
    import gc
    import hashlib  # noqa: F401 - the seccomp cache key; imported in each exec otherwise

    from kobako.engine import logs, monitor  # noqa: F401
    from kobako.linux import capabilities, cgroups, seccomp  # noqa: F401
    from kobako.runtime import console, container, exec, init, process, rootfs, spec  # noqa: F401

    seccomp.available()  # loads libseccomp now, not in each monitor
    gc.freeze()


def _serve(sock: socket.socket) -> None:
    from kobako.engine import monitor

    with open("/proc/self/comm", "w") as f:
        f.write("kobako-zygote")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # monitors are our children: reap them as they exit, not only at the next request;
    # and as a subreaper we also reap a container init whose monitor was killed
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: _reap_children())
    from kobako.linux import syscalls as sc

    sc.real().prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    _preload()
    bodies = {"container": monitor.run_container_monitor, "exec": monitor.run_exec_monitor}
    while True:
        _reap_children()
        try:
            data = sock.recv(1 << 20)
        except InterruptedError:
            continue
        if not data:
            return  # the daemon is gone; monitors live on without us
        msg = json.loads(data)
        req, body = msg.get("req"), bodies.get(msg.get("op"))
        if body is None:
            sock.send(json.dumps({"req": req, "ok": False, "error": "unknown op"}).encode())
            continue
        if os.fork() == 0:
            _run_monitor(sock, req, body, msg.get("params") or {})


def _run_monitor(sock: socket.socket, req, body, params: dict) -> None:
    # the monitor waits for its own children: the zygote's reaping handler must not steal them
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    answered = False

    def reply(doc: dict) -> None:
        nonlocal answered
        if not answered:
            answered = True
            try:
                sock.send(json.dumps({"req": req, **doc}).encode())
            except OSError:
                # the daemon died while we started the container: go on monitoring it,
                # the next daemon adopts it (ContainerService.startup)
                pass
            finally:
                sock.close()

    code = 0
    try:
        body(params, reply)
    except BaseException as err:  # noqa: BLE001 - reported to the daemon
        code = 1
        try:
            reply({"ok": False, "error": f"{type(err).__name__}: {err}"})
        except OSError:
            pass
    finally:
        os._exit(code)


def _reap_children() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
