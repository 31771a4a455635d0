"""The monitor's event loop and per-process relay, with pipes standing in for a
container's stdio (no root needed): exits reaped in one place, output relayed to
attached clients and drained after the exit, a client that does not read never
stalls the monitor, and every connection is let go at the end."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from kobako.engine.monitor import Loop
from kobako.engine.relay import CONTROL, HEADER, STDERR, STDOUT, Relay, frame, stdio


@pytest.fixture
def loop():
    lp = Loop()
    yield lp
    lp.close()


def run_until(loop: Loop, condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        spin(loop, 0.01)


def test_exit_status_reaped_before_anyone_asked_is_kept(loop):
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    run_until(loop, lambda: pid in loop._unclaimed)  # reaped while nobody waited
    got = []
    loop.on_exit(pid, got.append)
    assert [os.waitstatus_to_exitcode(s) for s in got] == [7]


def test_an_old_unclaimed_status_is_not_given_to_a_new_process_of_that_pid(loop,
                                                                          monkeypatch):
    """An orphan's status nobody asked for must not end a later container whose init
    got the same pid (pid_max wraps)."""
    from kobako.engine import monitor

    pid = os.fork()
    if pid == 0:
        os._exit(7)
    run_until(loop, lambda: pid in loop._unclaimed)
    monkeypatch.setattr(monitor, "UNCLAIMED_TTL", 0.0)  # as if it were long ago
    got = []
    loop.on_exit(pid, got.append)
    assert got == [] and loop._exits[pid] == got.append  # waits for its own exit


def test_exit_callback_when_asked_first(loop):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.read(r, 1)
        os._exit(3)
    got = []
    loop.on_exit(pid, got.append)
    os.write(w, b"x")
    run_until(loop, lambda: got)
    assert os.waitstatus_to_exitcode(got[0]) == 3
    os.close(r)
    os.close(w)


def test_timers_run_in_order_and_cancelled_ones_do_not(loop):
    seen = []
    loop.call_later(0.02, lambda: seen.append("b"))
    loop.call_later(0.01, lambda: seen.append("a"))
    loop.call_later(0.015, lambda: seen.append("never")).cancel()
    run_until(loop, lambda: len(seen) == 2)
    assert seen == ["a", "b"]


def spin(loop: Loop, seconds: float) -> None:
    """Let the loop handle whatever comes for a while."""
    over = []
    loop.call_later(seconds, lambda: over.append(True))
    loop.run(lambda: over)


class FakeProcess:
    """A process's stdio as the relay sees it; we write its output ourselves."""

    def __init__(self, loop: Loop, path: str, **relay_options):
        child_fds, _, ours = stdio(False, True)
        self.stdin_r, self.out_w, self.err_w = (os.dup(fd) for fd in child_fds)
        self.relay = Relay(loop, path, **relay_options)
        self.relay.connect(False, child_fds, ours)  # closes child_fds, as a started process
        self.path = path

    def end_output(self) -> None:
        for fd in (self.stdin_r, self.out_w, self.err_w):
            os.close(fd)


def connect(path: str, header: dict) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.sendall(json.dumps(header).encode() + b"\n")
    sock.setblocking(False)
    return sock


def frames(sock: socket.socket, buffer: bytearray) -> list[tuple[int, bytes]]:
    try:
        while chunk := sock.recv(65536):
            buffer += chunk
    except BlockingIOError:
        pass
    out = []
    while len(buffer) >= HEADER.size:
        stream, size = HEADER.unpack_from(buffer)
        if len(buffer) < HEADER.size + size:
            break
        out.append((stream, bytes(buffer[HEADER.size:HEADER.size + size])))
        del buffer[:HEADER.size + size]
    return out


def test_output_reaches_attached_client_then_exit_notice(loop, tmp_path):
    proc = FakeProcess(loop, str(tmp_path / "p.sock"))
    client = connect(proc.path, {"op": "attach", "stdout": True, "stderr": True})
    received: list[tuple[int, bytes]] = []
    buffer = bytearray()
    run_until(loop, lambda: proc.relay.clients)
    os.write(proc.out_w, b"out\n")
    os.write(proc.err_w, b"err\n")
    run_until(loop, lambda: received.extend(frames(client, buffer)) or len(received) == 2)
    assert sorted(received) == [(STDOUT, b"out\n"), (STDERR, b"err\n")]

    os.write(proc.out_w, b"last words\n")  # still in the pipe when the process is gone
    done = []
    proc.relay.process_exited(lambda: done.append(True))
    run_until(loop, lambda: done)  # the pipes stay open (a grandchild?): quiet is enough
    proc.relay.finish({"exit_code": 0})
    run_until(loop, lambda: received.extend(frames(client, buffer)) or received[-1][0] == CONTROL)
    assert (STDOUT, b"last words\n") in received
    assert json.loads(received[-1][1]) == {"exit": {"exit_code": 0}}
    assert client.recv(1) == b""  # and the connection is closed
    assert not os.path.exists(proc.path)
    proc.end_output()


@pytest.mark.parametrize("stdin_once", [True, False])
def test_stdin_from_a_client_reaches_the_process(loop, tmp_path, stdin_once):
    """An empty frame ends the client's input: with StdinOnce that closes the process's
    stdin (after what came before), without it stdin stays open for the next client."""
    proc = FakeProcess(loop, str(tmp_path / "p.sock"), stdin_once=stdin_once)
    client = connect(proc.path, {"op": "attach", "stdin": True, "stdout": True})
    client.sendall(frame(0, b"typed\n") + frame(0, b""))
    got = bytearray()
    os.set_blocking(proc.stdin_r, False)
    closed = []

    def read_stdin() -> bool:
        try:
            chunk = os.read(proc.stdin_r, 100)
        except BlockingIOError:
            return bytes(got) == b"typed\n" and not stdin_once
        if not chunk:
            closed.append(True)
            return True  # EOF: stdin was closed
        got.extend(chunk)
        return False

    run_until(loop, read_stdin)
    spin(loop, 0.05)
    assert bytes(got) == b"typed\n" and bool(closed) == stdin_once
    assert (proc.relay.stdin_fd is None) == stdin_once
    proc.relay.close()
    proc.end_output()


def test_a_client_that_does_not_read_stalls_only_its_own_process(loop, tmp_path):
    slow_proc = FakeProcess(loop, str(tmp_path / "slow.sock"))
    other = FakeProcess(loop, str(tmp_path / "other.sock"))
    slow = connect(slow_proc.path, {"op": "attach", "stdout": True})
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader = connect(other.path, {"op": "attach", "stdout": True})
    run_until(loop, lambda: slow_proc.relay.clients and other.relay.clients)
    os.set_blocking(slow_proc.out_w, False)
    chunk = b"x" * 65536
    try:
        for _ in range(200):  # far more than the socket and the client buffer take
            os.write(slow_proc.out_w, chunk)
            spin(loop, 0.005)
    except BlockingIOError:
        pass  # the pipe is full: the relay stopped reading it
    assert slow_proc.relay.paused
    # the other process's output still flows
    os.write(other.out_w, b"hello\n")
    got: list[tuple[int, bytes]] = []
    buffer = bytearray()
    run_until(loop, lambda: got.extend(frames(reader, buffer)) or got)
    assert got == [(STDOUT, b"hello\n")]
    # once the slow client goes away, the slow process's output flows again
    slow.close()
    run_until(loop, lambda: not slow_proc.relay.paused)
    for proc in (slow_proc, other):
        proc.relay.close()
        proc.end_output()


def test_a_connection_that_never_sent_its_header_is_closed_at_the_end(loop, tmp_path):
    """A daemon's watch that connects just as the process ends must see EOF, not wait."""
    proc = FakeProcess(loop, str(tmp_path / "p.sock"))
    quiet = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    quiet.connect(proc.path)
    run_until(loop, lambda: proc.relay.connections)
    proc.relay.finish({"exit_code": 1})
    quiet.settimeout(2)
    assert quiet.recv(1) == b""
    proc.end_output()


def test_held_output_waits_for_the_announced_attach(loop, tmp_path):
    proc = FakeProcess(loop, str(tmp_path / "p.sock"), hold_output=True)
    os.write(proc.out_w, b"early\n")
    proc.end_output()
    done = []
    proc.relay.process_exited(lambda: done.append(True))
    run_until(loop, lambda: not proc.relay.outputs)
    assert not done  # the grace for the attach
    client = connect(proc.path, {"op": "attach", "stdout": True})
    run_until(loop, lambda: done)
    got: list[tuple[int, bytes]] = []
    buffer = bytearray()
    proc.relay.finish({"exit_code": 0})
    run_until(loop, lambda: got.extend(frames(client, buffer)) or (got and got[-1][0] == CONTROL))
    assert got[0] == (STDOUT, b"early\n")


def test_input_the_process_does_not_read_yet_never_blocks_the_monitor(loop, tmp_path):
    proc = FakeProcess(loop, str(tmp_path / "p.sock"), stdin_once=True)
    other = FakeProcess(loop, str(tmp_path / "other.sock"))
    writer = connect(proc.path, {"op": "attach", "stdin": True})
    reader = connect(other.path, {"op": "attach", "stdout": True})
    run_until(loop, lambda: proc.relay.clients and other.relay.clients)
    data = os.urandom(3 << 20)  # far more than the process's stdin pipe holds
    outgoing = bytearray(frame(0, data[:1 << 20]) + frame(0, data[1 << 20:2 << 20])
                         + frame(0, data[2 << 20:]) + frame(0, b""))

    def send_some() -> None:
        try:
            del outgoing[:writer.send(outgoing)]
        except BlockingIOError:
            pass

    for _ in range(50):
        send_some()
        spin(loop, 0.002)
    os.write(other.out_w, b"still served\n")  # meanwhile another process's output flows
    got: list[tuple[int, bytes]] = []
    buffer = bytearray()
    run_until(loop, lambda: got.extend(frames(reader, buffer)) or got)
    assert got == [(STDOUT, b"still served\n")]
    # the process reads its stdin at last: everything, in order, then EOF
    received = bytearray()
    os.set_blocking(proc.stdin_r, False)

    def read_stdin() -> bool:
        send_some()
        try:
            chunk = os.read(proc.stdin_r, 1 << 16)
        except BlockingIOError:
            return False
        received.extend(chunk)
        return not chunk

    run_until(loop, read_stdin, timeout=20)
    assert bytes(received) == data
    for p in (proc, other):
        p.relay.close()
        p.end_output()


def test_a_relay_that_lets_go_while_we_connect_is_monitor_gone(monkeypatch):
    """A process that exits at once: its relay finishes (and drops our connection) between
    our connect and our header. The daemon's watch must see MonitorGone (and then read
    exit.json), not die of a BrokenPipeError and leave the container "running"."""
    import asyncio

    from kobako.engine import monitor_link

    class Writer:
        closed = False

        def write(self, data):
            pass

        async def drain(self):
            raise BrokenPipeError(32, "Broken pipe")

        def close(self):
            self.closed = True

    writer = Writer()

    async def open_unix_connection(path):
        return object(), writer

    monkeypatch.setattr(asyncio, "open_unix_connection", open_unix_connection)
    with pytest.raises(monitor_link.MonitorGone):
        asyncio.run(monitor_link.connect("/nowhere.sock", {"op": "watch"}))
    assert writer.closed


def test_what_ends_the_monitor_goes_to_its_log(tmp_path):
    from kobako.engine import monitor

    log = tmp_path / "monitor.log"
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        try:
            ours.close()
            monitor.serve(theirs, str(log))
        finally:
            os._exit(3)
    theirs.close()
    ours.send(b"{not json")  # nothing the daemon sends, but it must not vanish unexplained
    _, status = os.waitpid(pid, 0)
    ours.close()
    assert os.waitstatus_to_exitcode(status) == 3
    text = log.read_text()
    assert f"kobako-monitor (pid {pid}) failed" in text and "JSONDecodeError" in text, text
