"""Container routes: HTTP <-> `ContainerService` calls, with Docker's status codes."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from typing import Any

from kobako.api import version as v
from kobako.api.context import API_VERSION, ctx
from kobako.api.errors import BadRequest
from kobako.api.http import Request, Response, StreamResponse, WebSocket, json_response
from kobako.api.params import (
    CONFIG_TYPES,
    HOST_CONFIG_TYPES,
    bool_param,
    check_types,
    filters_param,
    int_param,
    json_body,
    str_param,
)
from kobako.api.services import StreamIO
from kobako.api.streams import (
    MULTIPLEXED_STREAM,
    RAW_STREAM,
    DetachScanner,
    Hijacked,
    JSONStream,
    frame,
    hijack,
    parse_detach_keys,
    stream_tar,
)
from kobako.engine.errors import NotImplementedYet
from kobako.engine.events import parse_timestamp

log = logging.getLogger("kobako.api.containers")



def _ref(request: Request) -> str:
    return request.match_info["id"]


async def create(request: Request) -> Response:
    svc = ctx(request).containers
    name = str_param(request, "name") or None
    body = await json_body(request, allow_empty=False)
    host_config = body.pop("HostConfig", None) or {}
    networking = body.pop("NetworkingConfig", None) or {}
    if not isinstance(host_config, dict):
        raise BadRequest("HostConfig must be a JSON object")
    if not isinstance(networking, dict):
        raise BadRequest("NetworkingConfig must be a JSON object")
    check_types(body, CONFIG_TYPES, "container.Config")
    check_types(host_config, HOST_CONFIG_TYPES, "container.HostConfig")
    if not body.get("Image"):
        raise BadRequest("no image specified" if "Image" not in body else "image is required")
    platform = str_param(request, "platform") or None
    result = await svc.create(body, host_config, networking, name, platform)
    warnings = result.get("Warnings") or []
    return json_response({"Id": result["Id"], "Warnings": warnings}, status=201)


async def list_containers(request: Request) -> Response:
    svc = ctx(request).containers
    result = await svc.list(all=bool_param(request, "all"), limit=int_param(request, "limit"),
                            size=bool_param(request, "size"), filters=filters_param(request))
    return json_response(result)


async def inspect(request: Request) -> Response:
    svc = ctx(request).containers
    doc = await svc.inspect(_ref(request), bool_param(request, "size"))
    version = v.parse(request[API_VERSION])
    for entry in (doc.get("NetworkSettings") or {}).get("Networks", {}).values():
        # older APIs: a user network's Aliases hold the short ID, and no DNSNames yet
        if entry and entry.get("DNSNames") and version < (1, 45):
            aliases = entry.get("Aliases") or []
            if doc["Id"][:12] not in aliases:
                entry["Aliases"] = [*aliases, doc["Id"][:12]]
        if entry and version < (1, 44):
            entry.pop("DNSNames", None)
    return json_response(doc)


async def start(request: Request) -> Response:
    await ctx(request).containers.start(_ref(request), str_param(request, "detachKeys"))
    return Response(status=204)


async def stop(request: Request) -> Response:
    await ctx(request).containers.stop(_ref(request), int_param(request, "t"),
                                       str_param(request, "signal") or None)
    return Response(status=204)


async def restart(request: Request) -> Response:
    await ctx(request).containers.restart(_ref(request), int_param(request, "t"),
                                          str_param(request, "signal") or None)
    return Response(status=204)


async def kill(request: Request) -> Response:
    await ctx(request).containers.kill(_ref(request), str_param(request, "signal") or None)
    return Response(status=204)


async def pause(request: Request) -> Response:
    await ctx(request).containers.pause(_ref(request))
    return Response(status=204)


async def unpause(request: Request) -> Response:
    await ctx(request).containers.unpause(_ref(request))
    return Response(status=204)


async def remove(request: Request) -> Response:
    await ctx(request).containers.remove(_ref(request), force=bool_param(request, "force"),
                                         volumes=bool_param(request, "v"),
                                         link=bool_param(request, "link"))
    return Response(status=204)


_WAIT_CONDITIONS = ("not-running", "next-exit", "removed")


async def wait(request: Request) -> StreamResponse:
    condition = str_param(request, "condition") or "not-running"
    if condition not in _WAIT_CONDITIONS:
        raise BadRequest(f"invalid condition: {condition!r}")
    waiter = await ctx(request).containers.wait(_ref(request), condition)
    # Headers go out at once (the docker CLI starts the container only after that).
    resp = StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    try:
        result = await waiter
        body = {"StatusCode": int(result.get("StatusCode", 0)),
                "Error": result.get("Error")}
    except Exception as exc:  # the wait itself failed: report it in Docker's shape
        body = {"StatusCode": -1, "Error": {"Message": str(exc)}}
    try:
        await resp.write(json.dumps(body).encode() + b"\n")
        await resp.write_eof()
    except ConnectionError:
        log.debug("wait client went away before the container exited")
    return resp


async def logs(request: Request) -> StreamResponse:
    svc = ctx(request).containers
    stdout, stderr = bool_param(request, "stdout"), bool_param(request, "stderr")
    if not (stdout or stderr):
        raise BadRequest("Bad parameters: you must choose at least one stream")
    tty, chunks = await svc.logs(
        _ref(request), follow=bool_param(request, "follow"), stdout=stdout, stderr=stderr,
        since=parse_timestamp(str_param(request, "since")),
        until=parse_timestamp(str_param(request, "until")),
        timestamps=bool_param(request, "timestamps"), tail=str_param(request, "tail") or "all",
        details=bool_param(request, "details"))
    resp = StreamResponse(status=200, headers={
        "Content-Type": RAW_STREAM if tty else MULTIPLEXED_STREAM})
    await resp.prepare(request)
    async for stream, data in chunks:
        await resp.write(data if tty else frame(stream, data))
    await resp.write_eof()
    return resp


async def pump(hj: Hijacked, sio: StreamIO, *, stdin: bool, detach_keys: str | None) -> None:
    """Copy output to the client and the client's input to stdin until one side ends.

    Output ended (process exited): close the connection. Detach keys: detach, close.
    Client half-closed: its input ended (the engine closes stdin if the container has
    StdinOnce), keep sending output. Client gone: stop. As dockerd, on a terminal the
    end of the client's input ends the attachment, and only there are detach keys
    looked for: other input is data.
    """
    scanner = DetachScanner(parse_detach_keys(detach_keys)) if stdin and sio.tty else None

    async def copy_out() -> None:
        async for stream, data in sio.output:
            await hj.write_stream(stream, data)

    async def copy_in() -> str:
        while True:
            data = await hj.read()
            if data is None:
                if hj.half_closed and not (stdin and sio.tty):
                    # the client is done sending (the docker CLI half-closes at once when
                    # stdin is not attached): keep streaming output until the process ends
                    if sio.close_stdin is not None:
                        await _to_process(sio.close_stdin())
                    return "stdin-closed"
                return "gone"
            if not stdin or sio.write_stdin is None:
                continue  # not attached to stdin: discard
            forward, detached = scanner.feed(data) if scanner else (data, False)
            if forward and not await _to_process(sio.write_stdin(forward)):
                return "stdin-closed"
            if detached:
                return "detached"

    out_task = asyncio.ensure_future(copy_out())
    in_task = asyncio.ensure_future(copy_in())
    released = False

    async def release() -> None:
        nonlocal released
        if not released and sio.detach is not None:
            released = True
            await sio.detach()

    try:
        done, _ = await asyncio.wait({out_task, in_task}, return_when=asyncio.FIRST_COMPLETED)
        if in_task in done and in_task.result() == "stdin-closed":
            await out_task  # the process may still answer what it read
        elif in_task in done:
            await release()  # detach keys, or the client went away
        for t in done:
            t.result()  # surface errors
    except (ConnectionResetError, BrokenPipeError):
        log.debug("attach client disconnected")
        await release()
    except asyncio.CancelledError:
        # cancelled (the daemon shuts down, the client went away): still release the
        # attachment (shielded, so the cleanup itself is not cancelled).
        await asyncio.shield(release())
        raise
    finally:
        for t in (out_task, in_task):
            t.cancel()
        await asyncio.gather(out_task, in_task, return_exceptions=True)
        await hj.close()


async def _to_process(sending: Awaitable[None]) -> bool:
    """Input for the process; False when it has ended and its relay hung up (what it
    wrote before is still to be sent: that is no client going away)."""
    try:
        await sending
    except (ConnectionResetError, BrokenPipeError):
        return False
    return True


async def attach(request: Request) -> StreamResponse:
    svc = ctx(request).containers
    want_stdin = bool_param(request, "stdin")
    detach_keys = str_param(request, "detachKeys")
    if detach_keys:
        parse_detach_keys(detach_keys)  # a bad spec is a 400 before the hijack
    sio = await svc.attach(_ref(request), stream=bool_param(request, "stream"),
                           logs=bool_param(request, "logs"), stdin=want_stdin,
                           stdout=bool_param(request, "stdout"),
                           stderr=bool_param(request, "stderr"), detach_keys=detach_keys)
    hj = await hijack(request, multiplexed=not sio.tty)
    await pump(hj, sio, stdin=want_stdin, detach_keys=detach_keys)
    return hj.response


async def attach_ws(request: Request) -> StreamResponse:
    """GET /containers/{id}/attach/ws: the attachment over a websocket, as dockerd: the
    output as binary messages (never multiplexed), the client's messages as stdin."""
    svc = ctx(request).containers
    want_stdin = bool_param(request, "stdin")
    sio = await svc.attach(_ref(request), stream=bool_param(request, "stream"),
                           logs=bool_param(request, "logs"), stdin=want_stdin,
                           stdout=bool_param(request, "stdout"),
                           stderr=bool_param(request, "stderr"), detach_keys=None)
    ws = WebSocket()
    await ws.prepare(request)

    async def copy_out() -> None:
        async for _stream, data in sio.output:
            await ws.send_bytes(data)

    async def copy_in() -> None:
        async for message in ws:  # until the client closes
            data = message.encode() if isinstance(message, str) else message
            if want_stdin and sio.write_stdin is not None:
                await sio.write_stdin(data)

    tasks = [asyncio.ensure_future(copy_out()), asyncio.ensure_future(copy_in())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if sio.detach is not None:
            await asyncio.shield(sio.detach())
        await ws.close()
    assert request.response is not None
    return request.response


def _size(request: Request) -> tuple[int, int]:
    h, w = int_param(request, "h"), int_param(request, "w")
    if h is None or w is None or h < 0 or w < 0:
        raise BadRequest("h and w are required non-negative integers")
    return h, w


async def resize(request: Request) -> Response:
    h, w = _size(request)
    await ctx(request).containers.resize(_ref(request), h, w)
    return Response(status=200)


async def top(request: Request) -> Response:
    return json_response(await ctx(request).containers.top(
        _ref(request), str_param(request, "ps_args") or None))


async def rename(request: Request) -> Response:
    await ctx(request).containers.rename(_ref(request), str_param(request, "name") or "")
    return Response(status=204)


async def prune(request: Request) -> Response:
    return json_response(await ctx(request).containers.prune(filters_param(request)))


async def stats(request: Request) -> StreamResponse:
    stream = bool_param(request, "stream", default=True)
    one_shot = bool_param(request, "one-shot")
    if stream and one_shot:
        raise BadRequest("cannot have stream=true and one-shot=true")
    items = await ctx(request).containers.stats(_ref(request), stream, one_shot=one_shot)
    out = JSONStream(request)
    await out.start()
    async for item in items:
        await out.send(item)
    return await out.finish()


async def changes(request: Request) -> Response:
    return json_response(await ctx(request).containers.changes(_ref(request)))


async def export(request: Request) -> StreamResponse:
    return await stream_tar(request, await ctx(request).containers.export(_ref(request)))


# -- cp, update, commit ------------------------------------------------------------------

PATH_STAT_HEADER = "X-Docker-Container-Path-Stat"


def _stat_header(doc: dict[str, Any]) -> str:
    import base64

    return base64.b64encode(json.dumps(doc).encode()).decode()


def _archive_path(request: Request) -> str:
    return str_param(request, "path") or ""  # the service answers a missing one (400)


async def archive_head(request: Request) -> Response:
    doc = await ctx(request).containers.archive_stat(_ref(request), _archive_path(request))
    return Response(status=200, headers={PATH_STAT_HEADER: _stat_header(doc)})


async def archive_get(request: Request) -> StreamResponse:
    head, chunks = await ctx(request).containers.archive_get(_ref(request),
                                                             _archive_path(request))
    return await stream_tar(request, chunks, {PATH_STAT_HEADER: _stat_header(head)})


async def archive_put(request: Request) -> Response:
    import tempfile

    from kobako.api.images import _spool_dir

    path = _archive_path(request)
    svc = ctx(request).containers
    with tempfile.TemporaryFile(dir=_spool_dir(request)) as body:
        while chunk := await request.content.read(256 * 1024):
            await asyncio.to_thread(body.write, chunk)
        body.seek(0)
        await svc.archive_put(
            _ref(request), path, body,
            no_overwrite_dir_non_dir=bool_param(request, "noOverwriteDirNonDir"),
            copy_uid_gid=bool_param(request, "copyUIDGID"))
    return Response(status=200)


_UPDATE_TYPES = {k: v for k, v in HOST_CONFIG_TYPES.items() if k in (
    "CpuShares", "Memory", "NanoCpus", "CpuPeriod", "CpuQuota", "CpusetCpus", "CpusetMems",
    "MemoryReservation", "MemorySwap", "BlkioWeight", "PidsLimit", "CpuRealtimePeriod",
    "CpuRealtimeRuntime", "OomKillDisable", "RestartPolicy", "KernelMemory",
    "MemorySwappiness", "BlkioWeightDevice", "BlkioDeviceReadBps", "BlkioDeviceWriteBps",
    "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps")}


async def update(request: Request) -> Response:
    body = await json_body(request)
    check_types(body, _UPDATE_TYPES, "container.UpdateConfig")
    result = await ctx(request).containers.update(_ref(request), body)
    return json_response({"Warnings": result.get("Warnings") or []})


async def commit(request: Request) -> Response:
    from kobako.api.images import _join_ref

    container = str_param(request, "container")
    if not container:
        raise BadRequest("container is required")
    body = await json_body(request)
    check_types(body, CONFIG_TYPES, "container.Config")
    repo = str_param(request, "repo") or ""
    reference = _join_ref(repo, str_param(request, "tag") or "latest") if repo else None
    result = await ctx(request).containers.commit(
        container, reference=reference, changes=request.query.getall("changes", []),
        config=body or None, comment=str_param(request, "comment") or "",
        author=str_param(request, "author") or "",
        pause=bool_param(request, "pause", default=True))
    return json_response({"Id": result["Id"]}, status=201)


async def not_yet(request: Request) -> Response:
    raise NotImplementedYet(f"{request.method} {request.path} is not implemented yet")


def register(add: Any) -> None:
    add("POST", "/containers/create", create)
    add("GET", "/containers/json", list_containers)
    add("POST", "/containers/prune", prune)
    add("GET", "/containers/{id}/json", inspect)
    add("POST", "/containers/{id}/start", start)
    add("POST", "/containers/{id}/stop", stop)
    add("POST", "/containers/{id}/restart", restart)
    add("POST", "/containers/{id}/kill", kill)
    add("POST", "/containers/{id}/pause", pause)
    add("POST", "/containers/{id}/unpause", unpause)
    add("POST", "/containers/{id}/wait", wait)
    add("GET", "/containers/{id}/logs", logs)
    add("POST", "/containers/{id}/attach", attach)
    add("GET", "/containers/{id}/attach/ws", attach_ws)
    add("POST", "/containers/{id}/resize", resize)
    add("GET", "/containers/{id}/top", top)
    add("POST", "/containers/{id}/rename", rename)
    add("GET", "/containers/{id}/stats", stats)
    add("GET", "/containers/{id}/changes", changes)
    add("GET", "/containers/{id}/export", export)
    add("GET", "/containers/{id}/archive", archive_get)
    add("HEAD", "/containers/{id}/archive", archive_head)
    add("PUT", "/containers/{id}/archive", archive_put)
    add("POST", "/containers/{id}/update", update)
    add("POST", "/commit", commit)
    add("DELETE", "/containers/{id:.+}", remove)  # with link=1: /containers/parent/alias
