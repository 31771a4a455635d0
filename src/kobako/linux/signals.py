"""Signals by number or name ("9", "KILL", "SIGKILL", "sigterm"), as runc and Docker take them."""

from __future__ import annotations

import signal


def signal_number(value: str | int) -> int:
    """The signal's number; ValueError for a name no signal has."""
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    name = str(value).upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise ValueError(f"unknown signal {value!r}") from None
