"""The engine services the API routes call, as Protocols.

The routes are adapters: they parse HTTP into these calls and turn the results
(plain dicts in Docker's JSON shapes) back into responses. The real engine
implements them; unit tests use in-test fakes; until the container engine lands
the daemon wires `UnavailableContainerService`, which answers 501.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from kobako.engine.errors import NotImplementedYet

Progress = Callable[[dict[str, Any]], None]
"""Receives Docker JSON progress messages ({"id", "status", "progressDetail", ...})."""


@dataclass
class StreamIO:
    """What `attach`/`exec_start` hand back: the process's streams.

    `output` yields (stream, data) with stream 1=stdout, 2=stderr (0 for a tty's
    single stream); `write_stdin` and `close_stdin` feed the process; `wait` resolves
    when the process has exited (the connection then closes, as Docker does).
    """

    output: AsyncIterator[tuple[int, bytes]]
    write_stdin: Callable[[bytes], Awaitable[None]] | None = None
    close_stdin: Callable[[], Awaitable[None]] | None = None
    detach: Callable[[], Awaitable[None]] | None = None
    tty: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class ContainerService(Protocol):
    async def create(self, config: dict[str, Any], host_config: dict[str, Any],
                     networking: dict[str, Any], name: str | None,
                     platform: str | None) -> dict[str, Any]: ...   # {"Id", "Warnings"}
    async def start(self, ref: str, detach_keys: str | None = None) -> None: ...
    async def stop(self, ref: str, timeout: int | None, signal: str | None) -> None: ...
    async def restart(self, ref: str, timeout: int | None, signal: str | None) -> None: ...
    async def kill(self, ref: str, signal: str | None) -> None: ...
    async def pause(self, ref: str) -> None: ...
    async def unpause(self, ref: str) -> None: ...
    async def remove(self, ref: str, force: bool, volumes: bool, link: bool) -> None: ...
    async def wait(self, ref: str, condition: str) -> Awaitable[dict[str, Any]]:
        """Check the container and register the wait; the awaitable gives
        {"StatusCode", "Error"} when the condition is met."""
        ...
    async def inspect(self, ref: str, size: bool) -> dict[str, Any]: ...
    async def list(self, all: bool, limit: int | None, size: bool,
                   filters: Mapping[str, list[str]]) -> list[dict[str, Any]]: ...
    async def logs(self, ref: str, *, follow: bool, stdout: bool, stderr: bool,
                   since: float | None, until: float | None, timestamps: bool,
                   tail: str) -> tuple[bool, AsyncIterator[tuple[int, bytes]]]:
        """(tty, chunks): chunks are (stream, data), stream 1 stdout / 2 stderr."""
        ...
    async def attach(self, ref: str, *, stream: bool, logs: bool, stdin: bool,
                     stdout: bool, stderr: bool, detach_keys: str | None) -> StreamIO: ...
    async def resize(self, ref: str, height: int, width: int) -> None: ...
    async def top(self, ref: str, ps_args: str | None) -> dict[str, Any]: ...
    async def rename(self, ref: str, new_name: str) -> None: ...
    async def prune(self, filters: Mapping[str, list[str]]) -> dict[str, Any]: ...
    async def stats(self, ref: str, stream: bool,
                    one_shot: bool = False) -> AsyncIterator[dict[str, Any]]: ...
    async def changes(self, ref: str) -> list[dict[str, Any]]: ...
    async def export(self, ref: str) -> AsyncIterator[bytes]: ...
    async def exec_create(self, ref: str, config: dict[str, Any]) -> dict[str, Any]: ...
    async def exec_start(self, exec_id: str, *, detach: bool, tty: bool,
                         detach_keys: str | None) -> StreamIO | None: ...
    async def exec_inspect(self, exec_id: str) -> dict[str, Any]: ...
    async def exec_resize(self, exec_id: str, height: int, width: int) -> None: ...
    async def counts(self) -> dict[str, int]: ...  # {"running", "paused", "stopped"}


class ImageBackend(Protocol):
    """The calls the image routes make: `kobako.image.images.ImageService`.

    pull/push are coroutines (progress is reported on the event loop); the others
    block and the routes run them in worker threads. `auth` is the library's
    Credentials (from X-Registry-Auth) or None.
    """

    driver: str

    async def pull(self, ref: str, *, platform: str | None = None, auth: Any = None,
                   progress: Progress | None = None) -> str: ...
    async def push(self, ref: str, *, auth: Any = None,
                   progress: Progress | None = None) -> Any: ...
    async def inspect_remote(self, ref: str, *, auth: Any = None) -> dict[str, Any]: ...
    def tag(self, source: str, target: str) -> None: ...
    def remove(self, name: str, *, force: bool = False,
               prune: bool = True) -> list[dict[str, str]]: ...
    def list(self, filters: Mapping[str, list[str]] | None = None,
             all: bool = False) -> list[dict[str, Any]]: ...
    def inspect(self, name: str) -> dict[str, Any]: ...
    def history(self, name: str) -> list[dict[str, Any]]: ...
    def prune(self, filters: Mapping[str, list[str]] | None = None) -> dict[str, Any]: ...
    def save(self, names: list[str], out: BinaryIO,
             ready: Callable[[], None] | None = None) -> None: ...
    def load(self, source: BinaryIO, progress: Progress | None = None) -> list[str]: ...
    def import_image(self, source: BinaryIO, *, reference: str | None = None,
                     changes: list[str] | None = None, message: str = "",
                     platform: str | None = None) -> str: ...


_NOT_YET = "containers are not available in this build yet"


class UnavailableContainerService:
    """Stands in for the container engine until it exists: every call answers 501."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)

        async def _unavailable(*args: Any, **kwargs: Any) -> Any:
            raise NotImplementedYet(_NOT_YET)

        return _unavailable

    async def counts(self) -> dict[str, int]:
        return {"running": 0, "paused": 0, "stopped": 0}

    async def list(self, all: bool = False, limit: int | None = None, size: bool = False,
                   filters: Mapping[str, list[str]] | None = None) -> list[dict[str, Any]]:
        # an empty list keeps `docker ps` and docker-py's teardown working
        return []
