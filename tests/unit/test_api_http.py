"""kobako.api.http on its own: routing, framing both ways, keep-alive, hijack, hang-ups."""

from __future__ import annotations

import asyncio
import json

import pytest

from kobako.api.http import (
    Application,
    Headers,
    HTTPError,
    Query,
    Request,
    Response,
    Router,
    Server,
    StreamResponse,
    json_response,
)


async def _noop(request: Request) -> Response:
    return Response()


def test_router_segments_methods_and_multi_segment_names():
    router = Router()
    router.add("GET", "/containers/json", _noop)
    router.add("GET", "/containers/{id}/json", _noop)
    router.add("DELETE", "/containers/{id}", _noop)
    router.add("GET", "/images/{name:.+}/json", _noop)
    assert router.resolve("GET", "/containers/json")[1] == {}
    assert router.resolve("GET", "/containers/abc/json")[1] == {"id": "abc"}
    assert router.resolve("GET", "/images/localhost:5000/a/b:1/json")[1] == {
        "name": "localhost:5000/a/b:1"}
    with pytest.raises(HTTPError) as info:
        router.resolve("POST", "/containers/abc")
    assert info.value.status == 405 and info.value.headers["Allow"] == "DELETE"
    for path in ("/containers/a/b/json", "/images/json", "/nope", "/containers//json"):
        with pytest.raises(HTTPError) as info:
            router.resolve("GET", path)
        assert info.value.status == 404, path
    with pytest.raises(ValueError):
        router.add("GET", "/x/{a:[0-9]+}", _noop)


def test_headers_and_query():
    headers = Headers([("Content-Type", "a"), ("X-Many", "1"), ("x-many", "2")])
    assert headers.get("content-type") == "a" and headers.getall("X-MANY") == ["1", "2"]
    headers["CONTENT-TYPE"] = "b"
    assert headers.items()[-1] == ("CONTENT-TYPE", "b") and "content-type" in headers
    assert headers.setdefault("Content-Type", "c") == "b"
    query = Query("t=a&t=b&q=x+y%21&empty=")
    assert query.getall("t") == ["a", "b"] and query.get("q") == "x y!"
    assert query.get("empty") == "" and query.get("none", "d") == "d"
    assert query.getall("none", []) == [] and "t" in query


async def _handler(request: Request) -> StreamResponse:
    if request.path == "/echo":
        body = await request.read()
        return json_response({"size": len(body), "method": request.method,
                              "q": request.query.get("q")})
    if request.path == "/stream":
        resp = StreamResponse(200, {"Content-Type": "text/plain"})
        await resp.prepare(request)
        for i in range(3):
            await resp.write(f"{i}\n".encode())
        await resp.write_eof()
        return resp
    if request.path == "/wait":
        request.app.context["waiting"].set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            request.app.context["cancelled"].set()
            raise
    if request.path == "/hijack":
        stream = await request.hijack(101 if request.headers.get("Upgrade") else 200,
                                      {"Content-Type": "raw"})
        while (data := await stream.read()) is not None:
            await stream.write(b"echo:" + data)
        await stream.write(b"half-closed" if stream.half_closed else b"gone")
        await stream.close()
        return request.response  # type: ignore[return-value]
    raise HTTPError(404, "page not found")


def run(test):
    async def main():
        context = {"waiting": asyncio.Event(), "cancelled": asyncio.Event()}
        app = Application(_handler, max_body=1000, context=context,
                          headers={"Server": "test"})
        server = Server(app)
        port = await server.serve_tcp("127.0.0.1", 0)
        try:
            return await test(port, context)
        finally:
            await server.shutdown(1.0)
    return asyncio.run(main())


async def _connect(port: int):
    return await asyncio.open_connection("127.0.0.1", port)


async def _response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = [line.split(b":")[1] for line in head.split(b"\r\n")
              if line.lower().startswith(b"content-length:")]
    body = await reader.readexactly(int(length[0])) if length else b""
    return head, body


def test_keep_alive_pipelining_chunked_bodies_and_100_continue():
    async def t(port, _):
        reader, writer = await _connect(port)
        # two pipelined requests, the second with a chunked body
        writer.write(b"POST /echo?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                     b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"4\r\nwxyz\r\n0\r\n\r\n")
        head, body = await _response(reader)
        assert head.startswith(b"HTTP/1.1 200") and b"Server: test" in head
        assert b"Content-Type: application/json" in head and b"Date: " in head
        assert json.loads(body) == {"size": 3, "method": "POST", "q": "1"}
        head, body = await _response(reader)
        assert json.loads(body)["size"] == 4
        # Expect: 100-continue is answered when the handler reads the body
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim.startswith(b"HTTP/1.1 100")
        writer.write(b"ok")
        head, body = await _response(reader)
        assert json.loads(body)["size"] == 2
        # a body over the limit: 413, and the connection ends
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
        head, body = await _response(reader)
        assert head.startswith(b"HTTP/1.1 413")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    run(t)


def test_streamed_response_is_chunked_and_head_has_no_body():
    async def t(port, _):
        reader, writer = await _connect(port)
        writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 5)
        assert b"Transfer-Encoding: chunked" in data
        assert data.endswith(b"2\r\n2\n\r\n0\r\n\r\n")
        writer.close()
        reader, writer = await _connect(port)
        writer.write(b"HEAD /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 5)
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\n")
        writer.close()
    run(t)


def test_malformed_request_and_huge_headers_are_refused():
    async def t(port, _):
        for request, status in ((b"NOT HTTP\r\n\r\n", b"400"),
                                (b"GET /echo HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 100_000
                                 + b"\r\n\r\n", b"431")):
            reader, writer = await _connect(port)
            writer.write(request)
            data = await asyncio.wait_for(reader.read(), 5)
            assert data.split(b"\r\n")[0].split()[1] == status
            assert b'"message"' in data
            writer.close()
    run(t)


def test_a_client_that_hangs_up_cancels_its_handler():
    async def t(port, context):
        reader, writer = await _connect(port)
        writer.write(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(context["waiting"].wait(), 5)
        writer.close()
        await asyncio.wait_for(context["cancelled"].wait(), 5)
    run(t)


@pytest.mark.parametrize("upgrade", [True, False])
def test_hijack_keeps_early_input_and_tells_a_half_close(upgrade):
    async def t(port, _):
        reader, writer = await _connect(port)
        extra = b"Connection: Upgrade\r\nUpgrade: tcp\r\n" if upgrade else b""
        # input sent right behind the request is the stream's, not a next request
        writer.write(b"POST /hijack HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n" + extra
                     + b"\r\nearly")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101" if upgrade else b"HTTP/1.1 200")
        assert b"Content-Type: raw" in head and b"chunked" not in head
        assert await asyncio.wait_for(reader.readexactly(10), 5) == b"echo:early"
        writer.write(b"more")
        assert await asyncio.wait_for(reader.readexactly(9), 5) == b"echo:more"
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b"half-closed"
        writer.close()
    run(t)
