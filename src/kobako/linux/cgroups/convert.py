"""Conversions between OCI resource values and cgroup file values, as runc does them."""

from __future__ import annotations

from .errors import CgroupError


def shares_to_weight(shares: int) -> int:
    """cpu.shares (2..262144) -> cpu.weight (1..10000), runc's linear mapping."""
    if shares == 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_weight_to_io_weight(weight: int) -> int:
    """blkio.weight (10..1000) -> io.weight (1..10000), runc's linear mapping."""
    if weight == 0:
        return 0
    return 1 + (weight - 10) * 9999 // 990


def swap_to_v2(swap: int | None, memory: int | None) -> int | None:
    """OCI memory.swap (memory+swap, as v1) -> memory.swap.max (swap alone); None = don't write.

    -1 means unlimited. A limit of -1 with swap unset means "both unlimited", as runc.
    """
    memory = memory or 0
    swap = swap or 0
    if memory == -1 and swap == 0:
        return -1
    if swap in (-1, 0):
        return swap if swap == -1 else None
    if memory in (0, -1):
        raise CgroupError("unable to set swap limit without memory limit")
    if memory < 0:
        raise CgroupError(f"invalid memory value: {memory}")
    if swap < memory:
        raise CgroupError(
            f"memory+swap limit ({swap}) should be >= memory limit ({memory})"
        )
    return swap - memory


def limit_text(value: int) -> str:
    """A v2 limit: -1 (or any negative) is "max"."""
    return "max" if value < 0 else str(value)


def pids_limit_text(limit: int) -> str:
    """pids.limit: 0 or -1 mean unlimited (runc keeps 0 as unlimited for old clients)."""
    return "max" if limit <= 0 else str(limit)


def device_number(value: int | None) -> str:
    return "*" if value is None or value < 0 else str(value)


def device_rule(rule: dict) -> tuple[bool, str] | None:
    """An OCI linux.resources.devices entry -> (allow, "type major:minor access").

    None for a fifo ("p"): the device cgroup never checks fifos. "u" (unbuffered
    char device in linux.devices) is a char device.
    """
    dev_type = rule.get("type") or "a"
    if dev_type == "p":
        return None
    if dev_type == "u":
        dev_type = "c"
    if dev_type not in ("a", "b", "c"):
        raise CgroupError(f"invalid device rule type {dev_type!r} in {rule}")
    access = rule.get("access") or "rwm"
    if not access or set(access) - set("rwm"):
        raise CgroupError(f"invalid device rule access {access!r} in {rule}")
    major, minor = device_number(rule.get("major")), device_number(rule.get("minor"))
    return bool(rule.get("allow", False)), f"{dev_type} {major}:{minor} {access}"


def hugepage_size_name(size: str) -> str:
    """Normalise a page size ("2MB", "2M", "2048kB", "1GB") to cgroupfs's "2MB" / "1GB"."""
    text = size.strip().upper().removesuffix("B")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    try:
        value = int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
    except (ValueError, IndexError):
        raise CgroupError(f"invalid hugepage size {size!r}") from None
    for suffix, unit in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if value >= unit and value % unit == 0:
            return f"{value // unit}{suffix}"
    return f"{value}B"


def throttle_entries(block_io: dict) -> list[tuple[str, str, int, int, int]]:
    """(oci field, io.max key, major, minor, rate) for every throttle entry present."""
    fields = (
        ("throttleReadBpsDevice", "rbps"),
        ("throttleWriteBpsDevice", "wbps"),
        ("throttleReadIOPSDevice", "riops"),
        ("throttleWriteIOPSDevice", "wiops"),
    )
    entries = []
    for oci_field, key in fields:
        for entry in block_io.get(oci_field) or []:
            entries.append((oci_field, key, int(entry["major"]), int(entry["minor"]),
                            int(entry["rate"])))
    return entries
