"""Error and debug logging as runc does it: to stderr, and to --log as text or JSON lines.

containerd reads the last `{"level":"error","msg":...}` line of the --log file and
shows it as "OCI runtime create failed: <msg>".
"""

from __future__ import annotations

import json
import os
import sys

from kobako.timestamps import now_rfc3339


class RuntimeLog:
    def __init__(self, path: str | None = None, fmt: str = "text", debug: bool = False):
        self.path = path
        self.fmt = fmt
        self.debug_enabled = debug

    def _write(self, level: str, msg: str) -> None:
        if not self.path:
            return
        stamp = now_rfc3339()
        if self.fmt == "json":
            line = json.dumps({"level": level, "msg": msg, "time": stamp})
        else:
            line = f'time="{stamp}" level={level} msg="{msg}"'
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
        except OSError as err:
            sys.stderr.write(f"kobako-runtime: cannot write log {self.path}: {err}\n")

    def error(self, msg: str) -> None:
        self._write("error", msg)
        sys.stderr.write(msg + "\n")

    def warning(self, msg: str) -> None:
        self._write("warning", msg)
        if not self.path:
            sys.stderr.write(f"warning: {msg}\n")

    def debug(self, msg: str) -> None:
        if self.debug_enabled:
            self._write("debug", msg)
            if not self.path:
                sys.stderr.write(f"debug: {msg}\n")
