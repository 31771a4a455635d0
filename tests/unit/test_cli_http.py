"""The client's minimal HTTP/1.1 exchange, fed byte-exact answers over a socketpair."""

from __future__ import annotations

import io
import socket
import threading

import pytest

from kobako.client.http import Connection, HTTPError, parse_head


def exchange(answer: bytes, *, method: str = "GET", body=None, headers=None,
             dribble: bool = False) -> tuple[bytes, int, dict, bytes]:
    """Send one request through a socketpair; the peer answers `answer` and closes."""
    ours, theirs = socket.socketpair()
    received = bytearray()

    def peer() -> None:
        theirs.settimeout(5)
        while b"\r\n\r\n" not in received:
            received.extend(theirs.recv(65536))
        if isinstance(body, bytes):  # all of it, before answering and closing
            while len(received) < received.index(b"\r\n\r\n") + 4 + len(body):
                received.extend(theirs.recv(65536))
        elif body is not None:
            while not received.endswith(b"0\r\n\r\n"):
                received.extend(theirs.recv(65536))
        if dribble:  # one byte at a time: every parser boundary gets exercised
            for i in range(len(answer)):
                theirs.sendall(answer[i:i + 1])
        else:
            theirs.sendall(answer)
        theirs.close()

    t = threading.Thread(target=peer)
    t.start()
    conn = Connection(lambda: ours)
    conn.request(method, "/v1.47/x", body=body, headers=headers)
    resp = conn.getresponse(method)
    data = resp.read()
    t.join(5)
    conn.close()
    return bytes(received), resp.status, dict(resp.headers), data


@pytest.mark.parametrize("dribble", [False, True])
def test_chunked_response(dribble):
    answer = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: x\r\n\r\n"
              b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: y\r\n\r\n")
    _, status, headers, data = exchange(answer, dribble=dribble)
    assert status == 200 and data == b"hello world"
    assert headers["content-type"] == "x"


@pytest.mark.parametrize("dribble", [False, True])
def test_content_length_and_until_close(dribble):
    answer = b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nabcdeEXTRA"
    _, status, _, data = exchange(answer, dribble=dribble)
    assert status == 404 and data == b"abcde"
    _, status, _, data = exchange(b"HTTP/1.0 200 OK\r\n\r\nuntil the end", dribble=dribble)
    assert data == b"until the end"


def test_interim_100_continue_and_head():
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}"
    _, status, _, data = exchange(answer)
    assert status == 201 and data == b"{}"
    _, status, _, data = exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
                                  method="HEAD")
    assert status == 200 and data == b""


def test_request_bodies():
    sent, _, _, _ = exchange(b"HTTP/1.1 204 No Content\r\n\r\n", method="POST",
                             body=b'{"a":1}', headers={"Content-Type": "application/json"})
    head, _, payload = sent.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1.47/x HTTP/1.1\r\nHost: kobako\r\n")
    assert b"Content-Length: 7" in head and payload == b'{"a":1}'
    sent, _, _, _ = exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", method="POST",
                             body=io.BytesIO(b"x" * 300_000))
    head, _, payload = sent.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert payload == b"40000\r\n" + b"x" * 262144 + b"\r\n" + b"93e0\r\n" + \
        b"x" * 37856 + b"\r\n0\r\n\r\n"


def test_truncated_bodies_raise():
    with pytest.raises(HTTPError):
        exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(HTTPError):
        exchange(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
    with pytest.raises(HTTPError):
        exchange(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")


def test_parse_head():
    status, reason, headers = parse_head(b"HTTP/1.1 101 Switching Protocols\r\n"
                                         b"Upgrade: tcp\r\nX-A: 1\r\nx-a: 2")
    assert (status, reason) == (101, "Switching Protocols")
    assert headers["upgrade"] == "tcp" and headers.get("X-A") == "1, 2"
    with pytest.raises(HTTPError):
        parse_head(b"SSH-2.0-OpenSSH\r\n")
