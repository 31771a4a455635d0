"""The API application: routes (with and without /v1.NN/), version check, error mapping."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from kobako.api import build, containers, images, networks, system, volumes
from kobako.api import exec as exec_routes
from kobako.api import version as v
from kobako.api.context import CONTEXT_KEY, STREAM_STARTED, Context
from kobako.api.errors import error_response, http_exception_response, response_for

log = logging.getLogger("kobako.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# JSON bodies are small; image load/import stream their bodies and are not bounded by it.
MAX_JSON_BODY = 4 * 1024 * 1024
API_VERSION_KEY: web.RequestKey[str] = web.RequestKey("api_version", str)


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    requested = request.match_info.get("version")
    if requested is not None:
        problem = v.check_request_version(requested[1:])
        if problem:
            return error_response(400, problem)
        request[API_VERSION_KEY] = requested[1:]
    else:
        request[API_VERSION_KEY] = v.DEFAULT_API_VERSION
    try:
        resp = await handler(request)
    except web.HTTPException as exc:
        return http_exception_response(exc)
    except (ConnectionResetError, BrokenPipeError):
        # the client went away (a `docker events` ended, compose down...): drop just this
        # request, quietly, as aiohttp does for a request cancelled by a disconnect
        log.debug("%s %s: the client went away", request.method, request.path)
        raise asyncio.CancelledError() from None
    except Exception as exc:  # noqa: BLE001 - the one place errors become responses
        if _stream_started(request):
            # Headers are out: a status can no longer be sent; end this connection only.
            log.warning("%s %s failed mid-stream: %s", request.method, request.path, exc)
            raise
        return response_for(exc)
    return resp


def _stream_started(request: web.Request) -> bool:
    return bool(request.get(STREAM_STARTED))


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = v.server_header()  # aiohttp set its own just before
    response.headers.setdefault("Api-Version", v.MAX_API_VERSION)
    response.headers.setdefault("Ostype", "linux")


def create_app(context: Context | None = None) -> web.Application:
    app = web.Application(middlewares=[api_middleware], client_max_size=MAX_JSON_BODY)
    app[CONTEXT_KEY] = context or Context()
    app.on_response_prepare.append(_server_header)

    def add(method: str, path: str, handler: Handler) -> None:
        app.router.add_route(method, path, handler)
        app.router.add_route(method, "/{version:" + v.VERSION_PATTERN + "}" + path, handler)

    system.register(add)
    images.register(add)
    build.register(add)
    containers.register(add)
    exec_routes.register(add)
    volumes.register(add)
    networks.register(add)
    return app
