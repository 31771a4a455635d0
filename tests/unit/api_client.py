"""The API app served by kobako.api.http on 127.0.0.1, and an aiohttp client session
for it (`client.get("/path")`, `client.server.port` for raw connections)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import aiohttp

from kobako.api.http import Server
from kobako.api.server import create_app


class Client:
    def __init__(self, session: aiohttp.ClientSession, port: int):
        self.session = session
        self.server = SimpleNamespace(port=port)

    def __getattr__(self, name: str) -> Any:  # get, post, put, head, delete, request
        return getattr(self.session, name)


@asynccontextmanager
async def serving(context: Any) -> AsyncIterator[Client]:
    server = Server(create_app(context))
    port = await server.serve_tcp("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as session:
            yield Client(session, port)
    finally:
        await server.shutdown(1.0)
