"""Terminals: the pty made inside the container and its master sent over --console-socket.

As runc does, the init opens /dev/ptmx in the container's own devpts, sends the
master to the console socket with SCM_RIGHTS, and makes the slave its
controlling terminal and stdio.
"""

from __future__ import annotations

import array
import fcntl
import os
import socket
import termios

from .errors import RuntimeFailure

_TIOCSPTLCK = 0x40045431
_TIOCGPTN = 0x80045430


def connect_console_socket(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as err:
        sock.close()
        raise RuntimeFailure(f"cannot connect to console socket {path}: {err.strerror}") from err
    return sock


def open_pty() -> tuple[int, str]:
    """A new pty from the current /dev/ptmx: (master fd, slave path)."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, _TIOCSPTLCK, array.array("i", [0]))  # unlockpt
    number = array.array("I", [0])
    fcntl.ioctl(master, _TIOCGPTN, number)  # ptsname
    return master, f"/dev/pts/{number[0]}"


def send_master(sock: socket.socket, master: int, name: str) -> None:
    fds = array.array("i", [master])
    sock.sendmsg([name.encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())])


def receive_master(sock: socket.socket) -> int:
    """The counterpart of send_master, for callers that own a console socket."""
    _, ancdata, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(4))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            return array.array("i", data[:4])[0]
    raise RuntimeFailure("console socket: no file descriptor received")


def make_controlling_terminal(slave_path: str) -> None:
    """Make the slave our controlling terminal and stdio (the caller has called setsid)."""
    slave = os.open(slave_path, os.O_RDWR)
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def become_terminal_of(console_sock: socket.socket, process: dict, before_handover=None) -> None:
    """Make a new pty this process's terminal and send its master over console_sock.

    before_handover(slave_path) runs once the pty exists (the init binds it on
    /dev/console there)."""
    master, slave = open_pty()
    if before_handover is not None:
        before_handover(slave)
    size = process.get("consoleSize")
    if size:
        set_size(master, size.get("height", 24), size.get("width", 80))
    send_master(console_sock, master, slave)
    os.close(master)
    console_sock.close()
    make_controlling_terminal(slave)


def set_size(fd: int, rows: int, cols: int) -> None:
    import struct

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
