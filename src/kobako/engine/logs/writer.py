"""The json-file writer a container's monitor feeds with the container's output.

Lines are cut as Docker's copier does (moby `daemon/logger/copier.go`): one record per
line with its "\\n"; a line that reaches 16 KiB without a newline goes out in 16 KiB
pieces without "\\n" (all pieces of one line share the first piece's time); what is left
at exit goes out without "\\n". Rotation follows `loggerutils.LogFile`: before a write,
if the file has reached max-size, path.N-1 ... path.1 shift up, path becomes path.1
(or is unlinked when max-file is 1) and a new path is started.

A full or failing disk must not stop the container: a failed write is dropped, the
file is cut back to its last whole record, `on_error` hears about it once per burst of
failures, and writing resumes when the disk does.
"""

from __future__ import annotations

import gzip
import os
import shutil
import threading
import time
from collections.abc import Callable

from kobako.engine.logs.config import JSON_FILE, LogConfig
from kobako.engine.logs.files import rotated_paths
from kobako.engine.logs.record import attrs_json, encode_record

PARTIAL_SIZE = 16 * 1024
STREAMS = ("stdout", "stderr")
_FILE_MODE = 0o640


class JsonFileWriter:
    """Writes records for one container; blocking, single-threaded, never raises on I/O."""

    def __init__(self, path: str, config: LogConfig,
                 on_error: Callable[[str], None] | None = None,
                 attrs: dict[str, str] | None = None):
        self.path = path
        self.max_size = config.max_size
        self.max_file = config.max_file
        self.compress = config.compress
        self._on_error = on_error
        self._attrs = attrs_json(attrs) if attrs else b""
        self._pending: dict[str, bytearray] = {s: bytearray() for s in STREAMS}
        self._partial_ns: dict[str, int | None] = {s: None for s in STREAMS}
        self._failing = False
        self._compressor: threading.Thread | None = None
        self._compress_error: str | None = None
        self._fd = -1
        self._size = 0
        self._open(truncate=False)

    # -- public interface ---------------------------------------------------------------

    def write(self, stream: str, data: bytes, now: float | None = None, *,
              now_ns: int | None = None) -> None:
        """Log a chunk of `stream`'s output; complete lines become records at once."""
        if stream not in self._pending:
            raise ValueError(f"unknown log stream {stream!r}")
        ns = now_ns if now_ns is not None else (
            round(now * 1e9) if now is not None else time.time_ns())
        buf = self._pending[stream]
        buf += data
        out: list[bytes] = []
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            end = nl if nl >= 0 else len(buf)
            # Docker's 16 KiB buffer fills before it sees the newline: pieces first.
            while end - start >= PARTIAL_SIZE:
                out.append(self._record(stream, bytes(buf[start:start + PARTIAL_SIZE]),
                                        ns, partial=True))
                start += PARTIAL_SIZE
            if nl < 0:
                break
            out.append(self._record(stream, bytes(buf[start:nl + 1]), ns, partial=False))
            start = nl + 1
        del buf[:start]
        if out:
            self._emit(out)

    def flush(self, now: float | None = None) -> None:
        """Write out pending partial lines, without a newline (the container exited)."""
        ns = round(now * 1e9) if now is not None else time.time_ns()
        out = [self._record(s, bytes(self._pending[s]), ns, partial=True)
               for s in STREAMS if self._pending[s]]
        for s in STREAMS:
            self._pending[s].clear()
            self._partial_ns[s] = None
        if out:
            self._emit(out)

    def close(self) -> None:
        self._join_compressor()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- records --------------------------------------------------------------------------

    def _record(self, stream: str, line: bytes, ns: int, *, partial: bool) -> bytes:
        first_ns = self._partial_ns[stream]
        if first_ns is not None:
            ns = first_ns  # later pieces of a split line keep the first piece's time
        self._partial_ns[stream] = (first_ns if first_ns is not None else ns) if partial \
            else None
        return encode_record(line, stream, ns, self._attrs)

    def _emit(self, records: list[bytes]) -> None:
        batch: list[bytes] = []
        batch_size = 0
        for rec in records:
            if self.max_size is not None and self._size + batch_size >= self.max_size:
                if batch:
                    self._write_out(b"".join(batch))
                    batch, batch_size = [], 0
                if self._size >= self.max_size:
                    self._rotate()
            batch.append(rec)
            batch_size += len(rec)
        if batch:
            self._write_out(b"".join(batch))

    # -- the file -------------------------------------------------------------------------

    def _open(self, *, truncate: bool) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        if truncate:
            flags |= os.O_TRUNC
        self._fd = os.open(self.path, flags, _FILE_MODE)
        self._size = os.lseek(self._fd, 0, os.SEEK_END)
        if self._size and not truncate:
            self._terminate_torn_record()

    def _terminate_torn_record(self) -> None:
        # A monitor killed in the middle of a write leaves a torn last record; end it
        # with a newline so it stays one corrupt line that readers skip, instead of
        # gluing it to the first record we write.
        with open(self.path, "rb") as f:
            f.seek(self._size - 1)
            if f.read(1) != b"\n":
                self._write_out(b"\n")

    def _write_out(self, data: bytes) -> None:
        if self._fd < 0:
            try:
                self._open(truncate=False)
            except OSError as e:
                self._failed(f"error opening log file {self.path}: {e}")
                return
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as e:
            self._cut_back()
            self._failed(f"error writing log entry: {e}")
            return
        self._size += len(data)
        self._failing = False

    def _cut_back(self) -> None:
        # Drop the torn part of a failed write so the file stays whole records.
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as e:
            self._failed(f"error truncating log file after a failed write: {e}")

    def _failed(self, message: str) -> None:
        if not self._failing:
            self._failing = True
            if self._on_error is not None:
                self._on_error(message)

    def _join_compressor(self) -> None:
        # As Docker: one rotation's compression at a time. Its error is reported from
        # this (the monitor's) thread, so on_error never runs concurrently.
        if self._compressor is not None:
            self._compressor.join()
            self._compressor = None
        if self._compress_error is not None:
            message, self._compress_error = self._compress_error, None
            self._failed(message)

    def _rotate(self) -> None:
        self._join_compressor()
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        try:
            self._shift_rotated()
            if self.max_file < 2:
                os.unlink(self.path)
            else:
                os.rename(self.path, self.path + ".1")
        except FileNotFoundError:
            pass
        except OSError as e:
            self._failed(f"error rotating log file, log data may have been lost: {e}")
        try:
            self._open(truncate=True)
        except OSError as e:
            self._fd = -1
            self._size = 0
            self._failed(f"error opening log file {self.path}: {e}")
            return
        if self.compress and self.max_file >= 2:
            self._compressor = threading.Thread(
                target=self._compress, args=(self.path + ".1",), daemon=True,
                name="kobako-log-compress")
            self._compressor.start()

    def _shift_rotated(self) -> None:
        if self.max_file < 2:
            return
        for index, name in rotated_paths(self.path):
            if index >= self.max_file - 1:
                plain = name.removesuffix(".gz")
                for victim in (plain, plain + ".gz"):
                    try:
                        os.unlink(victim)  # the oldest, and leftovers of a larger max-file
                    except FileNotFoundError:
                        continue
        # Both forms move: a plain file can be left by a monitor killed mid-compression.
        for i in range(self.max_file - 1, 1, -1):
            for ext in ("", ".gz"):
                try:
                    os.rename(f"{self.path}.{i - 1}{ext}", f"{self.path}.{i}{ext}")
                except FileNotFoundError:
                    continue

    def _compress(self, name: str) -> None:
        # Write name.gz completely, then drop name: a reader always finds one whole copy.
        tmp = name + ".gz.tmp"
        try:
            with open(name, "rb") as src, open(tmp, "wb") as raw:
                with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
                    shutil.copyfileobj(src, gz, 1 << 20)
            os.rename(tmp, name + ".gz")
            os.unlink(name)
        except FileNotFoundError:
            return
        except OSError as e:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            self._compress_error = f"error compressing log file after rotation: {e}"


class NullWriter:
    """The `none` driver: same interface, keeps nothing."""

    def __init__(self, path: str = "", config: LogConfig | None = None,
                 on_error: Callable[[str], None] | None = None,
                 attrs: dict[str, str] | None = None):
        self.path = path

    def write(self, stream: str, data: bytes, now: float | None = None, *,
              now_ns: int | None = None) -> None:
        return None

    def flush(self, now: float | None = None) -> None:
        return None

    def close(self) -> None:
        return None


def open_writer(path: str, config: LogConfig, on_error: Callable[[str], None] | None = None,
                attrs: dict[str, str] | None = None) -> JsonFileWriter | NullWriter:
    """The writer for `config`'s driver. Opening the json-file log may raise OSError."""
    if config.type == JSON_FILE:
        return JsonFileWriter(path, config, on_error, attrs)
    return NullWriter(path, config, on_error, attrs)
