"""Staying in the foreground with a container process: `run` and `exec` without --detach.

The runtime is made a child subreaper before it forks, so the container process
(a grandchild) is reparented to it and can be waited for. Signals sent to the
runtime are forwarded to the process; with a terminal and no --console-socket,
the runtime relays between its own stdio and the pty master, as runc does.
"""

from __future__ import annotations

import os
import select
import signal
import socket

from kobako.linux import syscalls as sc

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGWINCH)


def become_subreaper() -> None:
    sc.real().prctl(sc.PR_SET_CHILD_SUBREAPER, 1)


def console_pair() -> tuple[socket.socket, socket.socket]:
    """(ours, theirs): theirs is handed to the init in place of a --console-socket."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def wait_for(pid: int, master: int | None = None) -> int:
    """Wait for pid (a child of ours by now), forwarding signals; its exit code."""
    def forward(signum, _frame):
        if signum == signal.SIGWINCH and master is not None:
            _copy_window_size(master)
            return
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for signum in FORWARDED:
        signal.signal(signum, forward)
    if master is not None:
        _copy_window_size(master)
        _relay(master, pid)
    while True:
        try:
            reaped, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        except InterruptedError:
            continue
        if reaped == pid:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else (
                128 + os.WTERMSIG(status)
            )


def _copy_window_size(master: int) -> None:
    import fcntl
    import termios

    if os.isatty(0):
        size = fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(master, termios.TIOCSWINSZ, size)


def _relay(master: int, pid: int) -> None:
    """Copy stdin -> master and master -> stdout until the process exits."""
    import termios
    import tty

    saved = None
    if os.isatty(0):
        saved = termios.tcgetattr(0)
        tty.setraw(0)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        pidfd = None
    inputs = [master, 0] + ([pidfd] if pidfd is not None else [])
    try:
        while True:
            try:
                ready, _, _ = select.select(inputs, [], [])
            except InterruptedError:
                continue
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    break
                os.write(1, data)
            if 0 in ready:
                data = os.read(0, 65536)
                if data:
                    os.write(master, data)
                else:
                    inputs.remove(0)
            if pidfd is not None and pidfd in ready:
                _drain(master)
                break
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        if pidfd is not None:
            os.close(pidfd)


def _drain(master: int) -> None:
    os.set_blocking(master, False)
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            return
        if not data:
            return
        os.write(1, data)
