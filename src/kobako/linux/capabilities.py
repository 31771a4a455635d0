"""Linux capabilities: names, the bounding set, and the process's cap sets.

The runtime sets capabilities in two steps, as runc does:

1. `apply_bounding(names)` while still root with CAP_SETPCAP, before the user
   switch: every capability not named is dropped from the bounding set.
2. `apply(caps)` after setresuid (with PR_SET_KEEPCAPS): capset() installs the
   effective/permitted/inheritable sets, then the ambient set is cleared and
   each ambient cap raised.

Names the kernel does not know (e.g. CAP_BPF on an old kernel) are skipped at
apply time, like runc; names nobody knows are an error (`cap_number`).
"""

from __future__ import annotations

import errno

from kobako.linux import syscalls as _syscalls

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


# Every capability name the kernel has defined so far, by number (linux/capability.h).
KNOWN_CAPS: dict[str, int] = {
    name: number
    for number, name in enumerate(
        [
            "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
            "CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
            "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
            "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
            "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
            "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
            "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
            "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
            "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
            "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
            "CAP_CHECKPOINT_RESTORE",
        ]
    )
}
_NAMES_BY_NUMBER = {number: name for name, number in KNOWN_CAPS.items()}

# The five sets of OCI process.capabilities, and their /proc/<pid>/status fields.
SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
_STATUS_FIELDS = {
    "CapInh": "inheritable", "CapPrm": "permitted", "CapEff": "effective",
    "CapBnd": "bounding", "CapAmb": "ambient",
}


class CapabilityError(ValueError):
    """An unknown capability name or a malformed capabilities object."""


def last_cap() -> int:
    """The highest capability number the running kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        # Without /proc (unusual), assume the kernel knows what we know.
        return max(KNOWN_CAPS.values())


# The capabilities of this host: known names up to the kernel's last cap.
ALL_CAPS: dict[str, int] = {
    name: number for name, number in KNOWN_CAPS.items() if number <= last_cap()
}


def cap_number(name: str) -> int:
    """The number of capability `name` ("CAP_CHOWN" -> 0); CapabilityError if unknown."""
    try:
        return KNOWN_CAPS[name]
    except (KeyError, TypeError):
        raise CapabilityError(f"unknown capability {_quote(name)}") from None


def _quote(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def to_mask(names: list[str]) -> int:
    """The bitmask of `names`, leaving out caps this kernel does not have."""
    mask = 0
    top = last_cap()
    for name in names:
        number = cap_number(name)
        if number <= top:
            mask |= 1 << number
    return mask


def from_mask(mask: int) -> list[str]:
    """The names of the capabilities set in `mask`, lowest number first."""
    return [name for number, name in sorted(_NAMES_BY_NUMBER.items()) if mask & (1 << number)]


def _sys(sys: Any) -> Any:
    return _syscalls.real() if sys is None else sys


def apply_bounding(names: list[str], sys: Any = None) -> None:
    """Drop every capability not in `names` from the bounding set.

    Needs CAP_SETPCAP in the effective set, so call it before the user switch.
    """
    sys = _sys(sys)
    keep = to_mask(names)
    for number in range(last_cap() + 1):
        if keep & (1 << number):
            continue
        try:
            sys.prctl(_syscalls.PR_CAPBSET_DROP, number)
        except _syscalls.SyscallError as e:
            # EINVAL: the kernel does not know this cap number; nothing to drop.
            if e.errno != errno.EINVAL:
                raise


def apply(caps: dict[str, list[str]] | None, sys: Any = None) -> list[str]:
    """Install OCI process.capabilities (minus bounding) into this process.

    capset() sets effective/permitted/inheritable; then the ambient set is
    cleared and each ambient cap raised. A missing key means an empty set. The
    kernel only lets a cap into the ambient set if it is both permitted and
    inheritable; like runc, such a cap is skipped: the skipped names are returned.
    """
    skipped_ambient: list[str] = []
    sys = _sys(sys)
    caps = caps or {}
    for key in caps:
        if key not in SETS:
            raise CapabilityError(f"unknown capability set {_quote(key)}")
    sys.capset(
        to_mask(caps.get("effective") or []),
        to_mask(caps.get("permitted") or []),
        to_mask(caps.get("inheritable") or []),
    )
    sys.prctl(_syscalls.PR_CAP_AMBIENT, _syscalls.PR_CAP_AMBIENT_CLEAR_ALL)
    top = last_cap()
    for name in caps.get("ambient") or []:
        number = cap_number(name)
        if number > top:
            continue
        try:
            sys.prctl(_syscalls.PR_CAP_AMBIENT, _syscalls.PR_CAP_AMBIENT_RAISE, number)
        except _syscalls.SyscallError as e:
            if e.errno not in (errno.EINVAL, errno.EPERM):
                raise
            skipped_ambient.append(name)
    return skipped_ambient


def parse_status(text: str) -> dict[str, list[str]]:
    """The cap sets from the text of /proc/<pid>/status, as name lists."""
    result: dict[str, list[str]] = {}
    for line in text.splitlines():
        field, _, value = line.partition(":")
        if field in _STATUS_FIELDS:
            result[_STATUS_FIELDS[field]] = from_mask(int(value.strip(), 16))
    return result


def current(pid: int | str = "self") -> dict[str, list[str]]:
    """The capability sets of process `pid` (default: this one), as name lists."""
    with open(f"/proc/{pid}/status") as f:
        return parse_status(f.read())
