"""RFC 3339 timestamps with nanoseconds, as Docker and runc write them."""

from __future__ import annotations

import time


def now_rfc3339(ts: float | None = None) -> str:
    """`ts` (default: now) as 2024-01-31T12:34:56.123456789Z."""
    ts = time.time() if ts is None else ts
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e9):09d}Z"
