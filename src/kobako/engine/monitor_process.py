"""The monitor's process and the daemon's handle on it.

At start-up the daemon forks a small reaper before any thread exists. The reaper
imports the runtime once, forks the monitor (monitor.py: one process for every
container and exec of this daemon run) and then only reaps: it is a child subreaper,
so a container init whose monitor was killed comes to it rather than becoming a zombie
under PID 1. A killed monitor is replaced at once (the daemon hears of it and fails
the requests it had in flight); the reaper ends with the daemon, the monitor does not.

The daemon and the monitor talk over a SOCK_SEQPACKET socketpair, one JSON message a
packet (see monitor.py). The reaper keeps the monitor's end too, for the monitor it
may have to start again, and says {"monitor_died": true} on it when that happens.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import signal
import socket
import time

MONITOR_EXIT_WAIT = 0.2  # seconds the reaper gives an idle monitor to end with the daemon

log = logging.getLogger("kobakod.monitor")


class MonitorError(Exception):
    pass


class MonitorProcess:
    """The daemon's handle: start() before any thread, then attach() and request()."""

    def __init__(self) -> None:
        self.pid = 0  # the reaper's
        self.log_path = ""
        self.sock: socket.socket | None = None
        self._alive_w = -1
        self._next = 0
        self._waiting: dict[int, asyncio.Future] = {}

    def start(self, log_path: str) -> None:
        """Fork the reaper (and so the monitor); the monitor's own errors go to log_path."""
        self.log_path = log_path
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        alive_r, alive_w = os.pipe()  # its EOF tells the reaper the daemon is gone
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                # keep nothing of the daemon's: not its data-root lock (the monitor would
                # hold it for as long as it lives), not its database, not its sockets
                from kobako.runtime.process import close_fds_except

                close_fds_except({0, 1, 2, theirs.fileno(), alive_r})
                _reaper(theirs, alive_r, log_path)
            except BaseException:  # noqa: BLE001 - never unwind into the daemon's code
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        os.close(alive_r)
        self.pid = pid
        self.sock = ours
        self._alive_w = alive_w
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
                self._fail_waiting("the monitor process is gone")
                return
            msg = json.loads(data)
            if msg.get("monitor_died"):
                log.error("the monitor process died and another was started (why may be "
                          "in %s)", self.log_path)
                self._fail_waiting("the monitor process died")
                continue
            future = self._waiting.pop(msg.get("req"), None)
            if future is not None and not future.done():
                future.set_result(msg)

    def _fail_waiting(self, why: str) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(MonitorError(why))
        self._waiting.clear()

    async def request(self, op: str, params: dict) -> dict:
        if self.sock is None:
            raise MonitorError("the monitor process is not running")
        self._next += 1
        req = self._next
        future = asyncio.get_running_loop().create_future()
        self._waiting[req] = future
        try:
            self.sock.send(json.dumps({"req": req, "op": op, "params": params}).encode())
        except OSError as err:
            self._waiting.pop(req, None)
            raise MonitorError(f"cannot reach the monitor process: {err}") from err
        return await future

    def stop(self) -> None:
        """Let go: the monitor serves on while it holds containers; the reaper ends."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self._alive_w >= 0:
            os.close(self._alive_w)
            self._alive_w = -1
        if self.pid:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid = 0


def _preload() -> None:
    import gc
    import hashlib  # noqa: F401 - the seccomp cache key; imported in each exec otherwise

    from kobako.engine import logs, monitor  # noqa: F401
    from kobako.linux import capabilities, cgroups, seccomp  # noqa: F401
    from kobako.linux.cgroups import birth  # noqa: F401
    from kobako.runtime import console, container, exec, init, process, rootfs, spec  # noqa: F401

    seccomp.available()  # loads libseccomp now, not in each start
    gc.freeze()  # the monitor and its children share these pages: keep the GC off them


def _reaper(sock: socket.socket, alive_r: int, log_path: str) -> None:
    from kobako.engine import monitor
    from kobako.linux import syscalls as sc

    monitor._set_name("kobako-reaper")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sc.real().prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    _preload()
    reaped: set[int] = set()
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def start_monitor() -> int:
        pid = os.fork()
        if pid == 0:
            try:
                for fd in (alive_r, wake_r, wake_w):
                    os.close(fd)
                monitor.serve(sock, log_path)  # sets up its own SIGCHLD handling
            finally:
                os._exit(0)
        return pid

    def wait_for_signals(timeout: float | None, daemon: bool = True) -> bool:
        """Reap what exited; True when the daemon is gone."""
        readable, _, _ = select.select([alive_r, wake_r] if daemon else [wake_r], [], [],
                                       timeout)
        if wake_r in readable:
            monitor.drain(wake_r)
        reaped.update(pid for pid, _ in monitor.exited_children())
        return alive_r in readable and not os.read(alive_r, 1)

    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
    monitor_pid = start_monitor()
    while not wait_for_signals(None):
        if monitor_pid in reaped:  # killed: say so, and start another
            reaped.clear()
            try:
                sock.send(json.dumps({"monitor_died": True}).encode())
            except OSError:
                return
            monitor_pid = start_monitor()
    # an idle monitor ends with the daemon: reap it rather than leave it to PID 1
    deadline = time.monotonic() + MONITOR_EXIT_WAIT
    while monitor_pid not in reaped and time.monotonic() < deadline:
        wait_for_signals(max(0.0, deadline - time.monotonic()), daemon=False)
