"""What the routes reach through the app: the services and the daemon's settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from kobako.api.services import ContainerService, ImageBackend, UnavailableContainerService
from kobako.engine.config import DaemonConfig
from kobako.engine.errors import NotImplementedYet
from kobako.engine.events import EventBus


@dataclass
class Context:
    config: DaemonConfig = field(default_factory=DaemonConfig)
    containers: ContainerService = field(default_factory=UnavailableContainerService)  # type: ignore[assignment]
    images: ImageBackend | None = None
    events: EventBus = field(default_factory=EventBus)
    daemon_id: str = ""
    storage_driver: str = "overlay2"
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def image_backend(self) -> ImageBackend:
        if self.images is None:
            raise NotImplementedYet("images are not available in this build yet")
        return self.images


CONTEXT_KEY: web.AppKey[Context] = web.AppKey("kobako_context", Context)


def ctx(request: web.Request) -> Context:
    return request.app[CONTEXT_KEY]


STREAM_STARTED: web.RequestKey[bool] = web.RequestKey("stream_started", bool)
"""Set once a handler has sent headers: errors can no longer become a status."""
