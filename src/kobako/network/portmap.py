"""Published ports: Docker's PortBindings turned into reserved host ports.

A host port is reserved by binding a socket to it (never listening: the traffic
itself is DNATed to the container), so a port that is already taken is a clear
error before the container starts, and no other program can take it meanwhile.
"""

from __future__ import annotations

import errno
import re
import socket
from dataclasses import dataclass, field

from kobako.network.errors import InvalidNetworkConfig, NetworkConflict

_PORT_SPEC = re.compile(r"\d{1,5}(-\d{1,5})?")


@dataclass
class Binding:
    proto: str
    container_port: int
    host_ip: str
    host_port: int
    sock: socket.socket | None = field(default=None, repr=False, compare=False)


def parse_port_key(key: str) -> tuple[int, str]:
    """'80/tcp' -> (80, 'tcp'); a bare '80' is tcp."""
    port, _, proto = key.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp") or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidNetworkConfig(f"invalid port specification: {key!r}")
    return int(port), proto


def _host_ports(spec: str) -> list[int]:
    """'' -> [0] (ephemeral); '8080' -> [8080]; '8000-8010' -> each."""
    if not spec:
        return [0]
    lo, _, hi = spec.partition("-")
    try:
        first, last = int(lo), int(hi or lo)
    except ValueError:
        raise InvalidNetworkConfig(f"invalid host port: {spec!r}") from None
    if not 0 <= first <= last < 65536:
        raise InvalidNetworkConfig(f"invalid host port range: {spec!r}")
    return list(range(first, last + 1))


def check_bindings(bindings: dict | None) -> None:
    """dockerd's create-time check: every container port a number (or a range) and every
    HostPort empty, a number or a range; the message quotes the bad one."""
    for key, entries in (bindings or {}).items():
        port = str(key).partition("/")[0]
        for spec in [port] + [str((e or {}).get("HostPort") or "") for e in entries or []]:
            if spec and not _PORT_SPEC.fullmatch(spec):
                raise InvalidNetworkConfig(f'invalid port specification: "{spec}"')


def wanted(host_config: dict, exposed: dict | None) -> list[tuple[str, int, str, str]]:
    """(proto, container_port, host_ip, host_port_spec) for every port to publish."""
    out = []
    bindings = host_config.get("PortBindings") or {}
    for key, entries in sorted(bindings.items()):
        port, proto = parse_port_key(key)
        for entry in entries or [{}]:
            entry = entry or {}
            out.append((proto, port, entry.get("HostIp") or "", str(entry.get("HostPort") or "")))
    if host_config.get("PublishAllPorts"):
        for key in sorted(exposed or {}):
            if key not in bindings:
                port, proto = parse_port_key(key)
                out.append((proto, port, "", ""))
    return out


def reserve(proto: str, host_ip: str, spec: str) -> tuple[int, socket.socket]:
    """Bind a socket on the first free port of spec; the socket holds the reservation."""
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    last: OSError | None = None
    ports = _host_ports(spec)
    for port in ports:
        sock = socket.socket(socket.AF_INET, kind)
        try:
            sock.bind((host_ip or "0.0.0.0", port))
        except OSError as err:
            sock.close()
            last = err
            if err.errno != errno.EADDRINUSE:
                break
            continue
        return sock.getsockname()[1], sock
    addr = f"{host_ip or '0.0.0.0'}:{spec or 0}"
    if last is not None and last.errno == errno.EADDRINUSE:
        if len(ports) > 1:
            raise NetworkConflict(f"Bind for {addr} failed: all ports are already allocated")
        raise NetworkConflict(f"Bind for {addr} failed: port is already allocated")
    raise InvalidNetworkConfig(f"cannot bind {proto} {addr}: {last}")


def reserve_all(wants: list[tuple[str, int, str, str]]) -> list[Binding]:
    """Reserve every wanted port, or none (the sockets already bound are closed)."""
    done: list[Binding] = []
    try:
        for proto, cport, host_ip, spec in wants:
            port, sock = reserve(proto, host_ip, spec)
            done.append(Binding(proto, cport, host_ip or "0.0.0.0", port, sock))
    except BaseException:
        release(done)
        raise
    return done


def release(bindings: list[Binding]) -> None:
    for b in bindings:
        if b.sock is not None:
            b.sock.close()
            b.sock = None


def ports_doc(bindings: list[Binding], exposed: dict | None) -> dict:
    """NetworkSettings.Ports: every exposed port, with its host bindings or null."""
    doc: dict[str, list | None] = {key: None for key in (exposed or {})}
    for b in bindings:
        doc.setdefault(f"{b.container_port}/{b.proto}", None)
        entries = doc[f"{b.container_port}/{b.proto}"] or []
        entries.append({"HostIp": b.host_ip, "HostPort": str(b.host_port)})
        doc[f"{b.container_port}/{b.proto}"] = entries
    return doc
