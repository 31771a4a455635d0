"""Volume routes: HTTP <-> the engine's `VolumeService` (kobako.engine.volumes)."""

from __future__ import annotations

from typing import Any

from kobako.api import version as v
from kobako.api.context import API_VERSION, ctx
from kobako.api.errors import BadRequest
from kobako.api.http import Request, Response, json_response
from kobako.api.params import bool_param, filters_param, json_body
from kobako.engine.errors import NotImplementedYet


def _volumes(request: Request) -> Any:
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


async def list_volumes(request: Request) -> Response:
    return json_response(await _volumes(request).list(filters_param(request)))


async def create(request: Request) -> Response:
    body = await json_body(request)
    name, driver = body.get("Name") or "", body.get("Driver") or ""
    if not isinstance(name, str) or not isinstance(driver, str):
        raise BadRequest("json: Name and Driver must be strings")
    doc = await _volumes(request).create(name or None, driver or None,
                                         _string_map(body, "DriverOpts"),
                                         _string_map(body, "Labels"))
    return json_response(doc, status=201)


async def inspect(request: Request) -> Response:
    return json_response(await _volumes(request).inspect(request.match_info["name"]))


async def remove(request: Request) -> Response:
    await _volumes(request).remove(request.match_info["name"],
                                   force=bool_param(request, "force"))
    return Response(status=204)


async def prune(request: Request) -> Response:
    filters = filters_param(request)
    if v.parse(request[API_VERSION]) < (1, 42) and "all" not in filters:
        filters["all"] = ["true"]  # older clients' prune took named volumes too
    return json_response(await _volumes(request).prune(filters))


def register(add: Any) -> None:
    add("GET", "/volumes", list_volumes)
    add("POST", "/volumes/create", create)
    add("POST", "/volumes/prune", prune)
    add("GET", "/volumes/{name}", inspect)
    add("DELETE", "/volumes/{name}", remove)
