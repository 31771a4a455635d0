"""The engine's exception hierarchy.

Every service below the API (containers, exec, images glue, events) raises one of
these; `kobako.api.errors` maps them onto Docker's HTTP status codes in one place.
Each class carries the message the client will see, written the way Docker words it.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class: an engine failure. Maps to 500 unless a subclass says otherwise."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidParameter(EngineError, ValueError):
    """A malformed or contradictory request parameter (400)."""


class Unauthorized(EngineError):
    """Credentials missing or refused (401)."""


class Forbidden(EngineError):
    """The request is understood but not allowed (403)."""


class NotFound(EngineError):
    """No such container, image, exec instance, network or volume (404)."""


class Conflict(EngineError):
    """Conflicts with the current state: name in use, container running or not (409)."""


class NotModified(EngineError):
    """Nothing to do: container already started/stopped (304, empty body)."""


class NotImplementedYet(EngineError):
    """The feature exists in the API but not in this build (501)."""


class Unavailable(EngineError):
    """The service is not available on this node, e.g. swarm (503)."""
