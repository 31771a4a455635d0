"""Exit a short-lived command without the interpreter's teardown.

At exit Python frees every module and object one by one (~5-8 ms for our commands)
for a process that is about to end anyway. The console scripts run main(), flush
the standard streams and leave with os._exit. Only for code that keeps nothing
buffered elsewhere: files are closed by their `with` blocks, logs written unbuffered.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


def run(main: Callable[[], int | None]) -> None:
    code = main() or 0
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 120  # what Python itself exits with when the flush fails
    os._exit(code)
