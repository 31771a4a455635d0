"""A small synchronous Docker Engine API client over a unix socket (or TCP with TLS).

stdlib sockets and a minimal HTTP/1.1 exchange (client/http.py), so that the CLI
starts fast. Version negotiation follows docker's: ask /_ping for the daemon's API-Version and use the lower of that
and ours. Streaming helpers read JSON lines and multiplexed frames; `hijack()` gives
a raw two-way socket for attach and exec start.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from kobako.client.errors import ClientError, DaemonUnreachable
from kobako.client.http import Connection, RawResponse, parse_head

if TYPE_CHECKING:
    import ssl

DEFAULT_HOST = "unix:///run/kobako.sock"
CLIENT_MAX_VERSION = "1.47"
CLIENT_MIN_VERSION = "1.24"
USER_AGENT = "kobako-cli/0.1.0"
_FRAME = struct.Struct(">BxxxL")


def default_host() -> str:
    return os.environ.get("KOBAKO_HOST") or DEFAULT_HOST


def _vtuple(v: str) -> tuple[int, int]:
    a, b = v.split(".", 1)
    return int(a), int(b)


class Response:
    """A response whose body may still be streaming."""

    def __init__(self, conn: Connection, resp: RawResponse):
        self._conn = conn
        self.raw = resp
        self.status = resp.status
        self.headers = resp.headers

    def read(self) -> bytes:
        try:
            return self.raw.read()
        finally:
            self.close()

    def json(self) -> Any:
        data = self.read()
        return json.loads(data) if data.strip() else None

    def iter_chunks(self, size: int = 65536) -> Iterator[bytes]:
        try:
            while True:
                chunk = self.raw.read1(size)
                if not chunk:
                    return
                yield chunk
        finally:
            self.close()

    def iter_json(self) -> Iterator[dict[str, Any]]:
        """JSON messages, one after another (newline separated or not)."""
        decoder = json.JSONDecoder()
        buf = ""
        for chunk in self.iter_chunks():
            buf += chunk.decode("utf-8", errors="replace")
            while True:
                buf = buf.lstrip()
                if not buf:
                    break
                try:
                    obj, end = decoder.raw_decode(buf)
                except json.JSONDecodeError:
                    break  # incomplete: wait for more
                buf = buf[end:]
                yield obj

    def iter_frames(self) -> Iterator[tuple[int, bytes]]:
        """Multiplexed (stream, data) frames; a raw-stream body comes out as stream 1."""
        multiplexed = "multiplexed" in (self.headers.get("Content-Type") or "")
        return _frames(self.iter_chunks(), multiplexed)

    def close(self) -> None:
        self._conn.close()


class Hijacked:
    """A raw two-way connection after attach/exec start took it over."""

    def __init__(self, sock: socket.socket, leftover: bytes, status: int, headers: dict[str, str]):
        self.sock = sock
        self._leftover = leftover
        self.status = status
        self.headers = headers

    @property
    def multiplexed(self) -> bool:
        return "multiplexed" in self.headers.get("content-type", "")

    def recv(self, size: int = 65536) -> bytes:
        if self._leftover:
            data, self._leftover = self._leftover, b""
            return data
        return self.sock.recv(size)

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close_write(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # already gone: nothing left to half-close

    def close(self) -> None:
        self.sock.close()

    def iter_frames(self) -> Iterator[tuple[int, bytes]]:
        return _frames(iter(self.recv, b""), self.multiplexed)


def _frames(chunks: Iterable[bytes], multiplexed: bool) -> Iterator[tuple[int, bytes]]:
    """(stream, data) from a body in Docker's 8-byte-header framing, or a raw stream's
    chunks as stream 1."""
    buf = b""
    for chunk in chunks:
        if not multiplexed:
            yield 1, chunk
            continue
        buf += chunk
        while len(buf) >= 8:
            stream, size = _FRAME.unpack_from(buf)
            if len(buf) < 8 + size:
                break
            yield stream, buf[8:8 + size]
            buf = buf[8 + size:]


class APIClient:
    def __init__(self, host: str | None = None, *, version: str | None = None,
                 timeout: float | None = None, tls: ssl.SSLContext | None = None):
        self.host = host or default_host()
        self.timeout = timeout
        self._version = version
        self._tls = tls
        if self.host.startswith("unix://"):
            self._path = self.host[len("unix://"):]
        elif self.host.startswith("tcp://"):
            hostport = self.host[len("tcp://"):].rstrip("/")
            host, _, port = hostport.rpartition(":")
            self._tcp = (host or hostport, int(port) if host else 2376)
            self._path = ""
        else:
            raise ValueError(f"unsupported host {self.host!r}: use unix:// or tcp://")

    # -- connections -----------------------------------------------------------------

    def _socket(self, timeout: float | None) -> socket.socket:
        if self._path:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            try:
                s.connect(self._path)
            except OSError:
                s.close()
                raise
            return s
        raw = socket.create_connection(self._tcp, timeout=timeout)
        ctx = self._tls or tls_context_from_env()
        return ctx.wrap_socket(raw, server_hostname=self._tcp[0])

    def _connection(self, timeout: float | None) -> Connection:
        return Connection(lambda: self._socket(timeout))

    @property
    def version(self) -> str:
        if self._version is None:
            self._version = self.negotiate()
        return self._version

    def negotiate(self) -> str:
        """docker's negotiation: the lower of our max and the daemon's API-Version."""
        resp = self._raw("GET", "/_ping", versioned=False)
        server = resp.headers.get("API-Version") or CLIENT_MAX_VERSION
        resp.read()
        try:
            return min(server, CLIENT_MAX_VERSION, key=_vtuple)
        except ValueError:
            return CLIENT_MAX_VERSION

    def url(self, path: str, params: Mapping[str, Any] | None = None, *,
            versioned: bool = True) -> str:
        prefix = f"/v{self.version}" if versioned else ""
        query = ""
        if params:
            items = []
            for k, v in params.items():
                if v is None:
                    continue
                for item in (v if isinstance(v, (list, tuple)) else [v]):
                    if isinstance(item, bool):
                        item = "1" if item else "0"
                    elif isinstance(item, (dict, list)):
                        item = json.dumps(item)
                    items.append((k, str(item)))
            if items:
                query = "?" + urlencode(items)
        return prefix + path + query

    def _raw(self, method: str, path: str, params: Mapping[str, Any] | None = None,
             body: Any = None, headers: Mapping[str, str] | None = None, *,
             versioned: bool = True, timeout: float | None = None) -> Response:
        url = self.url(path, params, versioned=versioned)
        hdrs = {"User-Agent": USER_AGENT, "Connection": "close"}
        data: Any = None
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        elif body is not None:
            data = body
            hdrs["Content-Type"] = "application/x-tar"
        hdrs.update(headers or {})
        conn = self._connection(timeout if timeout is not None else self.timeout)
        try:
            conn.request(method, url, body=data, headers=hdrs)
            resp = conn.getresponse(method)
        except (FileNotFoundError, ConnectionRefusedError, PermissionError) as exc:
            conn.close()
            raise DaemonUnreachable(self.host, exc.strerror or str(exc)) from exc
        except OSError as exc:
            conn.close()
            raise DaemonUnreachable(self.host, str(exc)) from exc
        return Response(conn, resp)

    def request(self, method: str, path: str, params: Mapping[str, Any] | None = None,
                body: Any = None, headers: Mapping[str, str] | None = None,
                timeout: float | None = None) -> Response:
        """A request whose error statuses raise ClientError; the body is left to read."""
        resp = self._raw(method, path, params, body, headers, timeout=timeout)
        if resp.status >= 400:
            raise error_from(resp)
        return resp

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params).json()

    def post_json(self, path: str, params: Mapping[str, Any] | None = None,
                  body: Any = None, headers: Mapping[str, str] | None = None) -> Any:
        return self.request("POST", path, params, body, headers).json()

    def delete(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("DELETE", path, params).json()

    def hijack(self, path: str, params: Mapping[str, Any] | None = None,
               body: Any = None) -> Hijacked:
        """POST with `Upgrade: tcp`; returns the raw connection after 101 (or 200)."""
        url = self.url(path, params)
        data = json.dumps(body).encode() if body is not None else b""
        try:
            sock = self._socket(None)
        except OSError as exc:
            raise DaemonUnreachable(self.host, exc.strerror or str(exc)) from exc
        head = (f"POST {url} HTTP/1.1\r\nHost: kobako\r\nUser-Agent: {USER_AGENT}\r\n"
                "Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode()
        sock.sendall(head + data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                sock.close()
                raise ClientError(500, "the daemon closed the connection during the upgrade")
            buf += chunk
        head_raw, leftover = buf.split(b"\r\n\r\n", 1)
        status, _, headers = parse_head(head_raw)
        if status >= 400:
            body_text = leftover
            length = int(headers.get("content-length", "0") or 0)
            while len(body_text) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body_text += chunk
            sock.close()
            raise ClientError(status, _message(body_text, status))
        return Hijacked(sock, leftover, status, headers)


def _message(data: bytes, status: int) -> str:
    try:
        doc = json.loads(data)
        if isinstance(doc, dict) and doc.get("message"):
            return str(doc["message"])
    except (json.JSONDecodeError, UnicodeDecodeError):
        pass
    text = data.decode(errors="replace").strip()
    return text or f"HTTP {status}"


def error_from(resp: Response) -> ClientError:
    return ClientError(resp.status, _message(resp.read(), resp.status))


def tls_context_from_env() -> ssl.SSLContext:
    """Client TLS as docker's: KOBAKO_CERT_PATH (ca.pem, cert.pem, key.pem)."""
    import ssl  # lazy: only TCP needs it, and it is slow to import

    path = os.environ.get("KOBAKO_CERT_PATH") or os.path.expanduser("~/.kobako")
    ctx = ssl.create_default_context(cafile=os.path.join(path, "ca.pem"))
    ctx.load_cert_chain(os.path.join(path, "cert.pem"), os.path.join(path, "key.pem"))
    return ctx


def quote_ref(name: str) -> str:
    """Path-segment quoting for references (keeps / and : as docker does)."""
    return quote(name, safe="/:@")
