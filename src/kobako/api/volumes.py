"""Volume routes: HTTP <-> the engine's `VolumeService` (kobako.engine.volumes)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from kobako.api.context import ctx
from kobako.api.errors import BadRequest
from kobako.api.params import bool_param, filters_param, json_body
from kobako.engine.errors import NotImplementedYet


def _volumes(request: web.Request) -> Any:
    context = ctx(request)
    service = context.extra.get("volumes") or vars(context.containers).get("volumes")
    if service is None:
        raise NotImplementedYet("volumes are not available in this build yet")
    return service


def _string_map(body: dict[str, Any], key: str) -> dict[str, str]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise BadRequest(f"json: cannot unmarshal into Go struct field "
                         f"CreateOptions.{key} of type map[string]string")
    return value


async def list_volumes(request: web.Request) -> web.Response:
    return web.json_response(await _volumes(request).list(filters_param(request)))


async def create(request: web.Request) -> web.Response:
    body = await json_body(request)
    name, driver = body.get("Name") or "", body.get("Driver") or ""
    if not isinstance(name, str) or not isinstance(driver, str):
        raise BadRequest("json: Name and Driver must be strings")
    doc = await _volumes(request).create(name or None, driver or None,
                                         _string_map(body, "DriverOpts"),
                                         _string_map(body, "Labels"))
    return web.json_response(doc, status=201)


async def inspect(request: web.Request) -> web.Response:
    return web.json_response(await _volumes(request).inspect(request.match_info["name"]))


async def remove(request: web.Request) -> web.Response:
    await _volumes(request).remove(request.match_info["name"],
                                   force=bool_param(request, "force"))
    return web.Response(status=204)


async def prune(request: web.Request) -> web.Response:
    return web.json_response(await _volumes(request).prune(filters_param(request)))


def register(add: Any) -> None:
    add("GET", "/volumes", list_volumes)
    add("POST", "/volumes/create", create)
    add("POST", "/volumes/prune", prune)
    add("GET", "/volumes/{name}", inspect)
    add("DELETE", "/volumes/{name}", remove)
