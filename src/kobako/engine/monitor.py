"""The monitor: one process that holds the stdio, log and exit status of every container
(and exec) a daemon run starts.

It is forked at daemon start-up, with the runtime already imported, and it outlives
the daemon: the containers' inits are its children (it is a child subreaper), it
writes their json-file logs and records their exits, and the daemon talks to it over
a unix socket per container, so a restarted daemon finds every container again (live
restore). Once its daemon is gone it serves on until its last container and exec have
ended, then exits; the next daemon forks a monitor of its own.

    daemon ──request──► monitor ──fork──► short-lived child: Runtime.create/start
                           ▲                  └─► container init (reparented to the monitor)
                           └── relays stdio, writes the log, reaps, records exit.json

Everything runs on one single-threaded event loop (Loop): no process's IO waits for
another's. Requests come over a SOCK_SEQPACKET socketpair, one JSON message a packet:
{"req": n, "op": "container"|"exec", "params": {...}}; the answer carries the same
"req" ({"req": n, "ok": ..., ...}). See relay.py for the per-process socket protocol.
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable, Iterator

from kobako.engine.relay import Relay, close_stdio, stdio
from kobako.timestamps import now_rfc3339

EXIT_FILE = "exit.json"
MONITOR_FILE = "monitor.json"
LOG_ERROR_FILE = "log-errors"
UNCLAIMED_LIMIT = 1024  # exit statuses of children nobody asked for (orphans) kept
# ... and for how long: a status is asked for within moments of the exit (an init that
# exits before its start is reported); an older one is an orphan's, and its pid may
# come back (pid_max wraps) as a new container's init, which must not inherit it
UNCLAIMED_TTL = 30.0


def drain(fd: int) -> None:
    """Read a non-blocking pipe empty (a signal wakeup pipe)."""
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def exited_children() -> Iterator[tuple[int, int]]:
    """(pid, wait status) of each child that has exited, reaping it."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, status


class Timer:
    def __init__(self, when: float, callback: Callable[[], None]):
        self.when = when
        self.callback: Callable[[], None] | None = callback

    def cancel(self) -> None:
        self.callback = None


class Loop:
    """A small single-threaded event loop: fd readiness, timers and child exits.

    The monitor forks (container starts, execs), which is why it is not asyncio with
    threads. Children are reaped in one place (waitpid(-1) on SIGCHLD) and their
    statuses handed to whoever asked with on_exit(); a status may come before the
    question (a container init that exits at once), so it is kept until asked."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self._handlers: dict[int, list] = {}  # fd -> [reader, writer]
        self._timers: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._exits: dict[int, Callable[[int], None]] = {}
        self._unclaimed: dict[int, tuple[int, float]] = {}  # pid -> (status, when reaped)
        self._owner = os.getpid()
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wakeup_w)
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
        self.add_reader(self._wakeup_r, self._on_wakeup)

    def close(self) -> None:
        """Give back the process's SIGCHLD handling (the loop lives as long as the
        monitor; tests make and close several)."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.selector.close()
        os.close(self._wakeup_r)
        os.close(self._wakeup_w)

    # -- file descriptors ---------------------------------------------------------------

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self._set(fd, 0, callback)

    def remove_reader(self, fd: int) -> None:
        self._set(fd, 0, None)

    def add_writer(self, fd: int, callback: Callable[[], None]) -> None:
        self._set(fd, 1, callback)

    def remove_writer(self, fd: int) -> None:
        self._set(fd, 1, None)

    def _set(self, fd: int, which: int, callback: Callable[[], None] | None) -> None:
        handlers = self._handlers.get(fd)
        if handlers is None:
            if callback is None:
                return
            handlers = self._handlers[fd] = [None, None]
            handlers[which] = callback
            self.selector.register(fd, self._mask(handlers), handlers)
            return
        handlers[which] = callback
        if handlers == [None, None]:
            del self._handlers[fd]
            self.selector.unregister(fd)
        else:
            self.selector.modify(fd, self._mask(handlers), handlers)

    @staticmethod
    def _mask(handlers: list) -> int:
        return ((selectors.EVENT_READ if handlers[0] else 0)
                | (selectors.EVENT_WRITE if handlers[1] else 0))

    # -- timers and children ------------------------------------------------------------

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(time.monotonic() + delay, callback)
        heapq.heappush(self._timers, (timer.when, next(self._order), timer))
        return timer

    def on_exit(self, pid: int, callback: Callable[[int], None]) -> None:
        """callback(wait status) once child `pid` has exited (and is reaped)."""
        kept = self._unclaimed.pop(pid, None)
        if kept is not None and time.monotonic() - kept[1] < UNCLAIMED_TTL:
            callback(kept[0])
        else:
            self._exits[pid] = callback

    def _on_wakeup(self) -> None:
        drain(self._wakeup_r)

    def reap(self) -> None:
        if os.getpid() != self._owner:  # a forked child (in_child) has children of its own
            for _ in exited_children():
                pass
            return
        for pid, status in exited_children():
            callback = self._exits.pop(pid, None)
            if callback is not None:
                callback(status)
                continue
            now = time.monotonic()
            self._unclaimed[pid] = (status, now)
            while self._unclaimed and (len(self._unclaimed) > UNCLAIMED_LIMIT or now - next(
                    iter(self._unclaimed.values()))[1] >= UNCLAIMED_TTL):
                del self._unclaimed[next(iter(self._unclaimed))]  # the oldest first

    # -- running ------------------------------------------------------------------------

    def run(self, until: Callable[[], bool]) -> None:
        while not until():
            timeout = None
            while self._timers and self._timers[0][2].callback is None:
                heapq.heappop(self._timers)
            if self._timers:
                timeout = max(0.0, self._timers[0][0] - time.monotonic())
            for key, events in self.selector.select(timeout):
                handlers = key.data  # a callback may change them: read them as late as can be
                if events & selectors.EVENT_READ and handlers[0] is not None:
                    handlers[0]()
                if events & selectors.EVENT_WRITE and handlers[1] is not None:
                    handlers[1]()
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                _, _, timer = heapq.heappop(self._timers)
                callback, timer.callback = timer.callback, None
                if callback is not None:
                    callback()
            self.reap()


def in_child(loop: Loop, work: Callable[[], dict], done: Callable[[dict], None]) -> None:
    """Run work() in a short-lived child; done(its JSON-able result) or done({"error": ...}).

    The monitor lives long. Creating a container runs much of the runtime, and every
    object that touches is copied out of the pages the monitor shares with its parent;
    done in a child that exits, those copies go away with it, and the monitor serves
    the other containers meanwhile. The container's processes still end up ours: we
    are their child subreaper."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                doc = {"ok": True, **work()}
            except BaseException as err:  # noqa: BLE001 - handed to the parent
                doc = {"ok": False, "error": str(err)}
            os.write(w, json.dumps(doc).encode())
        except BaseException:  # noqa: BLE001 - never unwind into the monitor's loop
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    os.set_blocking(r, False)
    chunks: list[bytes] = []
    loop.on_exit(pid, lambda _status: None)

    def readable() -> None:
        try:
            chunk = os.read(r, 65536)
        except BlockingIOError:
            return
        if chunk:
            chunks.append(chunk)
            return
        loop.remove_reader(r)
        os.close(r)
        try:
            result = json.loads(b"".join(chunks))
        except ValueError:
            result = {"ok": False, "error": "the runtime died"}
        done(result)

    loop.add_reader(r, readable)


class Monitor:
    """The monitor process's state: the daemon's socket and the processes it holds."""

    def __init__(self, sock: socket.socket):
        self.loop = Loop()
        self.sock = sock
        self.active = 0  # containers and execs being started or running
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._on_request)

    def serve(self) -> None:
        self.loop.run(lambda: self.sock is None and self.active == 0)

    def _on_request(self) -> None:
        assert self.sock is not None
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            # the daemon is gone: serve on until the last container has ended
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
            return
        msg = json.loads(data)
        req, params = msg.get("req"), msg.get("params") or {}
        starts = {"container": self._start_container, "exec": self._start_exec}
        start = starts.get(msg.get("op"))
        if start is None:
            self._reply(req, {"ok": False, "error": "unknown op"})
            return
        self.active += 1
        try:
            start(params, lambda doc: self._reply(req, doc))
        except Exception as err:  # noqa: BLE001 - reported to the daemon
            self.active -= 1
            self._reply(req, {"ok": False, "error": f"{type(err).__name__}: {err}"})

    def _reply(self, req, doc: dict) -> None:
        if self.sock is None:
            return  # the daemon died meanwhile: the next one adopts the container
        try:
            self.sock.send(json.dumps({"req": req, **doc}).encode())
        except OSError:
            pass

    def _ended(self) -> None:
        self.active -= 1

    # -- containers ---------------------------------------------------------------------

    def _start_container(self, params: dict, reply: Callable[[dict], None]) -> None:
        from kobako.engine.logs import LogConfig, open_writer
        from kobako.runtime.container import Runtime

        container_dir = params["container_dir"]
        cid = params["id"]
        runtime = Runtime(params["runtime_root"], reap_children=self.loop.reap)
        relay: Relay | None = None
        log = open_writer(params["log_path"],
                          LogConfig.from_host_config(params.get("log_config")),
                          on_error=lambda message: _report_log_error(container_dir, relay,
                                                                     message),
                          attrs=params.get("log_attrs"))
        try:
            relay = Relay(self.loop, params["socket"], log,
                          hold_output=params.get("hold_output", False),
                          stdin_once=params.get("stdin_once", False))
        except BaseException:
            log.close()
            raise
        tty = params.get("tty", False)
        child_fds, console, ours = stdio(tty, params.get("open_stdin", False))

        def create_and_start() -> dict:
            pid = runtime.create(cid, params["bundle"], stdio=child_fds, console=console).pid
            runtime.start(cid)  # its output waits in the pipes (or the pty) until we relay
            return {"pid": pid}

        def started(result: dict) -> None:
            if not result.get("ok"):
                close_stdio(child_fds, ours)
            else:
                try:
                    relay.connect(tty, child_fds, ours)
                except OSError as err:
                    result = {"ok": False, "error": f"cannot take the container's stdio: {err}"}
            if not result.get("ok"):
                try:
                    runtime.delete(cid, force=True)
                except Exception:  # noqa: BLE001 - nothing was created, or it is gone already
                    pass
                relay.close()
                log.close()
                self._ended()
                reply({"ok": False, "error": result.get("error", "the runtime failed")})
                return
            pid = result["pid"]
            started_at = now_rfc3339()
            _record(os.path.join(container_dir, MONITOR_FILE),
                    {"pid": pid, "monitor_pid": os.getpid(), "started_at": started_at})
            reply({"ok": True, "pid": pid, "started_at": started_at})
            self.loop.on_exit(pid, lambda status: relay.process_exited(
                lambda: self._container_ended(runtime, cid, params, relay, log, status)))

        try:
            in_child(self.loop, create_and_start, started)
        finally:
            if console is not None:
                console.close()  # the child's copy went to the runtime

    def _container_ended(self, runtime, cid: str, params: dict, relay: Relay, log,
                         status: int) -> None:
        exit_doc = {"exit_code": _exit_code(status), "finished_at": now_rfc3339(),
                    "oom_killed": _oom_killed(runtime, cid)}
        log.flush()
        log.close()
        exit_path = os.path.join(params["container_dir"], EXIT_FILE)
        _record(exit_path, exit_doc)
        try:
            runtime.delete(cid, force=True)
        except Exception as err:  # noqa: BLE001 - recorded; the daemon reports it
            exit_doc["cleanup_error"] = str(err)
            _record(exit_path, exit_doc)
        relay.finish(exit_doc)
        self._ended()

    # -- execs --------------------------------------------------------------------------

    def _start_exec(self, params: dict, reply: Callable[[dict], None]) -> None:
        """Spawns the process in the container right here (an exec's start latency counts,
        and spawning is short) and relays its IO."""
        from kobako.runtime.container import Runtime
        from kobako.runtime.exec import spawn_exec

        runtime = Runtime(params["runtime_root"], reap_children=self.loop.reap)
        relay = Relay(self.loop, params["socket"], None,
                      hold_output=params.get("hold_output", True), stdin_once=True)
        process = params["process"]
        tty = bool(process.get("terminal"))
        child_fds, console, ours = stdio(tty, params.get("open_stdin", False))
        try:
            state, status = runtime.status(params["id"])
            pid = spawn_exec(state, status, process, console=console, stdio=child_fds,
                             seccomp_cache=runtime.seccomp_cache)  # closes console
        except Exception as err:  # noqa: BLE001 - reported to the daemon
            close_stdio(child_fds, ours)
            relay.close()
            self._ended()
            reply({"ok": False, "error": str(err)})
            return
        relay.connect(tty, child_fds, ours)
        reply({"ok": True, "pid": pid})

        def exited(status: int) -> None:
            relay.process_exited(lambda: (relay.finish({"exit_code": _exit_code(status)}),
                                          self._ended()))

        self.loop.on_exit(pid, exited)


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def _oom_killed(runtime, cid: str) -> bool:
    try:
        from kobako.linux import cgroups

        state, _ = runtime.load(cid)
        if state.cgroup_paths:
            return cgroups.manager_for_paths(state.cgroup_paths).oom_kill_count() > 0
    except Exception:  # noqa: BLE001 - the OOM flag is best effort once the cgroup is gone
        pass
    return False


def _record(path: str, doc: dict) -> None:
    """Write monitor.json/exit.json; on a full disk go on without (the daemon gets the
    exit over the socket; only a daemon that is away at that moment misses it)."""
    from kobako.linux.files import write_atomic

    try:
        write_atomic(path, json.dumps(doc))
    except OSError:
        pass  # write_atomic left no temporary file behind


def _report_log_error(container_dir: str, relay: Relay | None, message: str) -> None:
    """Log write failures (disk full...): the container goes on; the daemon hears of
    them over its watch connection and logs them. They are also kept in a file, when
    the disk that is full is not that one."""
    if relay is not None:
        relay.report_log_error(message)
    try:
        with open(os.path.join(container_dir, LOG_ERROR_FILE), "a") as f:
            f.write(f"{now_rfc3339()} {message}\n")
    except OSError:
        pass  # the disk that is full may be this one; the daemon got the message


def serve(sock: socket.socket, log_path: str) -> None:
    """The monitor process's main: called in the forked child, never returns normally.
    It lets go of the daemon's terminal and log (it outlives the daemon): what would
    end it goes to its own log file, with a timestamp and the traceback."""
    from kobako.linux import syscalls as sc

    os.setsid()
    null = os.open("/dev/null", os.O_RDWR)
    try:
        log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError:
        log = os.dup(null)
    for fd, source in ((0, null), (1, null), (2, log)):
        os.dup2(source, fd)
    os.close(null)
    os.close(log)
    sc.real().prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    _set_name("kobako-monitor")
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_IGN)
    try:
        Monitor(sock).serve()
    except BaseException:
        import traceback

        os.write(2, f"{now_rfc3339()} kobako-monitor (pid {os.getpid()}) failed:\n"
                    f"{traceback.format_exc()}".encode())
        raise


def _set_name(name: str) -> None:
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(name[:15])
    except OSError:
        pass
