"""Exec routes: create, start (hijacked stream or detached), inspect, resize."""

from __future__ import annotations

from typing import Any

from kobako.api.containers import pump
from kobako.api.context import ctx
from kobako.api.errors import BadRequest, message_for
from kobako.api.http import Request, Response, StreamResponse, json_response
from kobako.api.params import check_types, int_param, json_body
from kobako.api.streams import STDOUT, hijack, parse_detach_keys
from kobako.engine.errors import EngineError

EXEC_TYPES: dict[str, Any] = {
    "AttachStdin": bool, "AttachStdout": bool, "AttachStderr": bool, "DetachKeys": str,
    "Tty": bool, "Env": list, "Cmd": list, "Privileged": bool, "User": str,
    "WorkingDir": str, "ConsoleSize": list,
}


async def create(request: Request) -> Response:
    body = await json_body(request, allow_empty=False)
    check_types(body, EXEC_TYPES, "types.ExecConfig")
    cmd = body.get("Cmd")
    if not cmd or not all(isinstance(c, str) for c in cmd):
        raise BadRequest("No exec command specified")
    if body.get("DetachKeys"):
        parse_detach_keys(body["DetachKeys"])
    result = await ctx(request).containers.exec_create(request.match_info["id"], body)
    return json_response({"Id": result["Id"]}, status=201)


async def start(request: Request) -> StreamResponse:
    body = await json_body(request)
    check_types(body, {"Detach": bool, "Tty": bool, "ConsoleSize": list}, "types.ExecStartCheck")
    exec_id = request.match_info["id"]
    svc = ctx(request).containers
    if body.get("Detach"):
        await svc.exec_start(exec_id, detach=True, tty=bool(body.get("Tty")), detach_keys=None)
        return Response(status=200)
    info = await svc.exec_inspect(exec_id)  # an unknown exec is a 404, before the takeover
    cfg = info.get("ProcessConfig", {}) or {}
    # As dockerd: take the connection over, then start; a start that fails says why in
    # the stream, and the exec's inspect has its exit code (126). The framing is
    # the start's Tty (the process's terminal is the create's).
    hj = await hijack(request, multiplexed=not body.get("Tty"))
    try:
        sio = await svc.exec_start(exec_id, detach=False, tty=bool(body.get("Tty")),
                                   detach_keys=None)
    except EngineError as err:
        await hj.write_stream(STDOUT, f"{message_for(err)}\r\n".encode())
        await hj.close()
        return hj.response
    await pump(hj, sio, stdin=bool(info.get("OpenStdin", cfg.get("OpenStdin", True))),
               detach_keys=info.get("DetachKeys") or None)
    return hj.response


async def inspect(request: Request) -> Response:
    return json_response(await ctx(request).containers.exec_inspect(request.match_info["id"]))


async def resize(request: Request) -> Response:
    h, w = int_param(request, "h"), int_param(request, "w")
    if h is None or w is None or h < 0 or w < 0:
        raise BadRequest("h and w are required non-negative integers")
    await ctx(request).containers.exec_resize(request.match_info["id"], h, w)
    return Response(status=200)


def register(add: Any) -> None:
    add("POST", "/containers/{id}/exec", create)
    add("POST", "/exec/{id}/start", start)
    add("POST", "/exec/{id}/resize", resize)
    add("GET", "/exec/{id}/json", inspect)
