"""Client side of attach / exec streams: raw terminal, stdin pump, demultiplexing."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

from kobako.client.api import Hijacked


@contextmanager
def raw_terminal(enabled: bool) -> Any:
    """Put the local terminal in raw mode for a tty session; restore it afterwards."""
    if not enabled or not sys.stdin.isatty():
        yield
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def terminal_size() -> tuple[int, int] | None:
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        return None
    return size.lines, size.columns


@contextmanager
def resize_on_winch(resize: Callable[[int, int], None] | None) -> Any:
    if resize is None or not sys.stdout.isatty():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        size = terminal_size()
        if size:
            try:
                resize(*size)
            except Exception as exc:  # a failed resize must not end the session
                print(f"resize failed: {exc}", file=sys.stderr)

    old = signal.signal(signal.SIGWINCH, handler)
    try:
        handler(signal.SIGWINCH, None)
        yield
    finally:
        signal.signal(signal.SIGWINCH, old)


def _stdin_pump(hj: Hijacked) -> None:
    fd = sys.stdin.fileno()
    try:
        while True:
            data = os.read(fd, 65536)
            if not data:
                break
            hj.sendall(data)
    except OSError:
        return  # the connection closed under us: the output side reports the end
    hj.close_write()


def stream(hj: Hijacked, *, stdin: bool, tty: bool,
           resize: Callable[[int, int], None] | None = None) -> None:
    """Run the session until the daemon closes the connection."""
    if stdin:
        threading.Thread(target=_stdin_pump, args=(hj,), daemon=True).start()
    out, errout = sys.stdout.buffer, sys.stderr.buffer
    with raw_terminal(tty and stdin), resize_on_winch(resize if tty else None):
        try:
            for stream_id, data in hj.iter_frames():
                target = errout if stream_id == 2 else out
                target.write(data)
                target.flush()
        except (ConnectionResetError, OSError):
            pass  # the daemon ended the stream
        finally:
            hj.close()
