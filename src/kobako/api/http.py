"""The API's HTTP/1.1 server: h11 for the protocol, asyncio streams for the sockets.

Docker's Engine API needs little of a web framework: routes with path parameters,
JSON bodies, bodies streamed both ways, chunked responses, and connections taken over
by attach and exec (hijack, with or without `Upgrade`). This module is that, on h11,
with nothing else to import: the daemon answers sooner after a restart and carries
less memory than with a full framework.

    app = Application(handle)                  # handle(request) -> Response
    server = Server(app); await server.serve_unix(sock); ...; await server.shutdown(3)

A handler returns a Response (sent whole) or a StreamResponse it has prepared and
written itself. `request.hijack()` turns the connection into a RawStream. A client that
goes away is noticed by the next write (ConnectionResetError), as with other servers;
handlers are not cancelled for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, unquote

import h11

log = logging.getLogger("kobako.api.http")
access_log = logging.getLogger("kobakod.access")

MAX_HEADER_BYTES = 64 * 1024  # the request line and all its headers
KEEPALIVE_TIMEOUT = 75.0  # seconds an idle connection may wait for its next request
READ_CHUNK = 256 * 1024
DRAIN_LIMIT = 1 << 20  # unread body bytes skipped to keep a connection; more: close it
DRAIN_WAIT = 5.0  # seconds they may take to arrive
_REASONS = {101: "Switching Protocols", 200: "OK", 201: "Created", 204: "No Content",
            304: "Not Modified", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            409: "Conflict", 413: "Request Entity Too Large",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            501: "Not Implemented", 503: "Service Unavailable"}


class HTTPError(Exception):
    """An answer the HTTP layer itself gives: no route (404, 405), body too large (413),
    a malformed request (400)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


# -- headers and query strings ---------------------------------------------------------


class Headers:
    """Case-insensitive, multi-valued, ordered header fields."""

    def __init__(self, fields: Iterable[tuple[str, str]] | dict[str, str] | None = None):
        self._fields: list[tuple[str, str]] = []
        items = fields.items() if isinstance(fields, dict | Headers) else fields or ()
        for name, value in items:
            self._fields.append((name, value))

    def get(self, name: str, default: str | None = None) -> str | None:
        key = name.lower()
        for field, value in self._fields:
            if field.lower() == key:
                return value
        return default

    def getall(self, name: str) -> list[str]:
        key = name.lower()
        return [value for field, value in self._fields if field.lower() == key]

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name: str, value: str) -> None:
        key = name.lower()
        self._fields = [(f, v) for f, v in self._fields if f.lower() != key]
        self._fields.append((name, value))

    def setdefault(self, name: str, value: str) -> str:
        current = self.get(name)
        if current is None:
            self._fields.append((name, value))
            return value
        return current

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def items(self) -> list[tuple[str, str]]:
        return list(self._fields)

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"


class Query:
    """The query string's parameters; `get` gives the first value of a name."""

    def __init__(self, raw: str):
        self._pairs = parse_qsl(raw, keep_blank_values=True)

    def get(self, name: str, default: str | None = None) -> str | None:
        for key, value in self._pairs:
            if key == name:
                return value
        return default

    def getall(self, name: str, default: list[str] | None = None) -> list[str]:
        values = [value for key, value in self._pairs if key == name]
        return values if values or default is None else list(default)

    def __contains__(self, name: object) -> bool:
        return any(key == name for key, _ in self._pairs)


# -- requests --------------------------------------------------------------------------


class Body:
    """The request body as it arrives: read(n) and iter_chunked(n) give the bytes, b""
    at its end."""

    def __init__(self, connection: _Connection):
        self._connection = connection
        self._buffer = b""
        self.at_eof = False

    async def _more(self) -> bytes:
        if self.at_eof:
            return b""
        connection = self._connection
        if connection.h11.they_are_waiting_for_100_continue:
            await connection.send(h11.InformationalResponse(status_code=100, headers=[]))
        event = await connection.next_event()
        if isinstance(event, h11.Data):
            return bytes(event.data)
        self.at_eof = True  # EndOfMessage (or the connection closed half-way)
        if not isinstance(event, h11.EndOfMessage):
            raise ConnectionResetError("the client went away in the middle of its request")
        connection.watch_for_hangup()
        return b""

    async def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes (all that is left with n < 0); b"" at the end."""
        if n < 0:
            chunks = [self._buffer]
            self._buffer = b""
            while chunk := await self._more():
                chunks.append(chunk)
            return b"".join(chunks)
        if not self._buffer:
            self._buffer = await self._more()
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        while chunk := await self.read(n):
            yield chunk

    async def skip(self, limit: int) -> bool:
        """Read and drop what is left, up to `limit` bytes; False if there was more."""
        skipped = len(self._buffer)
        self._buffer = b""
        while skipped <= limit and (chunk := await self._more()):
            skipped += len(chunk)
        return self.at_eof


class Request:
    def __init__(self, connection: _Connection, event: h11.Request, app: Application):
        self._connection = connection
        self.app = app
        self.method = event.method.decode("ascii")
        target = event.target.decode("latin-1")
        raw_path, _, query = target.partition("?")
        self.raw_path = target
        self.path = unquote(raw_path)
        self.query = Query(query)
        self.headers = Headers((name.decode("latin-1"), value.decode("latin-1"))
                               for name, value in event.headers)
        self.match_info: dict[str, str] = {}
        self.content = Body(connection)
        self._values: dict[str, Any] = {}
        self.response: StreamResponse | None = None  # once headers were sent

    # per-request values, as handlers and the error mapping share them
    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._values[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    @property
    def headers_sent(self) -> bool:
        """A response's head is out: an error can no longer become a status."""
        return self.response is not None

    async def read(self) -> bytes:
        """The whole body, at most the app's max_body bytes (413 above it)."""
        limit = self.app.max_body
        declared = self.headers.get("Content-Length")
        too_large = HTTPError(413, "request body too large", {"Connection": "close"})
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        while chunk := await self.content.read(READ_CHUNK):
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    async def hijack(self, status: int, headers: dict[str, str]) -> RawStream:
        """Send `status` (101 when the client asked for an Upgrade, else 200) and
        `headers`, then hand the connection over as a raw byte stream both ways."""
        return await self._connection.hijack(self, status, headers)


# -- responses -------------------------------------------------------------------------


class StreamResponse:
    """A response whose body the handler writes as it goes (chunked: no Content-Length,
    or until the connection closes for an HTTP/1.0 client)."""

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None):
        self.status = status
        self.headers = Headers(headers)
        self.prepared = False
        self._request: Request | None = None
        self._eof = False

    async def prepare(self, request: Request) -> None:
        if self.prepared:
            return
        self._request = request
        request.app.add_default_headers(self.headers)
        await request._connection.send_head(request, self)
        self.prepared = True
        request.response = self

    async def write(self, data: bytes) -> None:
        assert self._request is not None, "prepare() first"
        if data and self._request.method != "HEAD":
            await self._request._connection.send(h11.Data(data=data))

    async def write_eof(self) -> None:
        if not self._eof and self._request is not None:
            self._eof = True
            await self._request._connection.send(h11.EndOfMessage())


class Response(StreamResponse):
    """A response sent whole: status, headers and body."""

    def __init__(self, status: int = 200, body: bytes = b"", text: str | None = None,
                 headers: dict[str, str] | None = None, content_type: str | None = None):
        super().__init__(status, headers)
        self.body = text.encode() if text is not None else body
        if content_type is not None:
            self.headers["Content-Type"] = content_type
        elif text is not None:
            self.headers.setdefault("Content-Type", "text/plain; charset=utf-8")

    async def send(self, request: Request) -> None:
        if status_has_body(self.status):
            self.headers["Content-Length"] = str(len(self.body))
        await self.prepare(request)
        await self.write(self.body)
        await self.write_eof()


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, (json.dumps(data) + "\n").encode(),
                    content_type="application/json")


def status_has_body(status: int) -> bool:
    return status >= 200 and status not in (204, 304)


class RawStream:
    """A hijacked connection: read() gives the client's bytes (None at its end),
    write() sends bytes as they are."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 initial: bytes = b""):
        self._reader = reader
        self._writer = writer
        self._initial = initial
        self.half_closed = False  # the client shut down its sending side, but reads on

    async def read(self) -> bytes | None:
        if self._initial:
            data, self._initial = self._initial, b""
            return data
        try:
            data = await self._reader.read(READ_CHUNK)
        except ConnectionError:
            return None  # reset: gone, not half-closed
        if not data:
            self.half_closed = not self._writer.is_closing()
            return None
        return data

    async def write(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise ConnectionResetError("the client went away")
        self._writer.write(data)
        await self._writer.drain()

    @property
    def closed(self) -> bool:
        return self._writer.is_closing()

    async def close(self) -> None:
        if not self._writer.is_closing():
            self._writer.close()


class WebSocket:
    """A websocket on a hijacked connection (wsproto's frames): the messages the client
    sends, iterated; send_bytes() for ours."""

    GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self) -> None:
        self._stream: RawStream | None = None
        self._ws: Any = None

    async def prepare(self, request: Request) -> None:
        import base64
        import hashlib

        from wsproto.connection import Connection, ConnectionType

        key = request.headers.get("Sec-WebSocket-Key")
        if not key or "websocket" not in (request.headers.get("Upgrade") or "").lower():
            raise HTTPError(400, "a websocket upgrade request was expected")
        accept = base64.b64encode(hashlib.sha1(key.encode() + self.GUID).digest()).decode()
        self._stream = await request.hijack(101, {
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Accept": accept})
        self._ws = Connection(ConnectionType.SERVER)

    async def send_bytes(self, data: bytes) -> None:
        from wsproto.events import BytesMessage

        assert self._stream is not None
        await self._stream.write(self._ws.send(BytesMessage(data=data)))

    async def __aiter__(self) -> AsyncIterator[bytes | str]:
        from wsproto.events import CloseConnection, Message, Ping

        assert self._stream is not None
        while True:
            for event in self._ws.events():
                if isinstance(event, Message):
                    yield event.data
                elif isinstance(event, Ping):
                    await self._stream.write(self._ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    await self._stream.write(self._ws.send(event.response()))
                    return
            data = await self._stream.read()
            if data is None:
                return
            self._ws.receive_data(data)

    async def close(self) -> None:
        from wsproto.connection import ConnectionState
        from wsproto.events import CloseConnection

        if self._stream is None:
            return
        try:
            if self._ws.state is ConnectionState.OPEN:
                await self._stream.write(self._ws.send(CloseConnection(code=1000)))
        except ConnectionError:
            pass
        await self._stream.close()


# -- routing and the application --------------------------------------------------------

Handler = Callable[[Request], Awaitable[StreamResponse]]


class Router:
    """Method + path patterns, by segments: "/containers/{id}/json" ({id}: one segment),
    "/images/{name:.+}/json" ({name:.+}: one or more, as image names hold slashes)."""

    def __init__(self) -> None:
        # (literal prefix, parameter, is it multi-segment, literal suffix) by pattern
        self._routes: list[tuple[list[str], tuple[str, bool, list[str]] | None,
                                 dict[str, Handler]]] = []
        self._by_pattern: dict[str, dict[str, Handler]] = {}

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        methods = self._by_pattern.get(pattern)
        if methods is None:
            methods = self._by_pattern[pattern] = {}
            self._routes.append((*self._parse(pattern), methods))
        methods[method] = handler

    @staticmethod
    def _parse(pattern: str) -> tuple[list[str], tuple[str, bool, list[str]] | None]:
        segments = pattern.strip("/").split("/")
        params = [i for i, seg in enumerate(segments) if seg.startswith("{")]
        if not params:
            return segments, None
        if len(params) > 1 or not segments[params[0]].endswith("}"):
            raise ValueError(f"route {pattern!r}: one {{parameter}} a pattern")
        i = params[0]
        name, _, regex = segments[i][1:-1].partition(":")
        if regex not in ("", ".+"):
            raise ValueError(f"route {pattern!r}: only {{name}} and {{name:.+}} are known")
        return segments[:i], (name, regex == ".+", segments[i + 1:])

    def resolve(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        segments = path.strip("/").split("/")
        allowed: list[str] = []
        for prefix, param, methods in self._routes:
            info = self._match(segments, prefix, param)
            if info is None:
                continue
            handler = methods.get(method)
            if handler is not None:
                return handler, info
            allowed += methods
        if allowed:
            raise HTTPError(405, "method not allowed", {"Allow": ",".join(sorted(allowed))})
        raise HTTPError(404, "page not found")

    @staticmethod
    def _match(segments: list[str], prefix: list[str],
               param: tuple[str, bool, list[str]] | None) -> dict[str, str] | None:
        if param is None:
            return {} if segments == prefix else None
        name, multi, suffix = param
        middle = len(segments) - len(prefix) - len(suffix)
        if middle < 1 or (middle > 1 and not multi):
            return None
        if segments[:len(prefix)] != prefix or segments[len(segments) - len(suffix):] != suffix:
            return None
        value = "/".join(segments[len(prefix):len(prefix) + middle])
        return {name: value} if value else None


class Application:
    """What the server calls for each request: `handle(request)` answers it (and maps
    errors to responses); `headers` go on every response that does not set its own."""

    def __init__(self, handle: Handler, *, max_body: int = 4 << 20,
                 headers: dict[str, str] | None = None,
                 error: Callable[[HTTPError], Response] | None = None, context: Any = None):
        self.handle = handle
        self.context = context  # what the handlers reach through request.app
        self.max_body = max_body
        self.headers = dict(headers or {})
        self.error = error or (lambda err: Response(err.status, text=err.message + "\n",
                                                    headers=err.headers))
        self._date = (0, "")

    def add_default_headers(self, headers: Headers) -> None:
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)))
        headers.setdefault("Date", self._date[1])
        for name, value in self.headers.items():
            headers.setdefault(name, value)


# -- connections and the server --------------------------------------------------------


class _Connection:
    """One client connection: requests one after the other (keep-alive), until either
    side closes or a handler takes the connection over."""

    def __init__(self, app: Application, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter):
        self.app = app
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.busy = False  # a request is being answered
        self.hijacked = False
        self._handler: asyncio.Future | None = None
        self._watch: asyncio.Task | None = None
        self._hung_up = False

    async def next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await self.reader.read(READ_CHUNK)
            except ConnectionError:
                data = b""
            self.h11.receive_data(data)

    async def send(self, event: Any) -> None:
        if self.writer.is_closing():
            raise ConnectionResetError("the client went away")
        data = self.h11.send(event)
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def send_head(self, request: Request, response: StreamResponse) -> None:
        headers = [(name.encode("latin-1"), value.encode("latin-1"))
                   for name, value in response.headers.items()]
        reason = _REASONS.get(response.status, "").encode()
        await self.send(h11.Response(status_code=response.status, headers=headers,
                                     reason=reason))

    async def hijack(self, request: Request, status: int, headers: dict[str, str]) -> RawStream:
        # the request's body first: what comes after it is the stream's
        if not await request.content.skip(DRAIN_LIMIT):
            raise HTTPError(400, "a request body too large to take the connection over")
        # from here on the stream's reader reads: a client's half-close is its stdin's end
        await self._stop_watching()
        response = StreamResponse(status, headers)
        self.app.add_default_headers(response.headers)
        request.response = response
        if status == 101:
            await self.send(h11.InformationalResponse(
                status_code=101, reason=b"UPGRADED",
                headers=[(k.encode("latin-1"), v.encode("latin-1"))
                         for k, v in response.headers.items()]))
        else:
            # no HTTP framing after the head: written as it is, never through h11 again
            head = [f"HTTP/1.1 {status} {_REASONS.get(status, '')}"]
            head += [f"{name}: {value}" for name, value in response.headers.items()]
            self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            await self.writer.drain()
        response.prepared = True
        self.hijacked = True
        initial, _ = self.h11.trailing_data
        return RawStream(self.reader, self.writer, bytes(initial))

    async def serve(self) -> None:
        try:
            while await self._serve_one():
                self.h11.start_next_cycle()
        except (ConnectionError, h11.LocalProtocolError, TimeoutError) as err:
            log.debug("connection ended: %s", err)
        except Exception as err:  # noqa: BLE001 - a handler failed mid-stream: end this one
            log.warning("connection ended by an error: %s", err, exc_info=err)
        finally:
            if not self.writer.is_closing():
                self.writer.close()

    async def _serve_one(self) -> bool:
        """Answer the next request; False when the connection is done."""
        try:
            event = await asyncio.wait_for(self.next_event(), KEEPALIVE_TIMEOUT)
        except h11.RemoteProtocolError as err:
            await self._refuse(err.error_status_hint, f"malformed HTTP request: {err}")
            return False
        if not isinstance(event, h11.Request):
            return False  # closed (or paused after a protocol switch)
        # h11 bounds a head that arrives in pieces; one that came whole is measured here
        head_size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
        if head_size > MAX_HEADER_BYTES:
            await self._refuse(431, "request headers too large")
            return False
        self.busy = True
        started = time.monotonic()
        request = Request(self, event, self.app)
        self._handler = asyncio.ensure_future(self._respond(request))
        if not _has_body(request):
            request.content.at_eof = isinstance(self.h11.next_event(), h11.EndOfMessage)
            self.watch_for_hangup()
        try:
            if not await self._handler:
                return False
        except asyncio.CancelledError:
            if self._hung_up:
                return False  # the handler was cancelled for it, not us
            raise
        finally:
            self._handler = None
            await self._stop_watching()
            self.busy = False
            if access_log.isEnabledFor(logging.DEBUG):
                status = request.response.status if request.response else "-"
                access_log.debug("%s %s %s %.3fs", request.method, request.raw_path, status,
                                 time.monotonic() - started)
        if self.h11.our_state is not h11.DONE:
            return False
        if self.h11.their_state is h11.SEND_BODY:
            # a body nobody read: skipped if it is small and on its way, else we close
            if self.h11.they_are_waiting_for_100_continue:
                return False
            try:
                if not await asyncio.wait_for(request.content.skip(DRAIN_LIMIT), DRAIN_WAIT):
                    return False
            except TimeoutError:
                return False
        return self.h11.their_state is h11.DONE

    async def _respond(self, request: Request) -> bool:
        """Run the handler and finish its response; False when the connection must end."""
        try:
            try:
                response = await self.app.handle(request)
            except HTTPError as err:
                response = self.app.error(err)
            if self.hijacked:
                return False
            if isinstance(response, Response) and not response.prepared:
                await response.send(request)
            elif not response.prepared:
                await response.prepare(request)
            await response.write_eof()
        except h11.RemoteProtocolError as err:
            log.debug("malformed request body: %s", err)
            return False
        return True

    # A client that hangs up while its request is answered cancels the handler (a
    # `docker events` or `logs -f` that waits for news would not notice otherwise). The
    # watch reads only once the request's body is in; bytes it gets instead of the end
    # (a pipelined request, a hijacked stream's first input) go back to h11's buffer.

    def watch_for_hangup(self) -> None:
        if self._handler is not None and self._watch is None and not self.hijacked:
            self._watch = asyncio.ensure_future(self._watch_reader())

    async def _watch_reader(self) -> None:
        try:
            data = await self.reader.read(READ_CHUNK)
        except ConnectionError:
            data = b""
        if data:
            self.h11.receive_data(data)
            return
        self.h11.receive_data(b"")
        if self._handler is not None and not self.hijacked:
            self._hung_up = True
            self._handler.cancel()

    async def _stop_watching(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None and not watch.done():
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)

    async def _refuse(self, status: int, message: str) -> None:
        """A request h11 could not parse: an answer without it (it is in its error state)."""
        body = (json.dumps({"message": message}) + "\n").encode()
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Bad Request')}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n")
        try:
            self.writer.write(head.encode() + body)
            await self.writer.drain()
        except ConnectionError:
            pass


def _has_body(request: Request) -> bool:
    length = request.headers.get("Content-Length")
    return "Transfer-Encoding" in request.headers or (length is not None and length != "0")


class Server:
    """Serves an Application on listening sockets; shutdown() waits for requests in
    flight (up to a grace period) and closes idle connections at once."""

    def __init__(self, app: Application):
        self.app = app
        self._servers: list[asyncio.AbstractServer] = []
        self._connections: dict[asyncio.Task, _Connection] = {}

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        connection = _Connection(self.app, reader, writer)
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = connection
        try:
            await connection.serve()
        finally:
            self._connections.pop(task, None)

    async def serve_unix(self, sock: Any) -> None:
        """On a bound, listening unix socket."""
        self._servers.append(await asyncio.start_unix_server(
            self._on_connection, sock=sock, limit=READ_CHUNK))

    async def serve_tcp(self, host: str | None, port: int, ssl: Any = None,
                        sock: Any = None) -> int:
        """On host:port (or a listening TCP `sock`); the port it listens on."""
        kwargs = {"sock": sock} if sock is not None else {"host": host, "port": port}
        server = await asyncio.start_server(self._on_connection, ssl=ssl, limit=READ_CHUNK,
                                            **kwargs)
        self._servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def shutdown(self, grace: float) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        for task, connection in list(self._connections.items()):
            if not connection.busy:
                task.cancel()
        busy = [task for task, c in self._connections.items() if c.busy]
        if busy:
            _, pending = await asyncio.wait(busy, timeout=grace)
            for task in pending:
                task.cancel()
        remaining = list(self._connections)
        if remaining:
            await asyncio.gather(*remaining, return_exceptions=True)
