"""Stream plumbing: hijacked connections, multiplexed framing, JSON progress, detach keys.

Attach and exec start take over the HTTP connection (hijack): with `Upgrade: tcp`
the answer is 101 Switching Protocols, without it (older clients) a 200 whose body
is the raw stream; after the headers, bytes flow both ways unframed by HTTP. Output
without a tty is multiplexed in 8-byte-header frames: [stream, 0, 0, 0, size32be].
"""

from __future__ import annotations

import json
import struct
from collections.abc import AsyncIterator
from typing import Any

from kobako.api.http import RawStream, Request, StreamResponse
from kobako.engine.errors import InvalidParameter

RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED_STREAM = "application/vnd.docker.multiplexed-stream"

STDIN, STDOUT, STDERR = 0, 1, 2
_HEADER = struct.Struct(">BxxxL")
DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"


def frame(stream: int, data: bytes) -> bytes:
    """One multiplexed frame: 8-byte header then the payload."""
    return _HEADER.pack(stream, len(data)) + data


def parse_frames(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Split complete frames off `buf`; returns them and the incomplete remainder."""
    out = []
    while len(buf) >= _HEADER.size:
        stream, size = _HEADER.unpack_from(buf)
        if len(buf) < _HEADER.size + size:
            break
        out.append((stream, buf[_HEADER.size:_HEADER.size + size]))
        buf = buf[_HEADER.size + size:]
    return out, buf


def wants_upgrade(request: Request) -> bool:
    conn = request.headers.get("Connection", "").lower()
    return "upgrade" in conn and request.headers.get("Upgrade", "").lower() == "tcp"


class Hijacked:
    """A hijacked connection: `read()` client bytes (None at EOF), `write()` raw bytes."""

    def __init__(self, stream: RawStream, response: StreamResponse, multiplexed: bool):
        self._stream = stream
        self.response = response
        self.multiplexed = multiplexed

    @property
    def half_closed(self) -> bool:
        """The client shut down its sending side (the docker CLI's CloseWrite when its
        stdin ends) rather than going away."""
        return self._stream.half_closed

    async def read(self) -> bytes | None:
        return await self._stream.read()

    async def write(self, data: bytes) -> None:
        if data:
            await self._stream.write(data)

    async def write_stream(self, stream: int, data: bytes) -> None:
        """Write output of `stream` (1 stdout, 2 stderr), framed unless it is a tty stream."""
        if self.multiplexed:
            await self.write(frame(stream or STDOUT, data))
        else:
            await self.write(data)

    @property
    def closed(self) -> bool:
        return self._stream.closed

    async def close(self) -> None:
        await self._stream.close()


async def hijack(request: Request, *, multiplexed: bool) -> Hijacked:
    """Take over the connection of `request` for a raw bidirectional stream: 101 with
    `Upgrade: tcp`, else (older clients) a 200 whose body is the stream."""
    content_type = MULTIPLEXED_STREAM if multiplexed else RAW_STREAM
    if wants_upgrade(request):
        status, headers = 101, {"Content-Type": content_type, "Connection": "Upgrade",
                                "Upgrade": "tcp"}
    else:
        status, headers = 200, {"Content-Type": content_type}
    stream = await request.hijack(status, headers)
    assert request.response is not None
    return Hijacked(stream, request.response, multiplexed)


class JSONStream:
    """A chunked response of JSON messages, one per line, as pulls and events stream."""

    def __init__(self, request: Request):
        self.request = request
        self.response = StreamResponse(status=200,
                                           headers={"Content-Type": "application/json"})
        self._prepared = False

    async def start(self) -> None:
        if not self._prepared:
            await self.response.prepare(self.request)
            self._prepared = True

    async def send(self, message: dict[str, Any]) -> None:
        await self.start()
        await self.response.write(json.dumps(message).encode() + b"\r\n")

    async def send_error(self, message: str, code: int | None = None) -> None:
        detail: dict[str, Any] = {"message": message}
        if code is not None:
            detail = {"code": code, "message": message}  # a failed RUN's exit code
        await self.send({"errorDetail": detail, "error": message})

    async def finish(self) -> StreamResponse:
        await self.start()
        await self.response.write_eof()
        return self.response


async def stream_tar(request: Request, chunks: AsyncIterator[bytes],
                     headers: dict[str, str] | None = None) -> StreamResponse:
    """A tar made by a worker thread (engine.archive.thread_stream), streamed as it comes.
    A failure mid-way cuts the connection: the client sees an incomplete tar."""
    try:
        resp = StreamResponse(status=200, headers={"Content-Type": "application/x-tar",
                                                       **(headers or {})})
        await resp.prepare(request)
        async for chunk in chunks:
            await resp.write(chunk)
        await resp.write_eof()
        return resp
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


async def stream_json_lines(request: Request,
                            items: AsyncIterator[dict[str, Any]]) -> StreamResponse:
    stream = JSONStream(request)
    await stream.start()
    async for item in items:
        await stream.send(item)
    return await stream.finish()


# --- detach keys --------------------------------------------------------------------

_CTRL = {chr(c): c - 0x60 for c in range(ord("a"), ord("z") + 1)}
_CTRL.update({"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31})


def parse_detach_keys(spec: str | None) -> bytes:
    """Docker's detach-key syntax: comma-separated `ctrl-<x>` or single characters."""
    if spec is None or spec == "":
        spec = DEFAULT_DETACH_KEYS
    out = bytearray()
    for key in spec.split(","):
        key = key.strip()
        if len(key) == 1:
            out.append(ord(key))
        elif key.lower().startswith("ctrl-") and len(key) == 6 and key[5].lower() in _CTRL:
            out.append(_CTRL[key[5].lower()])
        else:
            raise InvalidParameter(f"Invalid detach keys ({spec}) provided")
    return bytes(out)


class DetachScanner:
    """Watches stdin for the detach sequence, holding back a partial match.

    `feed()` returns the bytes to forward and whether the sequence was completed.
    """

    def __init__(self, keys: bytes):
        self.keys = keys
        self._held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        if not self.keys:
            return data, False
        out = bytearray()
        for b in data:
            candidate = self._held + bytes([b])
            if self.keys.startswith(candidate):
                if len(candidate) == len(self.keys):
                    self._held = b""
                    return bytes(out), True
                self._held = candidate
            else:
                out += self._held
                if self.keys.startswith(bytes([b])):
                    self._held = bytes([b])
                else:
                    out.append(b)
                    self._held = b""
        return bytes(out), False
