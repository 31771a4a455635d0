"""What the routes reach through the app: the services and the daemon's settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kobako.api.http import Request
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


def ctx(request: Request) -> Context:
    return request.app.context


# per-request values (request[KEY])
API_VERSION = "api_version"
"""The API version the client asked for (its /v1.NN/ prefix), else the newest."""
