"""Content-addressable blob store.

Blobs live at ``root/blobs/<algorithm>/<hex>``. A blob is written to a temp file in
``root/ingest/`` while it is hashed, fsynced, then renamed into place, so a crash never
leaves a half-written blob under a real digest. An ingest file is named after the digest
it is expected to have (so an interrupted download can be resumed) and is held under an
exclusive flock while a writer owns it; a leftover whose lock is free belongs to a dead
process and is either kept for resume (named after a digest) or removed (anonymous).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pathlib
import re
import uuid
from collections.abc import Iterator
from typing import BinaryIO

from kobako.image.errors import DigestMismatch, ImageError, InvalidDigest, NotFound

_ALGORITHMS = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^(sha256|sha512):([a-f0-9]+)$")
_CHUNK = 1 << 20


def parse_digest(digest: str) -> tuple[str, str]:
    """Split ``"sha256:<hex>"`` into (algorithm, hex), rejecting anything else."""
    m = _DIGEST_RE.match(digest or "")
    if not m or len(m.group(2)) != _ALGORITHMS[m.group(1)]:
        raise InvalidDigest(f"invalid digest {digest!r}")
    return m.group(1), m.group(2)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ContentStore:
    """sha256 (and sha512) content-addressed blobs on the local filesystem."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = pathlib.Path(root)
        self.blobs = self.root / "blobs"
        self.ingest = self.root / "ingest"
        for alg in _ALGORITHMS:
            (self.blobs / alg).mkdir(parents=True, exist_ok=True)
        self.ingest.mkdir(parents=True, exist_ok=True)
        self.recover()

    # -- reading ---------------------------------------------------------------------------

    def _blob_path(self, digest: str) -> pathlib.Path:
        alg, hexd = parse_digest(digest)
        return self.blobs / alg / hexd

    def has(self, digest: str) -> bool:
        return self._blob_path(digest).is_file()

    def path(self, digest: str) -> pathlib.Path:
        p = self._blob_path(digest)
        if not p.is_file():
            raise NotFound(f"blob {digest} not found")
        return p

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self._blob_path(digest), "rb")  # noqa: SIM115 - caller closes
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None

    def digests(self) -> Iterator[str]:
        for alg, length in _ALGORITHMS.items():
            for entry in os.scandir(self.blobs / alg):
                if len(entry.name) == length and entry.is_file():
                    yield f"{alg}:{entry.name}"

    # -- writing ---------------------------------------------------------------------------

    def put(self, data: bytes, expected_digest: str | None = None) -> str:
        """Store `data`; returns its digest. Raises DigestMismatch if it is not `expected`."""
        alg = parse_digest(expected_digest)[0] if expected_digest else "sha256"
        actual = f"{alg}:{hashlib.new(alg, data).hexdigest()}"
        if expected_digest and actual != expected_digest:
            raise DigestMismatch(
                f"content has digest {actual}, expected {expected_digest}",
                expected=expected_digest, actual=actual,
            )
        if self.has(actual):
            return actual
        with self.writer(actual, len(data)) as w:
            w.write(data)
            return w.commit()

    def writer(
        self,
        expected_digest: str | None = None,
        expected_size: int | None = None,
        resume: bool = False,
    ) -> BlobWriter:
        return BlobWriter(self, expected_digest, expected_size, resume)

    def delete(self, digest: str) -> None:
        try:
            self._blob_path(digest).unlink()
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None

    def ingest_offset(self, digest: str) -> int:
        """Bytes of `digest` already downloaded by an earlier, interrupted writer."""
        _, hexd = parse_digest(digest)
        try:
            return (self.ingest / hexd).stat().st_size
        except FileNotFoundError:
            return 0

    def recover(self) -> list[str]:
        """Clean ingest leftovers of dead writers; returns the names removed.

        Leftovers named after a digest are kept so a later writer can resume them,
        unless they already hold a blob that is stored (nothing left to resume).
        """
        removed = []
        for entry in os.scandir(self.ingest):
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live writer owns it
                named = len(entry.name) in _ALGORITHMS.values() and all(
                    c in "0123456789abcdef" for c in entry.name
                )
                stored = any((self.blobs / alg / entry.name).is_file() for alg in _ALGORITHMS)
                if not named or stored:
                    os.unlink(entry.path)
                    removed.append(entry.name)
            finally:
                os.close(fd)
        return removed


class BlobWriter:
    """Streams one blob into the store, hashing as it goes (a context manager)."""

    def __init__(
        self,
        store: ContentStore,
        expected_digest: str | None,
        expected_size: int | None,
        resume: bool,
    ):
        self.store = store
        self.expected_digest = expected_digest
        self.expected_size = expected_size
        self.resume = resume
        self.algorithm = parse_digest(expected_digest)[0] if expected_digest else "sha256"
        self._hash = hashlib.new(self.algorithm)
        self._done = False
        self.offset = 0
        self.path, self._fd = self._open_ingest()
        self._file = os.fdopen(self._fd, "r+b", buffering=_CHUNK)
        if resume and expected_digest:
            self._rehash()
        else:
            self._file.truncate(0)

    def _open_ingest(self) -> tuple[pathlib.Path, int]:
        names = []
        if self.expected_digest:
            names.append(parse_digest(self.expected_digest)[1])
        names.append(f"tmp-{uuid.uuid4().hex}")
        for name in names:
            path = self.store.ingest / name
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # another writer is downloading the same blob: use a private file
                self.resume = False
                continue
            return path, fd
        raise ImageError(f"cannot open an ingest file in {self.store.ingest}")

    def _rehash(self) -> None:
        self._file.seek(0)
        while chunk := self._file.read(_CHUNK):
            self._hash.update(chunk)
            self.offset += len(chunk)
        if self.expected_size is not None and self.offset > self.expected_size:
            self._file.truncate(0)  # garbage: longer than the blob can be
            self._file.seek(0)
            self._hash = hashlib.new(self.algorithm)
            self.offset = 0

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._hash.update(chunk)
        self.offset += len(chunk)

    @property
    def digest(self) -> str:
        return f"{self.algorithm}:{self._hash.hexdigest()}"

    def commit(self) -> str:
        """Verify and move the blob into place; returns its digest."""
        if self._done:
            raise ImageError("blob writer already closed")
        actual = self.digest
        if self.expected_size is not None and self.offset != self.expected_size:
            self.abort()
            raise DigestMismatch(
                f"blob {self.expected_digest or actual}: got {self.offset} bytes, "
                f"expected {self.expected_size}",
                expected=self.expected_digest, actual=actual,
            )
        if self.expected_digest and actual != self.expected_digest:
            self.abort()
            raise DigestMismatch(
                f"content has digest {actual}, expected {self.expected_digest}",
                expected=self.expected_digest, actual=actual,
            )
        self._file.flush()
        os.fsync(self._file.fileno())
        target = self.store._blob_path(actual)
        if target.exists():
            self.path.unlink()
        else:
            os.rename(self.path, target)
            _fsync_dir(target.parent)
        self._close()
        return actual

    def abort(self) -> None:
        """Drop what was written."""
        if self._done:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._close()

    def close(self) -> None:
        """Stop writing but keep the ingest file for a later resume."""
        if self._done:
            return
        self._file.flush()
        self._close()

    def _close(self) -> None:
        self._done = True
        self._file.close()  # also drops the flock

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._done:
            return
        if exc_type is not None and self.resume and self.expected_digest:
            self.close()
        else:
            self.abort()
