"""The API server against fake services: routing, versions, errors, streams, hijack."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from typing import Any

import aiohttp
import pytest
from api_client import serving
from test_api_fakes import FakeContainers

from kobako.api.context import Context
from kobako.api.streams import parse_frames
from kobako.engine.config import DaemonConfig


def run_with_client(test, context: Context | None = None):
    async def main():
        ctx = context or Context(config=DaemonConfig(data_root="/nonexistent-kbk",
                                                     exec_root="/nonexistent-kbk"))
        async with serving(ctx) as client:
            return await test(client, ctx)
    return asyncio.run(main())


def with_fake() -> tuple[Context, FakeContainers]:
    fake = FakeContainers()
    return Context(containers=fake), fake  # type: ignore[arg-type]


def test_plugins_and_swarm_endpoints_answer_as_a_non_swarm_dockerd():
    async def t(client, ctx):
        r = await client.get("/v1.47/plugins")
        assert r.status == 200 and await r.json() == []
        r = await client.get("/swarm")
        assert r.status == 503 and "not part of a swarm" in (await r.json())["message"]
        for path in ("/services", "/nodes", "/tasks", "/secrets", "/configs"):
            r = await client.get(path)
            assert r.status == 503
            assert (await r.json())["message"].startswith("This node is not a swarm manager")
    run_with_client(t)


def test_ping_headers_get_and_head():
    async def t(client, ctx):
        r = await client.get("/_ping")
        assert r.status == 200 and await r.text() == "OK"
        for h in ("API-Version", "Docker-Experimental", "Ostype", "Builder-Version",
                  "Cache-Control"):
            assert h in r.headers, h
        assert r.headers["API-Version"] == "1.47"
        assert r.headers["Ostype"] == "linux"
        r = await client.head("/v1.44/_ping")
        assert r.status == 200 and r.headers["API-Version"] == "1.47"
    run_with_client(t)


def test_versions_prefix_and_range():
    async def t(client, ctx):
        for path in ("/version", "/v1.24/version", "/v1.47/version"):
            r = await client.get(path)
            assert r.status == 200, path
            doc = await r.json()
            assert doc["ApiVersion"] == "1.47" and doc["MinAPIVersion"] == "1.24"
            assert doc["Os"] == "linux"
        r = await client.get("/v1.12/version")
        assert r.status == 400
        assert "too old" in (await r.json())["message"]
        r = await client.get("/v1.99/version")
        assert r.status == 400
        assert "too new" in (await r.json())["message"]
    run_with_client(t)


def test_unknown_route_is_json_404():
    async def t(client, ctx):
        r = await client.get("/v1.45/nope")
        assert r.status == 404
        assert await r.json() == {"message": "page not found"}
    run_with_client(t)


def test_info_fields():
    async def t(client, ctx):
        doc = await (await client.get("/info")).json()
        for key in ("Containers", "ContainersRunning", "ContainersPaused", "ContainersStopped",
                    "Images", "Driver", "CgroupDriver", "CgroupVersion", "KernelVersion",
                    "OperatingSystem", "OSType", "Architecture", "NCPU", "MemTotal", "Name",
                    "ID", "DockerRootDir", "Runtimes", "DefaultRuntime", "SecurityOptions",
                    "RegistryConfig", "ServerVersion", "LoggingDriver"):
            assert key in doc, key
        assert doc["DefaultRuntime"] in doc["Runtimes"]
        assert doc["NCPU"] >= 1 and doc["MemTotal"] > 0
        assert "name=seccomp,profile=builtin" in doc["SecurityOptions"]
    run_with_client(t)


def test_containers_unavailable_is_501_but_list_is_empty():
    async def t(client, ctx):
        r = await client.post("/containers/create", json={"Image": "busybox"})
        assert r.status == 501
        assert "not available" in (await r.json())["message"]
        r = await client.get("/containers/json")
        assert r.status == 200 and await r.json() == []
    run_with_client(t)


def test_malformed_json_and_wrong_types_are_400():
    ctx, fake = with_fake()

    async def t(client, _):
        r = await client.post("/containers/create", data=b"{not json",
                              headers={"Content-Type": "application/json"})
        assert r.status == 400
        assert "invalid JSON" in (await r.json())["message"]
        r = await client.post("/containers/create", json=[1, 2])
        assert r.status == 400
        r = await client.post("/containers/create", json={"Image": "x", "Tty": "yes"})
        assert r.status == 400
        assert "Tty" in (await r.json())["message"]
        r = await client.post("/containers/create",
                              json={"Image": "x", "HostConfig": {"Memory": "lots"}})
        assert r.status == 400
        r = await client.get("/containers/json?limit=abc")
        assert r.status == 400
        r = await client.get("/containers/json?filters=notjson")
        assert r.status == 400
        assert not any(c[0] == "create" for c in fake.calls)
    run_with_client(t, ctx)


def test_huge_body_is_413_and_server_goes_on():
    ctx, fake = with_fake()

    async def t(client, _):
        r = await client.post("/containers/create", data=b"{" + b" " * (5 * 1024 * 1024) + b"}",
                              headers={"Content-Type": "application/json"})
        assert r.status == 413
        assert "message" in await r.json()
        r = await client.get("/_ping")
        assert r.status == 200
    run_with_client(t, ctx)


def test_container_lifecycle_status_codes():
    ctx, fake = with_fake()

    async def t(client, _):
        r = await client.post("/v1.45/containers/create?name=web",
                              json={"Image": "busybox", "Cmd": ["true"],
                                    "HostConfig": {"Memory": 1024}})
        assert r.status == 201
        body = await r.json()
        assert body["Id"] == "c" * 64 and body["Warnings"] == ["fake warning"]
        name, args, _ = fake.calls[-1]
        assert args[1] == {"Memory": 1024} and args[3] == "web"
        r = await client.post("/containers/create?name=web", json={"Image": "busybox"})
        assert r.status == 409
        assert (await client.post("/containers/web/start")).status == 204
        assert (await client.post("/containers/web/start")).status == 304
        assert (await client.post("/containers/web/kill?signal=HUP")).status == 204
        assert fake.calls[-1] == ("kill", ("web", "HUP"), {})
        assert (await client.post("/containers/web/stop?t=3")).status == 204
        assert fake.calls[-1] == ("stop", ("web", 3, None), {})
        assert (await client.post("/containers/web/stop")).status == 304
        assert (await client.post("/containers/web/kill")).status == 409
        assert (await client.post("/containers/nope/start")).status == 404
        msg = await (await client.get("/containers/nope/json")).json()
        assert msg == {"message": "No such container: nope"}
        doc = await (await client.get("/containers/web/json")).json()
        assert doc["State"]["Pid"] == 42
        assert (await client.post("/containers/web/resize?h=10&w=20")).status == 200
        assert (await client.post("/containers/web/resize?h=x")).status == 400
        top = await (await client.get("/containers/web/top?ps_args=aux")).json()
        assert top["Titles"] == ["PID", "CMD"]
        assert (await client.post("/containers/web/wait?condition=bogus")).status == 400
        assert (await client.delete("/containers/web?force=1&v=1")).status == 204
        assert fake.calls[-1] == ("remove", ("web", True, True, False), {})
    run_with_client(t, ctx)


def test_wait_sends_headers_before_the_exit():
    ctx, fake = with_fake()

    async def t(client, _):
        await client.post("/containers/create?name=waiter", json={"Image": "x"})
        resp = await client.post("/containers/waiter/wait")
        assert resp.status == 200  # headers arrived while the "container" still runs
        fake.exit_event.set()
        assert await resp.json() == {"StatusCode": 3, "Error": None}
    run_with_client(t, ctx)


def test_logs_are_multiplexed_without_tty():
    ctx, fake = with_fake()

    async def t(client, _):
        await client.post("/containers/create?name=logger", json={"Image": "x"})
        r = await client.get("/containers/logger/logs?stdout=1&stderr=1&tail=10&since=5")
        assert r.headers["Content-Type"] == "application/vnd.docker.multiplexed-stream"
        frames, rest = parse_frames(await r.read())
        assert frames == [(1, b"out line\n"), (2, b"err line\n")] and rest == b""
        kw = fake.calls[-1][2]
        assert kw["tail"] == "10" and kw["since"] == 5.0 and kw["follow"] is False
        r = await client.get("/containers/logger/logs")
        assert r.status == 400  # no stream chosen
    run_with_client(t, ctx)


async def _raw_request(port: int, head: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter,
                                                      bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode())
    await writer.drain()
    headers = await reader.readuntil(b"\r\n\r\n")
    return reader, writer, headers


async def _read_frames(reader: asyncio.StreamReader, until: bytes, timeout: float = 5.0
                       ) -> list[tuple[int, bytes]]:
    buf = b""
    deadline = time.monotonic() + timeout
    while until not in buf and time.monotonic() < deadline:
        chunk = await asyncio.wait_for(reader.read(4096), timeout)
        if not chunk:
            break
        buf += chunk
    frames, _ = parse_frames(buf)
    return frames


async def _read_to_eof(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """Everything until the server closes (each read within `timeout`)."""
    buf = b""
    while chunk := await asyncio.wait_for(reader.read(4096), timeout):
        buf += chunk
    return buf


def test_attach_upgrade_tcp_half_close_keeps_output():
    ctx, fake = with_fake()

    async def t(client, _):
        await client.post("/containers/create?name=att", json={"Image": "x"})
        port = client.server.port
        reader, writer, head = await _raw_request(
            port, "POST /v1.45/containers/att/attach?stream=1&stdin=1&stdout=1&stderr=1 HTTP/1.1\r\n"
                  "Host: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        assert b"application/vnd.docker.multiplexed-stream" in head
        writer.write(b"ping\n")
        await writer.drain()
        frames = await _read_frames(reader, b"got:ping")
        assert (1, b"hello\n") in frames
        writer.write_eof()  # CloseWrite, as the docker CLI does when stdin ends
        rest = await _read_to_eof(reader)
        frames, _ = parse_frames(rest)
        assert (2, b"bye\n") in frames  # output still flowed after the half-close
        assert fake.stdin_closed.is_set()
        writer.close()
    run_with_client(t, ctx)


def test_a_half_close_after_the_process_ended_still_gets_its_output():
    """Closing the stdin of a process that just ended fails (its relay hung up): the
    output still comes (docker exec -i lost it and said exit 0)."""
    ctx, fake = with_fake()
    fake.monitor_gone = True

    async def t(client, _):
        await client.post("/containers/create?name=att", json={"Image": "x"})
        reader, writer, head = await _raw_request(
            client.server.port,
            "POST /containers/att/attach?stream=1&stdin=1&stdout=1&stderr=1 HTTP/1.1\r\n"
            "Host: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        writer.write_eof()
        frames, _ = parse_frames(await _read_to_eof(reader))
        assert (1, b"hello\n") in frames and (2, b"bye\n") in frames
        assert not fake.detached
        writer.close()
    run_with_client(t, ctx)


def test_attach_raw_hijack_without_upgrade_and_detach_keys():
    ctx, fake = with_fake()

    async def t(client, _):
        await client.post("/containers/create?name=att", json={"Image": "x", "Tty": True})
        port = client.server.port
        reader, writer, head = await _raw_request(
            port, "POST /containers/att/attach?stream=1&stdin=1&stdout=1&detachKeys=ctrl-x "
                  "HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"application/vnd.docker.raw-stream" in head
        got = await asyncio.wait_for(reader.read(100), 5)
        assert got == b"hello\n"  # tty: raw, no frame header
        writer.write(b"ab\x18")  # "ab" then ctrl-x
        await writer.drain()
        await _read_to_eof(reader)  # the detach ends the hijacked connection
        assert fake.detached
        assert bytes(fake.stdin) == b"ab"
        writer.close()
    run_with_client(t, ctx)


def test_attach_bad_detach_keys_is_400_before_hijack():
    ctx, fake = with_fake()

    async def t(client, _):
        await client.post("/containers/create?name=att", json={"Image": "x"})
        r = await client.post("/containers/att/attach?stream=1&detachKeys=ctrl-1")
        assert r.status == 400
    run_with_client(t, ctx)


def test_client_disconnect_mid_attach_leaves_server_serving():
    ctx, fake = with_fake()

    async def t(client, _):
        await client.post("/containers/create?name=att", json={"Image": "x"})
        port = client.server.port
        reader, writer, head = await _raw_request(
            port, "POST /containers/att/attach?stream=1&stdin=1&stdout=1 HTTP/1.1\r\n"
                  "Host: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # vanish with a reset, not a half-close
        for _ in range(100):
            if fake.detached:
                break
            await asyncio.sleep(0.02)
        assert fake.detached  # the attachment was released
        assert (await client.get("/_ping")).status == 200
    run_with_client(t, ctx)


def test_exec_create_start_inspect():
    ctx, fake = with_fake()

    async def t(client, _):
        await client.post("/containers/create?name=att", json={"Image": "x"})
        r = await client.post("/containers/att/exec", json={"Cmd": "ls"})
        assert r.status == 400  # Cmd must be a list
        r = await client.post("/containers/att/exec", json={})
        assert r.status == 400
        r = await client.post("/containers/nope/exec", json={"Cmd": ["ls"]})
        assert r.status == 404
        r = await client.post("/containers/att/exec", json={"Cmd": ["ls"], "AttachStdout": True})
        assert r.status == 201
        exec_id = (await r.json())["Id"]
        r = await client.post(f"/exec/{exec_id}/start", json={"Detach": True})
        assert r.status == 200
        r = await client.post("/exec/nope/start", json={"Detach": False})
        assert r.status == 404
        doc = await (await client.get(f"/exec/{exec_id}/json")).json()
        assert doc["ExitCode"] == 0
        assert (await client.post(f"/exec/{exec_id}/resize?h=1&w=2")).status == 200
        port = client.server.port
        body = json.dumps({"Detach": False, "Tty": False})
        reader, writer, head = await _raw_request(
            port, f"POST /exec/{exec_id}/start HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                  f"Upgrade: tcp\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n{body}")
        assert head.startswith(b"HTTP/1.1 101")
        frames = await _read_frames(reader, b"hello")
        assert frames[0] == (1, b"hello\n")
        fake.exit_event.set()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed on exit
        writer.close()
    run_with_client(t, ctx)


def test_events_since_until_and_filters():
    async def t(client, ctx):
        now = time.time()
        ctx.events.publish("container", "create", "abc123", {"name": "one", "image": "busybox"})
        ctx.events.publish("image", "tag", "sha256:1", {"name": "busybox:latest"})
        until = now + 0.5
        r = await client.get(f"/events?since={now - 1}&until={until}"
                             '&filters={"type":["container"]}')
        text = await r.text()
        events = [json.loads(line) for line in text.splitlines() if line.strip()]
        assert [e["Action"] for e in events] == ["create"]
        e = events[0]
        assert e["Type"] == "container" and e["Actor"]["ID"] == "abc123"
        assert e["status"] == "create" and e["id"] == "abc123" and e["from"] == "busybox"
        assert isinstance(e["timeNano"], int) and e["scope"] == "local"
        r = await client.get("/events?since=10&until=5")
        assert r.status == 400
        r = await client.get('/events?filters={"bogus":["x"]}')
        assert r.status == 400
    run_with_client(t)


def test_events_live_stream_delivers_new_events():
    async def t(client, ctx):
        resp = await client.get("/events")
        assert resp.status == 200
        await asyncio.sleep(0.05)
        ctx.events.publish("container", "start", "x1", {"name": "n"})
        line = await asyncio.wait_for(resp.content.readline(), 5)
        assert json.loads(line)["Action"] == "start"
        resp.close()
        for _ in range(100):
            if ctx.events.subscriber_count == 0:
                break
            await asyncio.sleep(0.02)
        assert ctx.events.subscriber_count == 0  # the disconnected subscriber is gone
    run_with_client(t)


def test_swarm_leave_is_503_like_docker():
    async def t(client, ctx):
        r = await client.post("/v1.45/swarm/leave?force=1")
        assert r.status == 503
        assert (await r.json())["message"] == "This node is not part of a swarm"
    run_with_client(t)


def test_system_df_minimal():
    async def t(client, ctx):
        doc = await (await client.get("/system/df")).json()
        assert set(doc) >= {"LayersSize", "Images", "Containers", "Volumes", "BuildCache"}
    run_with_client(t)


@pytest.mark.parametrize("path", ["/containers/x/archive", "/images/search?term=x"])
def test_not_yet_routes_answer_501(path: str):
    async def t(client, ctx):
        r = await client.get(path)
        assert r.status == 501
    run_with_client(t)


def test_many_clients_concurrently():
    async def t(client, ctx):
        rs = await asyncio.gather(*(client.get("/_ping") for _ in range(50)))
        assert all(r.status == 200 for r in rs)
    run_with_client(t)


def _unused() -> Any:  # keep imports honest for type checkers
    return aiohttp, socket
