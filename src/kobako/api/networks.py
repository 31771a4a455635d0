"""Network routes: HTTP <-> `NetworkService` calls (list, inspect, create, connect,
disconnect, remove, prune), with Docker's status codes."""

from __future__ import annotations

from typing import Any

from kobako.api.context import ctx
from kobako.api.errors import BadRequest
from kobako.api.http import Request, Response, json_response
from kobako.api.params import bool_param, filters_param, json_body
from kobako.engine.errors import NotImplementedYet


def _svc(request: Request) -> Any:
    service = getattr(ctx(request).containers, "networks", None)
    if service is None:
        raise NotImplementedYet("networks are not available in this build")
    return service


async def list_networks(request: Request) -> Response:
    return json_response(await _svc(request).list(filters_param(request)))


async def inspect(request: Request) -> Response:
    doc = await _svc(request).inspect(request.match_info["id"], bool_param(request, "verbose"))
    return json_response(doc)


async def create(request: Request) -> Response:
    body = await json_body(request, allow_empty=False)
    for key, kind in (("Name", str), ("Driver", str), ("Options", dict), ("Labels", dict),
                      ("IPAM", dict), ("Internal", bool), ("Attachable", bool)):
        if body.get(key) is not None and not isinstance(body[key], kind):
            raise BadRequest(f"invalid JSON: {key} has the wrong type")
    return json_response(await _svc(request).create(body), status=201)


async def connect(request: Request) -> Response:
    body = await json_body(request, allow_empty=False)
    container = body.get("Container")
    if not isinstance(container, str) or not container:
        raise BadRequest("Container is required")
    config = body.get("EndpointConfig") or {}
    if not isinstance(config, dict):
        raise BadRequest("EndpointConfig must be a JSON object")
    await _svc(request).connect(request.match_info["id"], container, config)
    return Response(status=200)


async def disconnect(request: Request) -> Response:
    body = await json_body(request, allow_empty=False)
    container = body.get("Container")
    if not isinstance(container, str) or not container:
        raise BadRequest("Container is required")
    await _svc(request).disconnect(request.match_info["id"], container,
                                   bool(body.get("Force")))
    return Response(status=200)


async def remove(request: Request) -> Response:
    await _svc(request).remove(request.match_info["id"])
    return Response(status=204)


async def prune(request: Request) -> Response:
    return json_response(await _svc(request).prune(filters_param(request)))


def register(add) -> None:
    add("GET", "/networks", list_networks)
    add("POST", "/networks/create", create)
    add("POST", "/networks/prune", prune)
    add("GET", "/networks/{id}", inspect)
    add("POST", "/networks/{id}/connect", connect)
    add("POST", "/networks/{id}/disconnect", disconnect)
    add("DELETE", "/networks/{id}", remove)
