"""The bridge driver's kernel side, through netlink (pyroute2): bridges and veth pairs.

Every link kobako makes carries an interface alias `kobako:<daemon>:<owner>`, so
a daemon finds its own bridges and veths again after a crash (and never touches
another engine's, or another kobakod's on the same host).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from kobako.network import netns
from kobako.network.errors import NetworkError

ENOENT = 2
ENODEV = 19
EEXIST = 17


@dataclass
class Interface:
    """One container interface: the veth pair and what goes inside the namespace."""

    host_ifname: str
    ifname: str
    ip: str
    prefixlen: int
    mac: str
    gateway: str | None  # default route via it (None: no default route)
    mtu: int
    tag: str


def netlink() -> tuple[Any, type[Exception]]:
    """pyroute2's AsyncIPRoute and NetlinkError, imported on first use: its package
    imports every netlink family it knows (~100 ms, ~15 MiB), and the daemon answers
    before it needs them (NetworkService.startup imports them on a thread)."""
    from pyroute2 import AsyncIPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    return AsyncIPRoute, NetlinkError


def _sysctl(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


async def ensure_bridge(name: str, gateway: str, prefixlen: int, mtu: int, tag: str) -> None:
    """The bridge exists, is up, carries the gateway address and routes 127.0.0.1 DNAT."""
    AsyncIPRoute, NetlinkError = netlink()
    async with AsyncIPRoute() as ipr:
        try:
            found = await ipr.link_lookup(ifname=name)
            if not found:
                await ipr.link("add", ifname=name, kind="bridge")
                found = await ipr.link_lookup(ifname=name)
            index = found[0]
            await ipr.link("set", index=index, ifalias=tag, mtu=mtu)
            have = {a.get("address") async for a in await ipr.addr("dump", index=index)
                    if a.get("family") == socket.AF_INET}
            if gateway not in have:
                await ipr.addr("add", index=index, address=gateway, prefixlen=prefixlen)
            await ipr.link("set", index=index, state="up")
        except NetlinkError as err:
            raise NetworkError(f"cannot set up bridge {name}: {err}") from None
    # DNAT of 127.0.0.1:PORT into the bridge needs loopback sources routable there
    _sysctl(f"/proc/sys/net/ipv4/conf/{name}/route_localnet", "1")


async def delete_link(name: str) -> None:
    AsyncIPRoute, NetlinkError = netlink()
    async with AsyncIPRoute() as ipr:
        try:
            found = await ipr.link_lookup(ifname=name)
            if found:
                await ipr.link("del", index=found[0])
        except NetlinkError as err:
            if err.code not in (ENODEV, ENOENT):
                raise NetworkError(f"cannot delete interface {name}: {err}") from None


async def tagged_links(prefix: str) -> dict[str, tuple[str, str]]:
    """ifname -> (alias, kind) for every host link whose alias starts with prefix."""
    AsyncIPRoute = netlink()[0]
    out = {}
    async with AsyncIPRoute() as ipr:
        async for link in await ipr.link("dump"):
            alias = link.get("ifalias") or ""
            if alias.startswith(prefix):
                info = link.get(("linkinfo", "kind")) if hasattr(link, "get") else None
                out[link.get("ifname")] = (alias, str(info or ""))
    return out


async def host_routes() -> list[str]:
    """Destinations (CIDR) of the host's IPv4 routes, default route excluded."""
    AsyncIPRoute = netlink()[0]
    out = []
    async with AsyncIPRoute() as ipr:
        async for route in await ipr.route("dump", family=socket.AF_INET):
            dst = route.get("dst")
            if dst and route.get("table") in (254, 255) and route["dst_len"] > 0:
                out.append(f"{dst}/{route['dst_len']}")
    return out


async def attach(ns_path: str, bridge: str, itf: Interface) -> None:
    """A veth pair: host side on `bridge`, the other side in the namespace, configured."""
    AsyncIPRoute, NetlinkError = netlink()
    async with AsyncIPRoute() as ipr:
        try:
            found = await ipr.link_lookup(ifname=bridge)
            if not found:
                raise NetworkError(f"bridge {bridge} does not exist")
            fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                await ipr.link("add", ifname=itf.host_ifname, kind="veth", mtu=itf.mtu,
                               peer={"ifname": itf.ifname, "net_ns_fd": fd, "mtu": itf.mtu})
            finally:
                os.close(fd)
            index = (await ipr.link_lookup(ifname=itf.host_ifname))[0]
            await ipr.link("set", index=index, master=found[0], ifalias=itf.tag, state="up")
        except NetlinkError as err:
            raise NetworkError(f"cannot create veth {itf.host_ifname} on {bridge}: {err}") \
                from None
    # a container reaching its own published port through a host address: the frame
    # goes back out of the port it came in on
    _sysctl(f"/sys/class/net/{itf.host_ifname}/brport/hairpin_mode", "1")
    sock = netns.socket_in(ns_path, socket.AF_NETLINK, socket.SOCK_DGRAM, 0)
    async with AsyncIPRoute(use_socket=sock) as ns:
        try:
            await ns.link("set", index=1, state="up")  # lo
            index = (await ns.link_lookup(ifname=itf.ifname))[0]
            await ns.link("set", index=index, address=itf.mac)
            await ns.addr("add", index=index, address=itf.ip, prefixlen=itf.prefixlen)
            await ns.link("set", index=index, state="up")
            if itf.gateway:
                has_default = False
                async for route in await ns.route("dump", family=socket.AF_INET):
                    if route["dst_len"] == 0 and route.get("table") == 254:
                        has_default = True
                if not has_default:
                    await ns.route("add", dst="0.0.0.0/0", gateway=itf.gateway)
        except NetlinkError as err:
            raise NetworkError(f"cannot configure {itf.ifname} in {ns_path}: {err}") from None
