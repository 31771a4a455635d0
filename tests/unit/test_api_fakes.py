"""In-test fakes of the engine services the API adapts (imported by test_api_* modules; no tests here)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator
from typing import Any

from kobako.api.services import StreamIO
from kobako.engine.errors import Conflict, NotFound, NotModified


class FakeContainers:
    """Just enough container state to exercise every route and status code."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []
        self.containers: dict[str, dict[str, Any]] = {}
        self.stdin: bytearray = bytearray()
        self.stdin_closed = asyncio.Event()
        self.exit_event = asyncio.Event()
        self.detached = False
        self.monitor_gone = False

    def _rec(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, args, kwargs))

    def _get(self, ref: str) -> dict[str, Any]:
        if ref in self.containers:
            return self.containers[ref]
        for c in self.containers.values():  # by ID, as clients use what create returned
            if c["Id"] == ref:
                return c
        raise NotFound(f"No such container: {ref}")

    async def create(self, config, host_config, networking, name, platform):
        self._rec("create", config, host_config, networking, name, platform)
        cid = "c" * (64 - len(self.containers)) + "0" * len(self.containers)
        if name in self.containers:
            raise Conflict(f'Conflict. The container name "/{name}" is already in use')
        self.containers[name or cid] = {"Id": cid, "running": False, "tty": config.get("Tty")}
        return {"Id": cid, "Warnings": ["fake warning"]}

    async def start(self, ref, detach_keys=None):
        c = self._get(ref)
        if c["running"]:
            raise NotModified("already started")
        c["running"] = True

    async def stop(self, ref, timeout, signal):
        self._rec("stop", ref, timeout, signal)
        c = self._get(ref)
        if not c["running"]:
            raise NotModified("already stopped")
        c["running"] = False

    async def restart(self, ref, timeout, signal):
        self._rec("restart", ref, timeout, signal)

    async def kill(self, ref, signal):
        c = self._get(ref)
        if not c["running"]:
            raise Conflict(f"Container {ref} is not running")
        self._rec("kill", ref, signal)

    async def pause(self, ref):
        self._get(ref)

    async def unpause(self, ref):
        self._get(ref)

    async def remove(self, ref, force, volumes, link):
        self._rec("remove", ref, force, volumes, link)
        c = self._get(ref)
        self.containers = {k: v for k, v in self.containers.items() if v is not c}

    async def wait(self, ref, condition):
        self._get(ref)

        async def waiter():
            await self.exit_event.wait()
            return {"StatusCode": 3, "Error": None}

        return waiter()

    async def inspect(self, ref, size):
        c = self._get(ref)
        return {"Id": c["Id"], "State": {"Running": c["running"], "Pid": 42}}

    async def list(self, all, limit, size, filters):
        self._rec("list", all, limit, size, filters)
        return [{"Id": c["Id"], "Names": [f"/{n}"]} for n, c in self.containers.items()]

    async def logs(self, ref, **kw):
        self._rec("logs", ref, **kw)
        c = self._get(ref)

        async def chunks() -> AsyncIterator[tuple[int, bytes]]:
            yield 1, b"out line\n"
            yield 2, b"err line\n"

        return bool(c.get("tty")), chunks()

    def _stream(self, tty: bool) -> StreamIO:
        async def output() -> AsyncIterator[tuple[int, bytes]]:
            yield 1, b"hello\n"
            # echo stdin back until stdin closes or the "process" exits
            sent = 0
            while not self.exit_event.is_set():
                if len(self.stdin) > sent:
                    data = bytes(self.stdin[sent:])
                    sent = len(self.stdin)
                    yield 1, b"got:" + data
                if self.stdin_closed.is_set() and sent == len(self.stdin):
                    yield 2, b"bye\n"
                    return
                await asyncio.sleep(0.01)

        async def write_stdin(data: bytes) -> None:
            self.stdin += data

        async def close_stdin() -> None:
            self.stdin_closed.set()
            if self.monitor_gone:  # the process ended and its relay hung up first
                raise ConnectionResetError("the monitor closed the attachment")

        async def detach() -> None:
            self.detached = True

        return StreamIO(output(), write_stdin, close_stdin, detach, tty=tty)

    async def attach(self, ref, **kw):
        self._rec("attach", ref, **kw)
        c = self._get(ref)
        return self._stream(bool(c.get("tty")))

    async def resize(self, ref, h, w):
        self._rec("resize", ref, h, w)
        self._get(ref)

    async def top(self, ref, ps_args):
        return {"Titles": ["PID", "CMD"], "Processes": [["1", "sh"]]}

    async def rename(self, ref, new):
        self.containers[new] = self.containers.pop(ref)

    async def prune(self, filters):
        return {"ContainersDeleted": [], "SpaceReclaimed": 0}

    async def stats(self, ref, stream, one_shot=False):
        self._get(ref)

        async def gen():
            yield {"id": ref, "pids_stats": {"current": 1}}

        return gen()

    async def changes(self, ref):
        return []

    async def export(self, ref):
        async def gen():
            yield b"tar"

        return gen()

    async def exec_create(self, ref, config):
        self._rec("exec_create", ref, config)
        self._get(ref)
        return {"Id": "e" * 64}

    async def exec_start(self, exec_id, *, detach, tty, detach_keys):
        if exec_id != "e" * 64:
            raise NotFound(f"No such exec instance: {exec_id}")
        if detach:
            return None
        return self._stream(tty)

    async def exec_inspect(self, exec_id):
        if exec_id != "e" * 64:
            raise NotFound(f"No such exec instance: {exec_id}")
        return {"ID": exec_id, "OpenStdin": True, "ExitCode": 0, "DetachKeys": ""}

    async def exec_resize(self, exec_id, h, w):
        self._rec("exec_resize", exec_id, h, w)

    async def counts(self):
        running = sum(1 for c in self.containers.values() if c["running"])
        return {"running": running, "paused": 0, "stopped": len(self.containers) - running}


class ServerThread:
    """The API app on a unix socket, served by an event loop in a background thread."""

    def __init__(self, context: Any, sock_path: str):
        self.context = context
        self.sock_path = sock_path
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from kobako.api.http import Server
        from kobako.api.server import create_app

        asyncio.set_event_loop(self.loop)
        server = Server(create_app(self.context))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.sock_path)
        sock.listen(16)
        self.loop.run_until_complete(server.serve_unix(sock))
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(server.shutdown(1.0))
        self.loop.close()

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(10), "API server did not start"
        return self

    def __exit__(self, *exc: Any) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
