"""The daemon's side of a monitor's socket (see monitor.py for the protocol)."""

from __future__ import annotations

import asyncio
import json

from kobako.engine.relay import CONTROL, HEADER, STDIN, frame


class MonitorGone(Exception):
    pass


async def connect(path: str, header: dict) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to a process's socket that has sent `header`. MonitorGone when the
    process's relay is not there, or let go of us as it finished (a process that exits
    at once can end between our connect and our header)."""
    try:
        reader, writer = await asyncio.open_unix_connection(path)
    except OSError as err:
        raise MonitorGone(f"cannot reach the monitor at {path}: {err}") from err
    try:
        writer.write(json.dumps(header).encode() + b"\n")
        await writer.drain()
    except OSError as err:
        writer.close()
        raise MonitorGone(f"the monitor at {path} closed the connection: {err}") from err
    return reader, writer


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes] | None:
    try:
        head = await reader.readexactly(HEADER.size)
        stream, size = HEADER.unpack(head)
        return stream, await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


async def watch(path: str) -> dict | None:
    """Wait for the process's exit notice; None if the monitor went away without one."""
    reader, writer = await connect(path, {"op": "watch"})
    try:
        while True:
            item = await read_frame(reader)
            if item is None:
                return None
            stream, data = item
            if stream == CONTROL:
                return json.loads(data).get("exit")
    finally:
        writer.close()


async def resize(path: str, height: int, width: int) -> None:
    _, writer = await connect(path, {"op": "resize", "height": height, "width": width})
    writer.close()


class Attachment:
    """An attached client: output frames in, stdin frames out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.exit: dict | None = None

    async def output(self):
        try:
            while True:
                item = await read_frame(self.reader)
                if item is None:
                    return
                stream, data = item
                if stream == CONTROL:
                    self.exit = json.loads(data).get("exit")
                    return
                yield stream, data
        finally:
            self.close()

    async def write_stdin(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(frame(STDIN, data))
            await self.writer.drain()

    async def close_stdin(self) -> None:
        await self.write_stdin(b"")

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()


async def attach(path: str, stdin: bool, stdout: bool, stderr: bool) -> Attachment:
    reader, writer = await connect(
        path, {"op": "attach", "stdin": stdin, "stdout": stdout, "stderr": stderr})
    return Attachment(reader, writer)
