"""The interactive paths through a real pty (the kobako CLI's, and the docker CLI's
`run -it` detach): run -it, exec -it, detach keys."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from daemon_fixture import DOCKER, KOBAKO


@contextmanager
def _spawn(kobakod, *args: str, client: str = KOBAKO) -> Iterator[tuple[subprocess.Popen, int]]:
    """`kobako *args` (or another client's) on a new pty: the process and the pty's
    master end, both ended and closed at the end of the block."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([client, *args], stdin=slave, stdout=slave, stderr=slave,
                            env=kobakod.env(), start_new_session=True)
    os.close(slave)
    try:
        yield proc, master
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def _read_until(master: int, needle: bytes, timeout: float = 20) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while needle not in buf and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


@pytest.fixture
def image(kobakod):
    kobakod.import_busybox("kbk-e2e-tty:1")
    return "kbk-e2e-tty:1"


def test_run_it_through_a_pty(kobakod, image):
    with _spawn(kobakod, "run", "-it", "--rm", image, "sh") as (proc, master):
        assert b"#" in _read_until(master, b"#")  # the shell's prompt
        os.write(master, b"echo $((6*7)); tty\r")
        out = _read_until(master, b"/dev/pts/")
        assert b"42" in out and b"/dev/pts/" in out
        os.write(master, b"exit 5\r")
        assert proc.wait(20) == 5


def test_exec_it_and_detach_keys(kobakod, image):
    cid = kobakod.kobako("run", "-dit", "--name", "kbk-e2e-tty-c", image, "sh").stdout
    cid = cid.decode().strip()
    try:
        with _spawn(kobakod, "exec", "-it", "kbk-e2e-tty-c", "sh") as (proc, master):
            assert b"#" in _read_until(master, b"#")
            os.write(master, b"echo exec-$((1+1))\r")
            assert b"exec-2" in _read_until(master, b"exec-2")
            os.write(master, b"exit 0\r")
            assert proc.wait(20) == 0
        with _spawn(kobakod, "attach", "--detach-keys", "ctrl-x",
                    "kbk-e2e-tty-c") as (proc, master):
            # attach replays nothing: typing before it is connected would be lost, so
            # poke the shell until a prompt comes back through the attachment
            deadline = time.monotonic() + 20
            while b"#" not in _read_until(master, b"#", timeout=0.5):
                assert time.monotonic() < deadline, "attach never connected"
                os.write(master, b"\r")
            os.write(master, b"echo attached-$((2+2))\r")
            assert b"attached-4" in _read_until(master, b"attached-4")
            os.write(master, b"\x18")  # ctrl-x: detach, the container keeps running
            assert proc.wait(20) == 0
        state = kobakod.kobako("inspect", "-f", "{{.State.Running}}", cid).stdout
        assert state == b"true\n"
    finally:
        kobakod.kobako("rm", "-f", "kbk-e2e-tty-c", check=False)


def test_docker_run_it_detaches_and_the_shell_lives_on(kobakod, image):
    """`docker run -it` sets StdinOnce: dockerd closes stdin when that client leaves,
    but never a terminal's, so ctrl-p ctrl-q leaves the shell running."""
    name = "kbk-e2e-tty-d"
    try:
        with _spawn(kobakod, "run", "-it", "--name", name, image, "sh",
                    client=DOCKER) as (proc, master):
            assert b"#" in _read_until(master, b"#")
            os.write(master, b"\x10\x11")  # ctrl-p ctrl-q
            assert proc.wait(20) == 0
        time.sleep(0.5)  # a closed stdin would end the shell about now
        state = kobakod.kobako("inspect", "-f", "{{.State.Running}}", name).stdout
        assert state == b"true\n"
        with _spawn(kobakod, "attach", name, client=DOCKER) as (proc, master):
            deadline = time.monotonic() + 20
            while b"#" not in _read_until(master, b"#", timeout=0.5):
                assert time.monotonic() < deadline, "attach never connected"
                os.write(master, b"\r")
            os.write(master, b"exit 3\r")
            assert proc.wait(20) == 3
    finally:
        kobakod.kobako("rm", "-f", name, check=False)
