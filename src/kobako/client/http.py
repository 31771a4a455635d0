"""A minimal HTTP/1.1 client connection (one request per connection).

The stdlib's http.client pulls in the email package (~25 ms of import time); the
CLI's start-up budget is 100 ms, and the API needs only this: a request line,
headers, a bytes or chunked file body, and a response with Content-Length,
chunked or read-until-close framing.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from typing import IO, Any

_BLOCK = 256 * 1024


class HTTPError(OSError):
    """The server's answer is not valid HTTP."""


class Headers(dict):
    """Response headers, looked up case-insensitively (keys stored lower-case)."""

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


class RawResponse:
    def __init__(self, sock: socket.socket, buf: bytes, status: int, reason: str,
                 headers: Headers, method: str):
        self._sock = sock
        self._buf = buf
        self.status = status
        self.reason = reason
        self.headers = headers
        self._remaining: int | None = None  # bytes left in the body or current chunk
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self._done = False
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            self._done = True
        elif not self._chunked and headers.get("content-length") is not None:
            self._remaining = int(headers["content-length"])
            self._done = self._remaining == 0

    def _fill(self) -> bool:
        data = self._sock.recv(_BLOCK)
        if not data:
            return False
        self._buf += data
        return True

    def _line(self) -> bytes:
        while b"\r\n" not in self._buf:
            if not self._fill():
                raise HTTPError("connection closed inside a chunk header")
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line

    def read1(self, size: int = _BLOCK) -> bytes:
        """Up to `size` bytes of body as soon as some are available; b"" at the end."""
        if self._done:
            return b""
        if self._chunked:
            if not self._remaining:
                size_line = self._line().split(b";", 1)[0].strip()
                try:
                    self._remaining = int(size_line, 16)
                except ValueError as exc:
                    raise HTTPError(f"bad chunk size {size_line!r}") from exc
                if self._remaining == 0:
                    while self._line():  # trailers up to the empty line
                        pass
                    self._done = True
                    return b""
            if not self._buf and not self._fill():
                raise HTTPError("connection closed inside a chunk")
            take = self._buf[:min(size, self._remaining or 0)]
            self._buf = self._buf[len(take):]
            self._remaining = (self._remaining or 0) - len(take)
            if self._remaining == 0:
                self._line()  # the CRLF after the chunk data
            return take
        if not self._buf and not self._fill():
            if self._remaining:
                raise HTTPError("connection closed before the end of the body")
            self._done = True
            return b""
        limit = size if self._remaining is None else min(size, self._remaining)
        take, self._buf = self._buf[:limit], self._buf[limit:]
        if self._remaining is not None:
            self._remaining -= len(take)
            self._done = self._remaining == 0
        return take

    def read(self) -> bytes:
        parts = []
        while chunk := self.read1():
            parts.append(chunk)
        return b"".join(parts)


class Connection:
    """One HTTP/1.1 exchange over a socket made by `connect()`."""

    def __init__(self, connect: Callable[[], socket.socket], host: str = "kobako"):
        self._connect = connect
        self.host = host
        self.sock: socket.socket | None = None

    def request(self, method: str, url: str, body: bytes | IO[bytes] | None = None,
                headers: Mapping[str, str] | None = None) -> None:
        self.sock = self._connect()
        hdrs = {"Host": self.host, **(headers or {})}
        chunked = body is not None and not isinstance(body, (bytes, bytearray))
        if chunked:
            hdrs["Transfer-Encoding"] = "chunked"
        elif body is not None:
            hdrs["Content-Length"] = str(len(body))  # type: ignore[arg-type]
        elif method in ("POST", "PUT"):
            hdrs["Content-Length"] = "0"
        head = f"{method} {url} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        self.sock.sendall(head.encode("latin-1"))
        if body is None:
            return
        if not chunked:
            self.sock.sendall(body)  # type: ignore[arg-type]
            return
        reader: IO[bytes] = body  # type: ignore[assignment]
        while block := reader.read(_BLOCK):
            self.sock.sendall(b"%x\r\n%s\r\n" % (len(block), block))
        self.sock.sendall(b"0\r\n\r\n")

    def getresponse(self, method: str = "GET") -> RawResponse:
        assert self.sock is not None
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                data = self.sock.recv(65536)
                if not data:
                    raise HTTPError("connection closed before the response headers")
                buf += data
            head, buf = buf.split(b"\r\n\r\n", 1)
            status, reason, headers = parse_head(head)
            if status != 100:  # skip interim "100 Continue"
                return RawResponse(self.sock, buf, status, reason, headers, method)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def parse_head(head: bytes) -> tuple[int, str, Headers]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise HTTPError(f"bad status line {lines[0]!r}")
    try:
        status = int(parts[1])
    except ValueError as exc:
        raise HTTPError(f"bad status line {lines[0]!r}") from exc
    headers = Headers()
    for line in lines[1:]:
        k, sep, v = line.partition(":")
        if sep:
            key = k.strip().lower()
            headers[key] = f"{headers[key]}, {v.strip()}" if key in headers else v.strip()
    return status, parts[2] if len(parts) > 2 else "", headers
