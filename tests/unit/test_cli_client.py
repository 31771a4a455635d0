"""The sync API client against the real API app (fake services) on a unix socket."""

from __future__ import annotations

import threading

import pytest
from test_api_fakes import FakeContainers, ServerThread

from kobako.api.context import Context
from kobako.client.api import APIClient
from kobako.client.errors import ClientError, DaemonUnreachable


@pytest.fixture
def served(tmp_path):
    fake = FakeContainers()
    ctx = Context(containers=fake)  # type: ignore[arg-type]
    sock = str(tmp_path / "api.sock")
    with ServerThread(ctx, sock) as srv:
        yield srv, fake, APIClient(f"unix://{sock}")


def test_negotiates_down_to_the_daemon_version(served):
    srv, fake, client = served
    assert client.version == "1.47"
    assert client.url("/x", {"a": True, "b": None, "f": {"k": ["v"]}, "n": ["1", "2"]}) == \
        "/v1.47/x?a=1&f=%7B%22k%22%3A+%5B%22v%22%5D%7D&n=1&n=2"
    old = APIClient(client.host, version="1.30")
    assert old.get_json("/version")["ApiVersion"] == "1.47"


def test_errors_carry_status_and_message(served):
    srv, fake, client = served
    with pytest.raises(ClientError) as info:
        client.get_json("/containers/nope/json")
    assert info.value.status == 404 and info.value.message == "No such container: nope"
    with pytest.raises(ClientError) as info:
        client.post_json("/containers/create", body={"Image": "x", "Tty": "no"})
    assert info.value.status == 400


def test_unreachable_daemon(tmp_path):
    client = APIClient(f"unix://{tmp_path}/none.sock")
    with pytest.raises(DaemonUnreachable, match="Is the kobako daemon running"):
        client.get_json("/version")


def test_streams_json_and_frames(served):
    srv, fake, client = served
    client.post_json("/containers/create", {"name": "logs1"}, {"Image": "x"})
    resp = client.request("GET", "/containers/logs1/logs", {"stdout": 1, "stderr": 1})
    assert list(resp.iter_frames()) == [(1, b"out line\n"), (2, b"err line\n")]
    srv.context.events.publish("container", "create", "zz")
    resp = client.request("GET", "/events", {"since": "0", "until": "1"})
    # until is in the past: nothing replayed after it, the stream ends at once
    assert list(resp.iter_json()) == []


def test_hijack_attach_round_trip(served):
    srv, fake, client = served
    client.post_json("/containers/create", {"name": "att1"}, {"Image": "x"})
    hj = client.hijack("/containers/att1/attach", {"stream": 1, "stdin": 1, "stdout": 1,
                                                  "stderr": 1})
    assert hj.status == 101 and hj.multiplexed
    hj.sendall(b"abc")
    hj.close_write()
    got = list(hj.iter_frames())
    hj.close()
    out = b"".join(d for s, d in got if s == 1)
    assert out.startswith(b"hello\n") and b"got:abc" in out
    assert (2, b"bye\n") in got


def test_hijack_error_status_raises(served):
    srv, fake, client = served
    with pytest.raises(ClientError) as info:
        client.hijack("/containers/nope/attach", {"stream": 1})
    assert info.value.status == 404


def test_concurrent_requests_from_threads(served):
    srv, fake, client = served
    errors = []

    def worker():
        try:
            for _ in range(20):
                assert client.get_json("/version")["Os"] == "linux"
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
