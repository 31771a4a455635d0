"""Networking errors: the engine's classes, so the API maps them to Docker's codes."""

from __future__ import annotations

from kobako.engine.errors import Conflict, EngineError, InvalidParameter, NotFound


class NetworkError(EngineError):
    """A networking operation failed on the host (netlink, nftables, a namespace): 500."""


class NetworkNotFound(NotFound):
    """No such network (404)."""


class NetworkConflict(Conflict):
    """Address in use, subnet overlap, network in use, port taken (409)."""


class InvalidNetworkConfig(InvalidParameter):
    """A malformed or contradictory network request (400)."""
