"""The API application: routes (with and without /v1.NN/), version check, error mapping."""

from __future__ import annotations

import logging
import re

from kobako.api import build, containers, images, networks, system, volumes
from kobako.api import exec as exec_routes
from kobako.api import version as v
from kobako.api.context import API_VERSION, Context
from kobako.api.errors import error_response, http_error_response, response_for
from kobako.api.http import Application, Handler, HTTPError, Request, Router, StreamResponse

log = logging.getLogger("kobako.api")

# JSON bodies are small; image load/import stream their bodies and are not bounded by it.
MAX_JSON_BODY = 4 * 1024 * 1024
_VERSIONED = re.compile(r"/v([0-9]+\.[0-9]+)(/.*)\Z")


def create_app(context: Context | None = None) -> Application:
    router = Router()
    for routes in (system, images, build, containers, exec_routes, volumes, networks):
        routes.register(router.add)

    async def handle(request: Request) -> StreamResponse:
        path = request.path
        versioned = _VERSIONED.match(path)
        if versioned is not None:
            problem = v.check_request_version(versioned[1])
            if problem:
                return error_response(400, problem)
            request[API_VERSION], path = versioned[1], versioned[2]
        else:
            request[API_VERSION] = v.DEFAULT_API_VERSION
        try:
            handler, request.match_info = router.resolve(request.method, path)
            return await handler(request)
        except HTTPError as exc:
            if request.headers_sent:
                raise
            return http_error_response(exc)
        except (ConnectionResetError, BrokenPipeError):
            # the client went away (a `docker events` ended, compose down...): this
            # connection ends, quietly
            log.debug("%s %s: the client went away", request.method, request.path)
            raise
        except Exception as exc:  # noqa: BLE001 - the one place errors become responses
            if request.headers_sent:
                # Headers are out: a status can no longer be sent; end this connection only.
                log.warning("%s %s failed mid-stream: %s", request.method, request.path, exc)
                raise
            return response_for(exc)

    return Application(handle, max_body=MAX_JSON_BODY, error=http_error_response,
                       context=context or Context(), headers={
                           "Server": v.server_header(), "Api-Version": v.MAX_API_VERSION,
                           "Ostype": "linux"})


__all__ = ["create_app", "Handler"]
