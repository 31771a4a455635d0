"""Reading a container's json-file log for `GET /containers/{id}/logs` (and `logs -f`).

The writer lives in another process (the container's monitor) and rotates files under
the reader. The reader holds each file open by fd, so a rename never changes what it
reads; when following, it notices that the file it reads is no longer at `path`
(a rotation), finishes that file, then finds it again among the rotated files by
(dev, inode) and continues with the files that came after it. Nothing is lost (unless
rotation deleted a file before the reader got to it) and nothing is read twice.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import quote_plus

from kobako.engine.logs.files import OpenLogFile, is_at, open_chain
from kobako.engine.logs.record import (
    NS,
    CorruptRecord,
    Record,
    decode_record,
    format_time_fixed,
)

STDOUT = 1
STDERR = 2
_CHUNK = 256 * 1024
_YIELD_EVERY = 512  # records between explicit yields to the event loop


class _Stop(Exception):
    """A record past `until`: the read ends there, as Docker's does."""


class _Output:
    """Filters and formats records the way Docker's logs endpoint does."""

    def __init__(self, *, since: float | None, until: float | None, timestamps: bool,
                 details: bool, stdout: bool, stderr: bool):
        self.since_ns = round(since * NS) if since is not None else None
        self.until_ns = round(until * NS) if until is not None else None
        self.timestamps = timestamps
        self.details = details
        self.streams = {"stdout": STDOUT if stdout else 0, "stderr": STDERR if stderr else 0}

    def convert(self, line: bytes) -> tuple[int, bytes] | None:
        """One file line to (stream, payload); None to skip it; _Stop to end the read."""
        try:
            rec = decode_record(line)
        except CorruptRecord:
            return None  # a torn or garbage line (e.g. the monitor died mid-write)
        if self.until_ns is not None and rec.ns > self.until_ns:
            raise _Stop
        if self.since_ns is not None and rec.ns < self.since_ns:
            return None
        number = self.streams.get(rec.stream, 0)
        if not number:
            return None
        return number, self.format(rec)

    def format(self, rec: Record) -> bytes:
        payload = rec.log
        if self.details:
            payload = _details(rec.attrs) + b" " + payload
        if self.timestamps:
            payload = format_time_fixed(rec.ns).encode() + b" " + payload
        return payload


def _details(attrs: dict[str, str] | None) -> bytes:
    # Docker's attrsByteSlice: sorted key=value pairs, query-escaped, comma-separated.
    items = sorted((attrs or {}).items())
    return ",".join(f"{quote_plus(str(k), safe='')}={quote_plus(str(v), safe='')}"
                    for k, v in items).encode()


# -- whole files ------------------------------------------------------------------------

def _plain_lines(f: OpenLogFile, offset: int) -> Iterator[bytes]:
    """Complete lines of a file from `offset` to its end (a trailing fragment is dropped)."""
    rest = b""
    while True:
        chunk = os.pread(f.fd, _CHUNK, offset)
        if not chunk:
            return
        offset += len(chunk)
        data = rest + chunk
        lines = data.split(b"\n")
        rest = lines.pop()
        yield from lines


def _gzip_lines(f: OpenLogFile, skip: int) -> Iterator[bytes]:
    """Complete lines of a compressed rotated file, after skipping `skip` of them."""
    with os.fdopen(os.dup(f.fd), "rb") as raw, gzip.GzipFile(fileobj=raw) as gz:
        raw.seek(0)
        for line in gz:
            if not line.endswith(b"\n"):
                return
            if skip > 0:
                skip -= 1
                continue
            yield line[:-1]


def _count_gzip_lines(f: OpenLogFile) -> int:
    with os.fdopen(os.dup(f.fd), "rb") as raw, gzip.GzipFile(fileobj=raw) as gz:
        raw.seek(0)
        count = 0
        while chunk := gz.read(_CHUNK):
            count += chunk.count(b"\n")
        return count


def _tail_start(f: OpenLogFile, n: int) -> tuple[int, int]:
    """(offset where the last `n` complete lines start, how many lines that is).

    Reads backwards from the end, so a tail of a big file costs only what it returns.
    Fewer than `n` lines: offset 0 and the number there is.
    """
    size = os.fstat(f.fd).st_size
    pos = size
    seen = 0  # newlines seen so far, from the end
    while pos > 0:
        start = max(0, pos - _CHUNK)
        block = os.pread(f.fd, pos - start, start)
        end = len(block)
        while True:
            nl = block.rfind(b"\n", 0, end)
            if nl < 0:
                break
            seen += 1
            # the (n+1)-th newline from the end precedes the first of the last n lines
            if seen == n + 1:
                return start + nl + 1, n
            end = nl
        pos = start
    return 0, seen


def _plan_tail(files: list[OpenLogFile], tail: int) -> list[tuple[OpenLogFile, int]]:
    """Where to start in each file for the last `tail` lines: (file, offset or skip)."""
    plan: list[tuple[OpenLogFile, int]] = []
    need = tail
    for f in reversed(files):
        if f.compressed:
            total = _count_gzip_lines(f)
            take = min(total, need)
            plan.append((f, total - take))
        else:
            offset, take = _tail_start(f, need)
            plan.append((f, offset))
        need -= take
        if need <= 0:
            break
    plan.reverse()
    return plan


# -- the reader -------------------------------------------------------------------------

async def read_logs(path: str, *, follow: bool, since: float | None = None,
                    until: float | None = None, tail: int | None = None,
                    timestamps: bool = False, details: bool = False,
                    stdout: bool = True, stderr: bool = True,
                    running: Callable[[], bool] = lambda: False,
                    poll_interval: float = 0.1) -> AsyncIterator[tuple[int, bytes]]:
    """Yield (1 for stdout / 2 for stderr, bytes) for each record, oldest first.

    `tail` None or negative is everything, else the last `tail` records across the
    rotated files (counted before the since/until/stream filters, as Docker does).
    `since`/`until` are unix times: records before `since` are skipped, the first
    record after `until` ends the read. With `follow`, new records are yielded as
    they are written until `running()` is False and everything has been read; so
    `running()` must turn False only once the writer has flushed (the monitor is done).
    """
    out = _Output(since=since, until=until, timestamps=timestamps, details=details,
                  stdout=stdout, stderr=stderr)
    reader = _Reader(path, out, follow=follow, running=running, poll_interval=poll_interval)
    try:
        async for item in reader.run(tail):
            yield item
    except _Stop:
        return
    finally:
        reader.close()


class _Reader:
    def __init__(self, path: str, out: _Output, *, follow: bool,
                 running: Callable[[], bool], poll_interval: float):
        self.path = path
        self.out = out
        self.follow = follow
        self.running = running
        self.poll_interval = poll_interval
        self.files: list[OpenLogFile] = []
        self.current: OpenLogFile | None = None
        self.offset = 0
        self.rest = b""
        self.count = 0

    def close(self) -> None:
        for f in self.files:
            f.close()
        self.files = []
        if self.current is not None:
            self.current.close()
            self.current = None

    async def _emit(self, lines: Iterator[bytes]) -> AsyncIterator[tuple[int, bytes]]:
        for line in lines:
            item = self.out.convert(line)
            if item is not None:
                yield item
            self.count += 1
            if self.count % _YIELD_EVERY == 0:
                await asyncio.sleep(0)

    async def _read_whole(self, f: OpenLogFile, start: int) -> AsyncIterator[tuple[int, bytes]]:
        lines = _gzip_lines(f, start) if f.compressed else _plain_lines(f, start)
        async for item in self._emit(lines):
            yield item

    async def run(self, tail: int | None) -> AsyncIterator[tuple[int, bytes]]:
        self.files = open_chain(self.path)
        if not self.files:
            if not self.follow:
                return
            self.files = await self._wait_for_chain()  # nothing to tail: read it all
            tail = None
            if not self.files:
                return
        if tail is not None and tail >= 0:
            plan = _plan_tail(self.files, tail)
        else:
            plan = [(f, 0) for f in self.files]
        starts = {id(f): start for f, start in plan}
        last = self.files[-1]
        for f in self.files[:-1]:
            if id(f) in starts:
                async for item in self._read_whole(f, starts[id(f)]):
                    yield item
            f.close()
        self.files = []
        if last.name != self.path:
            # Only rotated files (the writer is between rename and create): read the
            # newest, then carry on from it as from a file that was just rotated away.
            if id(last) in starts:
                async for item in self._read_whole(last, starts[id(last)]):
                    yield item
            if not self.follow:
                last.close()
                return
            self.current, self.offset = last, os.fstat(last.fd).st_size
        else:
            self.current = last
            self.offset = starts.get(id(last), os.fstat(last.fd).st_size)
        if not self.follow:
            while lines := self._read_available():
                async for item in self._emit(iter(lines)):
                    yield item
            return
        async for item in self._follow():
            yield item

    async def _wait_for_chain(self) -> list[OpenLogFile]:
        """Follow a log that does not exist yet: wait for its files, or for the exit."""
        while True:
            alive = self.running()
            files = open_chain(self.path)
            if files or not alive:
                return files
            await asyncio.sleep(self.poll_interval)

    def _read_available(self) -> list[bytes]:
        """Complete lines newly written to the current file; keeps a fragment for later."""
        assert self.current is not None
        lines: list[bytes] = []
        while True:
            chunk = os.pread(self.current.fd, _CHUNK, self.offset)
            if not chunk:
                return lines
            self.offset += len(chunk)
            parts = (self.rest + chunk).split(b"\n")
            self.rest = parts.pop()
            lines.extend(parts)
            if len(lines) >= _YIELD_EVERY:
                return lines

    async def _follow(self) -> AsyncIterator[tuple[int, bytes]]:
        while True:
            alive = self.running()  # before draining: what is written by now gets read
            progressed = False
            while lines := self._read_available():
                progressed = True
                async for item in self._emit(iter(lines)):
                    yield item
            before = self.current
            assert before is not None
            if not is_at(self.path, before):
                async for item in self._after_rotation():
                    yield item
                progressed = progressed or self.current is not before
            if self.current is None:
                return
            if progressed:
                continue
            if not alive:
                return
            if self.out.until_ns is not None and time.time_ns() > self.out.until_ns:
                return
            await asyncio.sleep(self.poll_interval)

    async def _after_rotation(self) -> AsyncIterator[tuple[int, bytes]]:
        """The current file was rotated away: move on to the files written after it.

        Yields the records of the complete files in between. Leaves `self.current` on the
        new current file, unchanged when `path` does not exist yet (the writer is between
        its rename and its create), or None when the log is gone for good.
        """
        old = self.current
        assert old is not None
        # The writer closed `old` before renaming it: whatever is in it is final.
        while lines := self._read_available():
            async for item in self._emit(iter(lines)):
                yield item
        chain = self._chain_with_current()
        if chain is None:
            if self.running():
                return  # between the writer's rename and create: look again later
            # The writer is gone; it may have created `path` just before it went.
            chain = self._chain_with_current()
            if chain is None:
                old.close()
                self.current = None
                return
        newer = _files_after(old, chain)
        for f in chain:
            if f not in newer:
                f.close()
        old.close()
        self.rest = b""  # a fragment left in a rotated-away file is a torn record
        self.files = newer[:-1]
        self.current, self.offset = newer[-1], 0
        while self.files:
            f = self.files[0]
            async for item in self._read_whole(f, 0):
                yield item
            f.close()
            self.files.pop(0)

    def _chain_with_current(self) -> list[OpenLogFile] | None:
        chain = open_chain(self.path)
        if chain and chain[-1].name == self.path:
            return chain
        for f in chain:
            f.close()
        return None


def _files_after(old: OpenLogFile, chain: list[OpenLogFile]) -> list[OpenLogFile]:
    """The files of `chain` written after `old` (all of them if `old` was deleted)."""
    for i, f in enumerate(chain):
        if f.key == old.key or (f.compressed and _same_content(old, f)):
            return chain[i + 1:]
    return chain


def _same_content(plain: OpenLogFile, compressed: OpenLogFile) -> bool:
    """Whether `compressed` is the gzip of `plain` (a rotated file compressed meanwhile)."""
    size = os.fstat(plain.fd).st_size
    gz_size = os.fstat(compressed.fd).st_size
    if gz_size < 18:
        return False
    trailer = os.pread(compressed.fd, 4, gz_size - 4)  # ISIZE: length mod 2**32
    if int.from_bytes(trailer, "little") != size % 2**32:
        return False
    head = os.pread(plain.fd, 4096, 0)
    try:
        with os.fdopen(os.dup(compressed.fd), "rb") as raw, gzip.GzipFile(fileobj=raw) as gz:
            raw.seek(0)
            return gz.read(len(head)) == head
    except (OSError, EOFError):
        return False
