"""The IO relay of one process the monitor holds (a container's init or an exec).

It owns the process's end of the stdio (pipes, or a pty master), writes the output to
the log and to every attached client of the process's unix socket, and feeds stdin
from the clients. Everything runs on the monitor's event loop (monitor.Loop): one
process's relay never waits for another's.

Socket protocol: the client sends one JSON line, then frames flow as in Docker's
multiplexed streams: an 8-byte header [stream, 0, 0, 0, size (big-endian u32)]
and the payload. Streams: 0 stdin (client -> monitor; an empty frame closes the
process's stdin), 1 stdout, 2 stderr, 3 control (JSON: {"exit": {...}}).

    {"op": "attach", "stdin": bool, "stdout": bool, "stderr": bool}
    {"op": "watch"}                      only the exit notice
    {"op": "watch", "log_errors": true}  and {"log_error": message} when writing the log
                                         fails (the latest one again on connecting)
    {"op": "resize", "height": h, "width": w}
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Callable

STDIN, STDOUT, STDERR, CONTROL = 0, 1, 2, 3
HEADER = struct.Struct(">BxxxI")
HELD_OUTPUT_LIMIT = 4 << 20  # bytes of output kept for an attach that is on its way
CLIENT_BUFFER_LIMIT = 1 << 20  # bytes a client may be behind before the output waits
ATTACH_GRACE = 10.0  # seconds an announced attach may take to arrive
DRAIN_QUIET = 0.05  # after the exit: output stops counting once it was quiet this long


def frame(stream: int, data: bytes) -> bytes:
    return HEADER.pack(stream, len(data)) + data


def listen(path: str) -> socket.socket:
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
    sock.setblocking(False)
    return sock


def stdio(tty: bool, open_stdin: bool):
    """(fds for the process, console socket, our ends): pipes, or a console socketpair
    the runtime sends the pty master over."""
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


def close_stdio(child_fds, ours) -> None:
    """Close what stdio() made but the console (given away to the runtime): a start
    that failed."""
    if child_fds is None:
        ours.close()
        return
    for fd in (*child_fds, *ours):
        if fd is not None:
            os.close(fd)


class Client:
    """One connection to a process's socket. Sends never block the monitor: what the
    client has not taken yet waits in `pending`."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = b""
        self.header: dict | None = None
        self.wants = {STDOUT: False, STDERR: False}
        self.stdin = False
        self.pending = bytearray()

    def send(self, data: bytes) -> bool:
        """False: the connection is broken."""
        if not self.pending:
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                return False
            data = data[sent:]
        self.pending += data
        return True

    def flush(self) -> bool:
        try:
            sent = self.sock.send(self.pending)
        except BlockingIOError:
            return True
        except OSError:
            return False
        del self.pending[:sent]
        return True


class Relay:
    """One process's IO, from connect() to close()."""

    def __init__(self, loop, socket_path: str, log_writer=None, hold_output: bool = False,
                 stdin_once: bool = False):
        self.loop = loop
        self.socket_path = socket_path
        self.listener = listen(socket_path)
        self.log = log_writer
        self.connections: list[Client] = []  # all of them, also those yet to send a header
        self.clients: list[Client] = []  # those that sent it
        self.held: list[bytes] | None = [] if hold_output else None
        self.held_size = 0
        self.stdin_fd: int | None = None
        self.stdin_once = stdin_once
        self.stdin_pending = bytearray()  # input the process has not taken yet
        self.stdin_closing = False  # close its stdin once it has taken that
        self.stdin_paused = False  # clients' input not read while too much is pending
        self.master: int | None = None
        self.outputs: dict[int, int] = {}  # fd -> stream
        self.log_error: str | None = None  # the latest failure to write the log
        self.paused = False  # output not read while a client is too far behind
        self._after_exit: Callable[[], None] | None = None
        self._timer = None
        loop.add_reader(self.listener.fileno(), self._accept)

    def connect(self, tty: bool, child_fds, ours) -> None:
        """Take our ends of the process's stdio (see stdio()), once the process has its own."""
        from kobako.runtime.console import receive_master

        if tty:
            try:
                self.master = receive_master(ours)
            finally:
                ours.close()
            self._add_output(self.master, STDOUT)
            return
        for fd in child_fds:
            os.close(fd)
        self.stdin_fd, out_r, err_r = ours
        if self.stdin_fd is not None:
            os.set_blocking(self.stdin_fd, False)
        self._add_output(out_r, STDOUT)
        self._add_output(err_r, STDERR)

    def _add_output(self, fd: int, stream: int) -> None:
        os.set_blocking(fd, False)
        self.outputs[fd] = stream
        if not self.paused:
            self.loop.add_reader(fd, self._output_reader(fd))

    def _output_reader(self, fd: int) -> Callable[[], None]:
        return lambda: self._read_output(fd)

    # -- after the process's exit -------------------------------------------------------

    def process_exited(self, then: Callable[[], None]) -> None:
        """The process is gone: relay what is still in the pipes (until they close or are
        quiet for DRAIN_QUIET), give an announced attach its grace to collect the held
        output, then call `then`."""
        self._after_exit = then
        self._drained_or_quiet()

    def _drained_or_quiet(self) -> None:
        self._cancel_timer()
        if self.paused:
            return  # quiet because we do not read: _throttle comes back here
        if self.outputs:
            self._timer = self.loop.call_later(DRAIN_QUIET, self._stop_draining)
        elif self.held is not None:
            self._timer = self.loop.call_later(ATTACH_GRACE, self._done)
        else:
            self._done()

    def _stop_draining(self) -> None:
        self._timer = None
        for fd in list(self.outputs):
            self._close_output(fd)
        self._drained_or_quiet()

    def _done(self) -> None:
        self._cancel_timer()
        then, self._after_exit = self._after_exit, None
        if then is not None:
            then()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def finish(self, exit_doc: dict) -> None:
        """Tell every client how the process ended and let go of everything."""
        self.broadcast(CONTROL, json.dumps({"exit": exit_doc}).encode())
        self.close()

    def close(self) -> None:
        """Let go of everything; a client still taking its output keeps its connection
        until it has it (or is gone)."""
        self._cancel_timer()
        self._after_exit = None
        for client in list(self.connections):
            if client.pending:
                self.clients.remove(client)
                self.loop.remove_reader(client.sock.fileno())
            else:
                self._drop(client)
        for fd in list(self.outputs):
            self._close_output(fd)
        for fd in (self.stdin_fd, self.master):
            if fd is not None:
                self.loop.remove_writer(fd)
                os.close(fd)
        self.stdin_fd = self.master = None
        if self.listener is not None:
            self.loop.remove_reader(self.listener.fileno())
            self.listener.close()
            self.listener = None
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass

    # -- output -------------------------------------------------------------------------

    def _read_output(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # EIO: the pty's last holder closed it
        if not data:
            self._close_output(fd)
        else:
            stream = self.outputs[fd]
            if self.log is not None:
                self.log.write("stderr" if stream == STDERR else "stdout", data)
            self.broadcast(stream, data)
        if self._after_exit is not None:
            self._drained_or_quiet()

    def _close_output(self, fd: int) -> None:
        if not self.paused:
            self.loop.remove_reader(fd)
        del self.outputs[fd]
        if fd != self.master:
            os.close(fd)

    def broadcast(self, stream: int, data: bytes) -> None:
        if self.held is not None and stream != CONTROL:
            if self.held_size < HELD_OUTPUT_LIMIT:
                self.held.append(frame(stream, data))
                self.held_size += len(data)
        packet = frame(stream, data)
        for client in list(self.clients):
            if stream == CONTROL or client.wants.get(stream):
                self._send(client, packet)

    def _send(self, client: Client, packet: bytes) -> None:
        if not client.send(packet):
            self._drop(client)
        elif client.pending:
            self.loop.add_writer(client.sock.fileno(), lambda: self._flush(client))
            self._throttle()

    def _flush(self, client: Client) -> None:
        if not client.flush():
            self._drop(client)
            return
        if not client.pending:
            self.loop.remove_writer(client.sock.fileno())
            if client not in self.clients:  # finished: it only had to take the rest
                self._drop(client)
        self._throttle()

    def _throttle(self) -> None:
        """A client that does not keep up stops the relay of this process's output (the
        process then blocks on its full pipe, as under Docker), never the monitor's."""
        slow = any(len(c.pending) > CLIENT_BUFFER_LIMIT for c in self.clients)
        if slow == self.paused:
            return
        self.paused = slow
        for fd in self.outputs:
            if slow:
                self.loop.remove_reader(fd)
            else:
                self.loop.add_reader(fd, self._output_reader(fd))
        if not slow and self._after_exit is not None:
            self._drained_or_quiet()

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
        self._send(client, frame(CONTROL, json.dumps({"log_error": self.log_error}).encode()))

    # -- clients ------------------------------------------------------------------------

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (OSError, AttributeError):
            return
        sock.setblocking(False)  # accepted sockets are blocking whatever the listener is
        client = Client(sock)
        self.connections.append(client)
        self.loop.add_reader(sock.fileno(), self._client_reader(client))

    def _client_reader(self, client: Client) -> Callable[[], None]:
        return lambda: self._read_client(client)

    def _read_client(self, client: Client) -> None:
        try:
            data = client.sock.recv(65536)
        except BlockingIOError:
            return
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
        self.clients.append(client)
        if op == "attach":
            client.wants = {STDOUT: bool(header.get("stdout")), STDERR: bool(header.get("stderr"))}
            client.stdin = bool(header.get("stdin"))
            if self.held is not None:
                held, self.held = self.held, None
                for packet in held:
                    if client.wants.get(packet[0]):
                        self._send(client, packet)
                if self._after_exit is not None and not self.outputs:
                    self._done()  # the grace was for this attach
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
                self._stdin_ended()

    def _stdin_target(self) -> int | None:
        return self.master if self.master is not None else self.stdin_fd

    def write_stdin(self, data: bytes) -> None:
        if self._stdin_target() is not None:
            self.stdin_pending += data
            self._flush_stdin()

    def _flush_stdin(self) -> None:
        """Write what the process takes now; the rest when it takes more. Clients that
        send too far ahead wait (as a blocked write would make them), not the monitor."""
        fd = self._stdin_target()
        while fd is not None and self.stdin_pending:
            try:
                del self.stdin_pending[:os.write(fd, self.stdin_pending)]
            except BlockingIOError:
                break
            except OSError:
                self.stdin_pending.clear()  # the process closed its stdin: Docker drops it too
        if fd is None:
            return
        if self.stdin_pending:
            self.loop.add_writer(fd, self._flush_stdin)
        else:
            self.loop.remove_writer(fd)
            if self.stdin_closing:
                self._close_stdin_pipe()
        paused = len(self.stdin_pending) > CLIENT_BUFFER_LIMIT
        if paused != self.stdin_paused:
            self.stdin_paused = paused
            for client in self.clients:
                if client.stdin and paused:
                    self.loop.remove_reader(client.sock.fileno())
                elif client.stdin:
                    self.loop.add_reader(client.sock.fileno(), self._client_reader(client))

    def _stdin_ended(self) -> None:
        """A client's input ended (it half-closed or left). As dockerd's StdinOnce, that
        closes the process's stdin once it has taken what came before; never a
        terminal's: a detached shell lives on."""
        if not self.stdin_once or self.master is not None:
            return
        if self.stdin_pending:
            self.stdin_closing = True
        elif self.stdin_fd is not None:
            self._close_stdin_pipe()

    def _close_stdin_pipe(self) -> None:
        assert self.stdin_fd is not None
        self.loop.remove_writer(self.stdin_fd)
        os.close(self.stdin_fd)
        self.stdin_fd = None
        self.stdin_closing = False

    def _drop(self, client: Client) -> None:
        self.loop.remove_reader(client.sock.fileno())
        self.loop.remove_writer(client.sock.fileno())
        if client in self.connections:
            self.connections.remove(client)
        if client in self.clients:
            self.clients.remove(client)
            if client.stdin:
                self._stdin_ended()
            self._throttle()
        client.sock.close()
