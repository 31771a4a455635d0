"""Exceptions -> Docker's HTTP status codes and `{"message": ...}` bodies, in one place."""

from __future__ import annotations

import json
import logging

from kobako.api.http import HTTPError, Response
from kobako.engine import errors as engine_errors
from kobako.image import errors as image_errors

log = logging.getLogger("kobako.api")


class BadRequest(engine_errors.InvalidParameter):
    """A request the API layer itself rejects (bad query value, malformed JSON body)."""


# Most specific first: the first isinstance match wins.
_STATUS: list[tuple[type[BaseException], int]] = [
    (engine_errors.NotModified, 304),
    (engine_errors.InvalidParameter, 400),
    (engine_errors.Unauthorized, 401),
    (engine_errors.Forbidden, 403),
    (engine_errors.NotFound, 404),
    (engine_errors.Conflict, 409),
    (engine_errors.NotImplementedYet, 501),
    (engine_errors.Unavailable, 503),
    (image_errors.NotFound, 404),
    (image_errors.InvalidReference, 400),
    (image_errors.InvalidParameter, 400),
    (image_errors.UnsafeArchive, 400),
    (image_errors.UnsupportedMediaType, 400),
    (image_errors.AuthError, 401),
    (image_errors.Conflict, 409),
]


def status_for(exc: BaseException) -> int:
    if isinstance(exc, image_errors.RegistryError) and not isinstance(
            exc, image_errors.AuthError):
        # a registry's "not found" is the client's 404; other registry faults are 500
        return 404 if exc.status == 404 else 500
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def message_for(exc: BaseException) -> str:
    msg = getattr(exc, "message", None) or str(exc)
    return msg or exc.__class__.__name__


def error_response(status: int, message: str, headers: dict[str, str] | None = None
                   ) -> Response:
    if status == 304:
        return Response(status=304)
    # exactly "application/json", no charset: the docker CLI compares the header to that
    # string and otherwise prints the raw body instead of the message
    return Response(status=status, headers={**(headers or {}),
                                            "Content-Type": "application/json"},
                    body=(json.dumps({"message": message}) + "\n").encode())


def response_for(exc: BaseException) -> Response:
    status = status_for(exc)
    if status >= 500 and status not in (501, 503):
        log.error("internal error: %s", exc, exc_info=exc)
    return error_response(status, message_for(exc))


def http_error_response(exc: HTTPError) -> Response:
    """The HTTP layer's own answers (no route, 405, 413, malformed requests) as Docker's."""
    return error_response(exc.status, exc.message, exc.headers)
