"""Run a function in a forked child (to change caps, seccomp, namespaces of a process
the test run does not need afterwards) and bring back its JSON-able result."""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Callable
from typing import Any


def run_child(fn: Callable[[], Any]) -> tuple[int, Any]:
    """Run fn() in a forked child. Returns (wait status, fn's JSON result or None when the
    child died before reporting); a Python error in the child is raised here."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1  # also when the result cannot be sent
        try:
            os.close(r)
            try:
                out = {"ok": fn()}
            except BaseException:
                out = {"error": traceback.format_exc()}
            os.write(w, json.dumps(out).encode())
            code = 0 if "ok" in out else 1
        finally:
            os._exit(code)  # never back into pytest in the child
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        return status, None
    out = json.loads(b"".join(chunks))
    if "error" in out:
        raise AssertionError("child failed:\n" + out["error"])
    return status, out["ok"]


def in_child(fn: Callable[[], Any]) -> Any:
    """fn()'s result from a forked child that must exit normally."""
    status, result = run_child(fn)
    assert os.waitstatus_to_exitcode(status) == 0, f"child ended with status {status}"
    return result
