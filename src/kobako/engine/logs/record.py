"""One json-file log record, byte for byte as Docker writes and reads it.

Docker (moby `daemon/logger/jsonfilelog/jsonlog/jsonlogbytes.go`) writes each record as
``{"log":"<line>\\n","stream":"stdout","attrs":{...},"time":"<RFC3339Nano>"}`` plus a
newline, with its own string encoder: `<`, `>`, `&` become ``\\u003c`` etc., control bytes
``\\u00XX`` (except ``\\n`` and ``\\r``), U+2028/U+2029 are escaped, and every byte that is
not valid UTF-8 becomes the six characters ``\\ufffd`` (one per byte). Other UTF-8 is
written raw. Time is Go's RFC3339Nano in UTC: nanoseconds with trailing zeros trimmed.
"""

from __future__ import annotations

import calendar
import json
import re
import time
from dataclasses import dataclass

NS = 1_000_000_000

# Characters Docker's encoder escapes. Lone surrogates \udc80-\udcff are how
# `surrogateescape` decoding marks the bytes that were not valid UTF-8.
_ESCAPE_RE = re.compile("[\x00-\x1f\"\\\\<>&\u2028\u2029\udc80-\udcff]")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r",
            "\u2028": "\\u2028", "\u2029": "\\u2029"}
for _c in "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f" \
          "\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f<>&":
    _ESCAPES.setdefault(_c, f"\\u{ord(_c):04x}")
for _b in range(0x80, 0x100):
    _ESCAPES[chr(0xDC00 + _b)] = "\\ufffd"


def _escape_char(m: re.Match[str]) -> str:
    return _ESCAPES[m.group()]


def json_string(data: bytes) -> bytes:
    """`data` as a quoted JSON string, escaped exactly as Docker's json-file encoder does."""
    text = data.decode("utf-8", "surrogateescape")
    return b'"' + _ESCAPE_RE.sub(_escape_char, text).encode("utf-8") + b'"'


_second_cache: tuple[int, str] = (-1, "")


def format_time(ns: int) -> str:
    """Go's RFC3339Nano in UTC: `2024-05-01T10:00:00.1234Z` (fraction trimmed, or absent)."""
    global _second_cache
    sec, frac = divmod(ns, NS)
    cached_sec, prefix = _second_cache
    if cached_sec != sec:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _second_cache = (sec, prefix)
    if frac == 0:
        return prefix + "Z"
    return prefix + "." + f"{frac:09d}".rstrip("0") + "Z"


def format_time_fixed(ns: int) -> str:
    """Docker's RFC3339NanoFixed (always nine digits), used by `logs --timestamps`."""
    sec, frac = divmod(ns, NS)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:09d}Z"


_TIME_RE = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(?:[Zz]|([+-])(\d\d):(\d\d))$"
)


def parse_time(text: str) -> int:
    """An RFC3339 / RFC3339Nano timestamp as integer nanoseconds since the epoch."""
    m = _TIME_RE.match(text)
    if m is None:
        raise ValueError(f"invalid log timestamp {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    secs = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    if m.group(8):
        offset = int(m.group(9)) * 3600 + int(m.group(10)) * 60
        secs -= offset if m.group(8) == "+" else -offset
    frac = m.group(7) or ""
    return secs * NS + (int(frac.ljust(9, "0")) if frac else 0)


def attrs_json(attrs: dict[str, str]) -> bytes:
    """Go's json.Marshal of a map[string]string: keys sorted, HTML characters escaped."""
    parts = [json_string(k.encode()) + b":" + json_string(v.encode())
             for k, v in sorted(attrs.items())]
    return b"{" + b",".join(parts) + b"}"


def encode_record(log: bytes, stream: str, ns: int, attrs: bytes = b"") -> bytes:
    """One record line (with its trailing newline). `attrs` is pre-encoded `attrs_json`."""
    out = [b"{"]
    if log:
        out += [b'"log":', json_string(log), b","]
    if stream:
        out += [b'"stream":', json_string(stream.encode()), b","]
    if attrs:
        out += [b'"attrs":', attrs, b","]
    out += [b'"time":"', format_time(ns).encode(), b'"}\n']
    return b"".join(out)


@dataclass(frozen=True, slots=True)
class Record:
    """A decoded record: the line bytes (with its newline unless partial)."""

    log: bytes
    stream: str
    ns: int
    attrs: dict[str, str] | None = None


class CorruptRecord(ValueError):
    """A line of the log file that is not a json-file record (torn write, garbage)."""


def decode_record(line: bytes) -> Record:
    """Parse one line of a json-file log (without or with its trailing newline)."""
    try:
        obj = json.loads(line)
        log = obj.get("log", "")
        stream = obj.get("stream", "")
        ns = parse_time(obj["time"])
        attrs = obj.get("attrs")
        if not isinstance(log, str) or not isinstance(stream, str):
            raise TypeError("log and stream must be strings")
        if attrs is not None and not isinstance(attrs, dict):
            raise TypeError("attrs must be an object")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CorruptRecord(f"corrupt log record: {e}") from e
    # Docker's encoder never writes lone surrogates; `surrogatepass` keeps a hand-made
    # "\ud800" from crashing the reader.
    return Record(log.encode("utf-8", "surrogatepass"), stream, ns, attrs)
