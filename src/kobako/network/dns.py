"""The embedded DNS server: 127.0.0.11:53 inside each container on a user network.

As Docker's resolver does, it listens inside the container's own network namespace
(UDP and TCP sockets created there, served by the daemon's event loop), answers
the names of containers that share a network with the asking container (name,
network aliases, short id) and forwards every other question, from the host's
namespace, to the upstream resolvers (the container's --dns, else the host's
resolv.conf). Answers come from live state, so they follow start, stop, connect
and disconnect at once. Messages are parsed and built with dnslib.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kobako.network import netns

if TYPE_CHECKING:
    from dnslib import DNSRecord

log = logging.getLogger("kobakod.dns")

DNS_IP = "127.0.0.11"
TTL = 600
FORWARD_TIMEOUT = 2.0

# container id -> name -> addresses (None: not one of ours, forward it)
Lookup = Callable[[str, str], "list[str] | None"]
# container id -> address -> names
Reverse = Callable[[str, str], "list[str] | None"]
Upstreams = Callable[[str], "list[str]"]


def nameservers(resolv_conf_text: str) -> list[str]:
    """The nameserver addresses of a resolv.conf (IPv4 ones; the embedded one skipped)."""
    out = []
    for line in resolv_conf_text.splitlines():
        m = re.match(r"\s*nameserver\s+(\S+)", line)
        if m and m.group(1) != DNS_IP:
            try:
                if ipaddress.ip_address(m.group(1)).version == 4:
                    out.append(m.group(1))
            except ValueError:
                continue
    return out


@dataclass
class _Listener:
    udp: asyncio.DatagramTransport
    tcp: asyncio.Server
    tasks: set = field(default_factory=set)


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer, container_id: str):
        self.server = server
        self.container_id = container_id
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        task = asyncio.get_running_loop().create_task(self._answer(data, addr))
        self.server._tasks.add(task)
        task.add_done_callback(self.server._tasks.discard)

    async def _answer(self, data: bytes, addr) -> None:
        reply = await self.server.answer(self.container_id, data, tcp=False)
        if reply is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)


class DNSServer:
    def __init__(self, lookup: Lookup, reverse: Reverse, upstreams: Upstreams):
        self.lookup = lookup
        self.reverse = reverse
        self.upstreams = upstreams
        self._listeners: dict[str, _Listener] = {}
        self._tasks: set[asyncio.Task] = set()

    async def add(self, container_id: str, ns_path: str) -> None:
        """Listen on 127.0.0.11:53 (UDP and TCP) inside the namespace at ns_path."""
        if container_id in self._listeners:
            return
        loop = asyncio.get_running_loop()

        def make() -> tuple[socket.socket, socket.socket]:
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            udp.bind((DNS_IP, 53))
            tcp.bind((DNS_IP, 53))
            tcp.listen(64)
            udp.setblocking(False)
            tcp.setblocking(False)
            return udp, tcp

        udp_sock, tcp_sock = netns.run_in(ns_path, make)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UDP(self, container_id), sock=udp_sock)
        server = await asyncio.start_server(
            lambda r, w: self._serve_tcp(container_id, r, w), sock=tcp_sock)
        self._listeners[container_id] = _Listener(transport, server)  # type: ignore[arg-type]

    async def remove(self, container_id: str) -> None:
        listener = self._listeners.pop(container_id, None)
        if listener is not None:
            listener.udp.close()
            listener.tcp.close()

    async def close(self) -> None:
        for cid in list(self._listeners):
            await self.remove(cid)
        for task in list(self._tasks):
            task.cancel()

    def serving(self, container_id: str) -> bool:
        return container_id in self._listeners

    async def _serve_tcp(self, container_id: str, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                data = await reader.readexactly(size)
                reply = await self.answer(container_id, data, tcp=True)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed the connection: the normal end of a TCP exchange
        finally:
            writer.close()

    async def answer(self, container_id: str, data: bytes, tcp: bool) -> bytes | None:
        """The reply to one query message (None: unparseable, dropped)."""
        # dnslib loads with the first query, not with the daemon (its start-up time counts)
        from dnslib import PTR, QTYPE, RR, A, DNSError, DNSRecord

        try:
            request = DNSRecord.parse(data)
        except DNSError:
            return None
        if not request.questions:
            return None
        q = request.q
        name = str(q.qname).rstrip(".").lower()
        if q.qtype == QTYPE.PTR:
            names = self.reverse(container_id, _ptr_to_ip(name) or "")
            if names:
                reply = request.reply()
                for n in names:
                    reply.add_answer(RR(q.qname, QTYPE.PTR, rdata=PTR(n + "."), ttl=TTL))
                return reply.pack()
        else:
            addresses = self.lookup(container_id, name)
            if addresses is not None:
                reply = request.reply()
                if q.qtype in (QTYPE.A, QTYPE.ANY):
                    for ip in addresses:
                        reply.add_answer(RR(q.qname, QTYPE.A, rdata=A(ip), ttl=TTL))
                return reply.pack()
        return await self.forward(container_id, request, data, tcp)

    async def forward(self, container_id: str, request: DNSRecord, data: bytes,
                      tcp: bool) -> bytes:
        for server in self.upstreams(container_id):
            try:
                if tcp:
                    return await asyncio.wait_for(_ask_tcp(server, data), FORWARD_TIMEOUT)
                return await asyncio.wait_for(_ask_udp(server, data), FORWARD_TIMEOUT)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as err:
                log.debug("upstream %s failed for %s: %s", server, container_id[:12], err)
        from dnslib import RCODE

        reply = request.reply()
        reply.header.rcode = RCODE.SERVFAIL
        return reply.pack()


def _ptr_to_ip(name: str) -> str | None:
    suffix = ".in-addr.arpa"
    if not name.endswith(suffix):
        return None
    parts = name[: -len(suffix)].split(".")
    if len(parts) != 4:
        return None
    return ".".join(reversed(parts))


class _Once(asyncio.DatagramProtocol):
    def __init__(self, query_id: bytes):
        self.query_id = query_id
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        if data[:2] == self.query_id and not self.done.done():
            self.done.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


async def _ask_udp(server: str, data: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _Once(data[:2]), remote_addr=(server, 53))
    try:
        transport.sendto(data)
        return await protocol.done
    finally:
        transport.close()


async def _ask_tcp(server: str, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(server, 53)
    try:
        writer.write(struct.pack("!H", len(data)) + data)
        await writer.drain()
        size = struct.unpack("!H", await reader.readexactly(2))[0]
        return await reader.readexactly(size)
    finally:
        writer.close()
