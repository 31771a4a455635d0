"""The monitor: one small process per running container (and per running exec).

It is forked from the zygote (already imported, so no interpreter start-up) and it
outlives the daemon: it holds the container's stdio, writes its json-file log,
waits for its exit and records the exit status. The daemon talks to it over a
unix socket, so a restarted daemon can find it again (live restore).

    monitor ── Runtime.create/start (in-process) ──► container init (reparented to
    the monitor, which is a child subreaper, so it can wait for it)

Socket protocol: the client sends one JSON line, then frames flow as in Docker's
multiplexed streams: an 8-byte header [stream, 0, 0, 0, size (big-endian u32)]
and the payload. Streams: 0 stdin (client -> monitor; an empty frame closes the
container's stdin), 1 stdout, 2 stderr, 3 control (JSON: {"exit": {...}}).

    {"op": "attach", "stdin": bool, "stdout": bool, "stderr": bool}
    {"op": "watch"}                      only the exit notice
    {"op": "watch", "log_errors": true}  and {"log_error": message} when writing the log
                                         fails (the latest one again on connecting)
    {"op": "resize", "height": h, "width": w}
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import struct
import time

from kobako.timestamps import now_rfc3339

STDIN, STDOUT, STDERR, CONTROL = 0, 1, 2, 3
HEADER = struct.Struct(">BxxxI")
HELD_OUTPUT_LIMIT = 4 << 20  # bytes of output kept for an attach that is on its way
ATTACH_GRACE = 10.0  # seconds an announced attach may take to arrive
EXIT_FILE = "exit.json"
MONITOR_FILE = "monitor.json"
LOG_ERROR_FILE = "log-errors"


def frame(stream: int, data: bytes) -> bytes:
    return HEADER.pack(stream, len(data)) + data


class Client:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = b""
        self.header: dict | None = None
        self.wants = {STDOUT: False, STDERR: False}
        self.stdin = False

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False


class Relay:
    """The IO loop shared by container and exec monitors."""

    def __init__(self, listener: socket.socket, log_writer=None, hold_output: bool = False,
                 stdin_once: bool = False):
        self.selector = selectors.DefaultSelector()
        self.listener = listener
        self.log = log_writer
        self.clients: list[Client] = []
        self.held: list[bytes] | None = [] if hold_output else None
        self.held_size = 0
        self.stdin_fd: int | None = None
        self.stdin_once = stdin_once
        self.master: int | None = None
        self.outputs: dict[int, int] = {}  # fd -> stream
        self.log_error: str | None = None  # the latest failure to write the log
        self.selector.register(listener, selectors.EVENT_READ, "accept")

    def connect(self, tty: bool, child_fds, ours) -> None:
        """Take our ends of the process's stdio (see _stdio), once the process has its own."""
        from kobako.runtime.console import receive_master

        if tty:
            self.master = receive_master(ours)
            ours.close()
            self.add_output(self.master, STDOUT)
            return
        for fd in child_fds:
            os.close(fd)
        self.stdin_fd, out_r, err_r = ours
        self.add_output(out_r, STDOUT)
        self.add_output(err_r, STDERR)

    def add_output(self, fd: int, stream: int) -> None:
        os.set_blocking(fd, False)
        self.outputs[fd] = stream
        self.selector.register(fd, selectors.EVENT_READ, "output")

    def run_until(self, pidfd: int) -> None:
        """Relay until the process behind pidfd has exited and its output is drained."""
        self.selector.register(pidfd, selectors.EVENT_READ, "exit")
        exited = False
        while not exited or self.outputs:
            timeout = 0.05 if exited else None
            events = self.selector.select(timeout)
            if exited and not events:
                break  # the process is gone and nothing more came out
            for key, _ in events:
                kind = key.data
                if kind == "accept":
                    self._accept()
                elif kind == "output":
                    self._read_output(key.fd)
                elif kind == "exit":
                    exited = True
                    self.selector.unregister(pidfd)
                elif isinstance(kind, Client):
                    self._read_client(kind)

    def await_attach(self, timeout: float) -> None:
        """Output is held for an attach that was announced but has not connected yet (the
        process may end first): give it a moment to come and collect what was held."""
        deadline = time.monotonic() + timeout
        while self.held is not None and time.monotonic() < deadline:
            for key, _ in self.selector.select(max(0.0, deadline - time.monotonic())):
                if key.data == "accept":
                    self._accept()
                elif isinstance(key.data, Client):
                    self._read_client(key.data)

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        client = Client(sock)
        self.selector.register(sock, selectors.EVENT_READ, client)

    def _read_output(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # EIO: the pty's last holder closed it
        stream = self.outputs[fd]
        if not data:
            self.selector.unregister(fd)
            del self.outputs[fd]
            return
        if self.log is not None:
            self.log.write("stderr" if stream == STDERR else "stdout", data)
        self.broadcast(stream, data)

    def broadcast(self, stream: int, data: bytes) -> None:
        if self.held is not None and stream != CONTROL:
            if self.held_size < HELD_OUTPUT_LIMIT:
                self.held.append(frame(stream, data))
                self.held_size += len(data)
        packet = frame(stream, data)
        for client in list(self.clients):
            if stream == CONTROL or client.wants.get(stream):
                if not client.send(packet):
                    self._drop(client)

    def report_log_error(self, message: str) -> None:
        """Tell the daemon (its watch connection) that writing the log failed."""
        self.log_error = message
        for client in list(self.clients):
            if self._wants_log_errors(client):
                self._send_log_error(client)

    @staticmethod
    def _wants_log_errors(client: Client) -> bool:
        header = client.header or {}
        return header.get("op") == "watch" and bool(header.get("log_errors"))

    def _send_log_error(self, client: Client) -> None:
        packet = frame(CONTROL, json.dumps({"log_error": self.log_error}).encode())
        if not client.send(packet):
            self._drop(client)

    def _read_client(self, client: Client) -> None:
        try:
            data = client.sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        client.buffer += data
        if client.header is None:
            line, sep, rest = client.buffer.partition(b"\n")
            if not sep:
                return
            client.buffer = rest
            try:
                client.header = json.loads(line)
            except ValueError:
                self._drop(client)
                return
            self._start_client(client)
        self._consume_stdin(client)

    def _start_client(self, client: Client) -> None:
        header = client.header or {}
        op = header.get("op")
        if op == "resize":
            if self.master is not None:
                from kobako.runtime.console import set_size

                set_size(self.master, int(header.get("height", 24)), int(header.get("width", 80)))
            self._drop(client)
            return
        if op == "attach":
            client.wants = {STDOUT: bool(header.get("stdout")), STDERR: bool(header.get("stderr"))}
            client.stdin = bool(header.get("stdin"))
            if self.held is not None:
                for packet in self.held:
                    stream = packet[0]
                    if client.wants.get(stream):
                        client.send(packet)
                self.held = None
        self.clients.append(client)
        if self.log_error is not None and self._wants_log_errors(client):
            self._send_log_error(client)  # a daemon that was away hears of it too

    def _consume_stdin(self, client: Client) -> None:
        while len(client.buffer) >= HEADER.size:
            stream, size = HEADER.unpack_from(client.buffer)
            if len(client.buffer) < HEADER.size + size:
                return
            payload = client.buffer[HEADER.size:HEADER.size + size]
            client.buffer = client.buffer[HEADER.size + size:]
            if stream != STDIN or not client.stdin:
                continue
            if payload:
                self.write_stdin(payload)
            else:
                self.close_stdin()

    def write_stdin(self, data: bytes) -> None:
        fd = self.master if self.master is not None else self.stdin_fd
        if fd is None:
            return
        try:
            os.write(fd, data)
        except OSError:
            pass  # the process closed its stdin; Docker drops the input too

    def close_stdin(self) -> None:
        if self.master is not None:
            self.write_stdin(b"\x04")  # EOF for a terminal in canonical mode
        elif self.stdin_fd is not None:
            os.close(self.stdin_fd)
            self.stdin_fd = None

    def _drop(self, client: Client) -> None:
        try:
            self.selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        if client in self.clients:
            self.clients.remove(client)
            if client.stdin and self.stdin_once:
                self.close_stdin()
        client.sock.close()

    def finish(self, exit_doc: dict) -> None:
        self.broadcast(CONTROL, json.dumps({"exit": exit_doc}).encode())
        for client in list(self.clients):
            client.sock.close()
        self.clients.clear()


def _listen(path: str) -> socket.socket:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(16)
    return sock


def _become_monitor(name: str) -> None:
    from kobako.linux import syscalls as sc

    os.setsid()
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)  # let go of the daemon's log and terminal
    os.close(null)
    sys = sc.real()
    sys.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    _set_name(name)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_IGN)


def _set_name(name: str) -> None:
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(name[:15])
    except OSError:
        pass


def _stdio(tty: bool, open_stdin: bool):
    """(fds for the process, our ends): pipes, or a console socketpair for a pty."""
    if tty:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        return None, theirs, ours
    devnull = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    if open_stdin:
        stdin_r, stdin_w = os.pipe()
        os.close(devnull)
    else:
        stdin_r, stdin_w = devnull, None
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    return (stdin_r, out_w, err_w), None, (stdin_w, out_r, err_r)


def run_container_monitor(params: dict, reply) -> None:
    """The body of a container's monitor. `reply(doc)` answers the daemon's request once."""
    from kobako.engine.logs import LogConfig, open_writer
    from kobako.runtime.container import Runtime

    container_dir = params["container_dir"]
    _become_monitor("kobako-monitor")
    runtime = Runtime(params["runtime_root"])
    cid = params["id"]
    listener = _listen(params["socket"])
    relays: list[Relay] = []
    log = open_writer(params["log_path"], LogConfig.from_host_config(params.get("log_config")),
                      on_error=_log_error_reporter(container_dir, relays),
                      attrs=params.get("log_attrs"))
    relay = Relay(listener, log, hold_output=params.get("hold_output", False),
                  stdin_once=params.get("stdin_once", False))
    relays.append(relay)
    tty = params.get("tty", False)
    child_fds, console, ours = _stdio(tty, params.get("open_stdin", False))
    def create_and_start() -> dict:
        pid = runtime.create(cid, params["bundle"], stdio=child_fds, console=console).pid
        runtime.start(cid)  # its output waits in the pipes (or the pty) until we relay
        return {"pid": pid}

    try:
        init_pid = _in_child(create_and_start)["pid"]
        relay.connect(tty, child_fds, ours)
    except Exception as err:  # noqa: BLE001 - reported to the daemon, which shows it to the user
        try:
            runtime.delete(cid, force=True)
        except Exception:  # noqa: BLE001 - nothing was created, or it is gone already
            pass
        listener.close()
        os.unlink(params["socket"])
        reply({"ok": False, "error": str(err)})
        return
    started = now_rfc3339()
    _record(os.path.join(container_dir, MONITOR_FILE),
            {"pid": init_pid, "monitor_pid": os.getpid(), "started_at": started})
    reply({"ok": True, "pid": init_pid, "started_at": started})
    pidfd = os.pidfd_open(init_pid)
    relay.run_until(pidfd)
    relay.await_attach(ATTACH_GRACE)
    exit_doc = _reap(init_pid, runtime, cid, params)
    log.flush()
    log.close()
    _record(os.path.join(container_dir, EXIT_FILE), exit_doc)
    try:
        runtime.delete(cid, force=True)
    except Exception as err:  # noqa: BLE001 - recorded; the daemon reports it
        exit_doc["cleanup_error"] = str(err)
        _record(os.path.join(container_dir, EXIT_FILE), exit_doc)
    relay.finish(exit_doc)
    listener.close()
    try:
        os.unlink(params["socket"])
    except FileNotFoundError:
        pass


def _record(path: str, doc: dict) -> None:
    """Write monitor.json/exit.json; on a full disk go on without (the daemon gets the
    exit over the socket; only a daemon that is away at that moment misses it)."""
    from kobako.linux.files import write_atomic

    try:
        write_atomic(path, json.dumps(doc))
    except OSError:
        pass  # write_atomic left no temporary file behind


def _in_child(work) -> dict:
    """Run work() in a short-lived child; its JSON-able result, or its error raised here.

    The monitor lives as long as its container. Creating the container runs much of the
    runtime, and every object that touches is copied out of the pages shared with the
    zygote; done in a child that exits, those copies go away with it. The container's
    processes still end up ours: we are their child subreaper."""
    from kobako.runtime.errors import RuntimeFailure

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            doc = {"ok": True, **work()}
        except BaseException as err:  # noqa: BLE001 - handed to the parent, raised there
            doc = {"ok": False, "error": str(err)}
        os.write(w, json.dumps(doc).encode())
        os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    result = json.loads(b"".join(chunks) or b'{"ok": false, "error": "the runtime died"}')
    if not result.pop("ok"):
        raise RuntimeFailure(result["error"])
    return result


def _log_error_reporter(container_dir: str, relays: list[Relay]):
    """Log write failures (disk full...): the container goes on; the daemon hears of
    them over its watch connection and logs them. They are also kept in a file, when
    the disk that is full is not that one."""
    def report(message: str) -> None:
        for relay in relays:
            relay.report_log_error(message)
        try:
            with open(os.path.join(container_dir, LOG_ERROR_FILE), "a") as f:
                f.write(f"{now_rfc3339()} {message}\n")
        except OSError:
            pass  # the disk that is full may be this one; the daemon got the message
    return report


def _reap(pid: int, runtime, cid: str, params: dict) -> dict:
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    exit_code = code if code >= 0 else 128 - code
    oom_killed = False
    try:
        from kobako.linux import cgroups

        state, _ = runtime.load(cid)
        if state.cgroup_paths:
            oom_killed = cgroups.manager_for_paths(state.cgroup_paths).oom_kill_count() > 0
    except Exception:  # noqa: BLE001 - the OOM flag is best effort once the cgroup is gone
        oom_killed = False
    return {"exit_code": exit_code, "finished_at": now_rfc3339(), "oom_killed": oom_killed}


def run_exec_monitor(params: dict, reply) -> None:
    """The body of an exec's monitor: spawns the process in the container and relays its IO."""
    from kobako.runtime.container import Runtime
    from kobako.runtime.exec import spawn_exec

    _become_monitor("kobako-exec")
    runtime = Runtime(params["runtime_root"])
    listener = _listen(params["socket"])
    relay = Relay(listener, None, hold_output=params.get("hold_output", True))
    process = params["process"]
    tty = bool(process.get("terminal"))
    child_fds, console, ours = _stdio(tty, params.get("open_stdin", False))
    try:
        # in this process, not _in_child: an exec is mostly short-lived, and its start
        # latency counts more than the pages the runtime code copies here
        state, status = runtime.status(params["id"])
        pid = spawn_exec(state, status, process, console=console, stdio=child_fds,
                         seccomp_cache=runtime.seccomp_cache)
    except Exception as err:  # noqa: BLE001 - reported to the daemon
        listener.close()
        os.unlink(params["socket"])
        reply({"ok": False, "error": str(err)})
        return
    relay.connect(tty, child_fds, ours)
    reply({"ok": True, "pid": pid})
    pidfd = os.pidfd_open(pid)
    relay.run_until(pidfd)
    relay.await_attach(ATTACH_GRACE)
    _, status_code = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status_code)
    relay.finish({"exit_code": code if code >= 0 else 128 - code})
    listener.close()
    try:
        os.unlink(params["socket"])
    except FileNotFoundError:
        pass
