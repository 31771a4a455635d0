"""Signals by number or name ("9", "KILL", "SIGKILL", "sigterm", "RTMIN+3"), as runc and
Docker take them."""

from __future__ import annotations

import re
import signal

_REALTIME = re.compile(r"(RTMIN)\+(\d+)|(RTMAX)-(\d+)")


def signal_number(value: str | int) -> int:
    """The signal's number; ValueError for a name no signal has."""
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    name = str(value).upper().removeprefix("SIG")
    realtime = _REALTIME.fullmatch(name)
    if realtime:
        low, up, high, down = realtime.groups()
        number = signal.SIGRTMIN + int(up) if low else signal.SIGRTMAX - int(down)
        if signal.SIGRTMIN <= number <= signal.SIGRTMAX:
            return int(number)
        raise ValueError(f"unknown signal {value!r}")
    try:
        return int(signal.Signals["SIG" + name])
    except KeyError:
        raise ValueError(f"unknown signal {value!r}") from None


def docker_signal(value: str | int) -> int:
    """dockerd's rule for kill and StopSignal: a signal this kernel has, by name or number
    (not 0); ValueError with dockerd's message otherwise."""
    try:
        number = signal_number(value)
    except ValueError:
        raise ValueError(f"Invalid signal: {value}") from None
    if number == 0:
        raise ValueError(f"Invalid signal: {value}")
    if number > signal.SIGRTMAX:
        raise ValueError(f"the linux daemon does not support signal {number}")
    return number
