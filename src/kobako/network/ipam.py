"""IP address management: choosing subnets and addresses (pure logic, no I/O).

The state lives in the daemon's database (see store.py); this module decides.
Dynamic addresses come from the network's --ip-range (or its whole subnet), never
the network or broadcast address and never the gateway; the lowest free one wins.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator

from kobako.network.errors import InvalidNetworkConfig, NetworkConflict

IPv4Network = ipaddress.IPv4Network
IPv4Address = ipaddress.IPv4Address

# Docker's default pools (libnetwork ipamutils): 172.17-31.0.0/16, then 192.168.0.0/16 in /20s
DEFAULT_POOLS = [{"base": b, "size": 16} for b in ("172.17.0.0/16", "172.18.0.0/15",
                                                  "172.20.0.0/14", "172.24.0.0/14",
                                                  "172.28.0.0/14")] + [
    {"base": "192.168.0.0/16", "size": 20}]


def parse_subnet(text: str) -> IPv4Network:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidNetworkConfig(f"invalid subnet {text!r}") from None
    if not isinstance(net, IPv4Network):
        raise InvalidNetworkConfig(f"IPv6 subnets are not supported yet: {text}")
    if "/" in text and ipaddress.ip_interface(text).ip != net.network_address:
        raise InvalidNetworkConfig(f"invalid subnet {text}: it should be {net}")
    if net.prefixlen > 30:
        raise InvalidNetworkConfig(f"subnet {text} is too small for a bridge network")
    return net


def parse_address(text: str, what: str = "address") -> IPv4Address:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidNetworkConfig(f"invalid {what} {text!r}") from None
    if not isinstance(addr, IPv4Address):
        raise InvalidNetworkConfig(f"IPv6 addresses are not supported yet: {text}")
    return addr


def pool_subnets(pools: Iterable[dict]) -> Iterator[IPv4Network]:
    """Every candidate subnet of the address pools, in order."""
    for pool in pools:
        base = parse_subnet(str(pool["base"]))
        size = int(pool["size"])
        if size < base.prefixlen:
            raise InvalidNetworkConfig(f"pool {base} cannot hold /{size} subnets")
        yield from base.subnets(new_prefix=size)


def choose_subnet(pools: Iterable[dict], taken: Iterable[IPv4Network]) -> IPv4Network:
    """The first pool subnet overlapping no taken network (other networks, host routes)."""
    taken = list(taken)
    for candidate in pool_subnets(pools):
        if not any(candidate.overlaps(t) for t in taken):
            return candidate
    raise NetworkConflict(
        "could not find an available, non-overlapping IPv4 address pool among the defaults "
        "to assign to the network")


def default_gateway(subnet: IPv4Network) -> IPv4Address:
    return subnet.network_address + 1


def check_in_subnet(addr: IPv4Address, subnet: IPv4Network, what: str) -> None:
    if addr not in subnet:
        raise InvalidNetworkConfig(f"{what} {addr} is not in subnet {subnet}")
    if addr in (subnet.network_address, subnet.broadcast_address):
        raise InvalidNetworkConfig(f"{what} {addr} is the network or broadcast address of "
                                   f"{subnet}")


def allocate(subnet: IPv4Network, ip_range: IPv4Network | None, gateway: IPv4Address,
             used: set[IPv4Address]) -> IPv4Address:
    """The lowest free host address of ip_range (default: the subnet)."""
    pool = ip_range or subnet
    for addr in pool:  # every address of an --ip-range counts, as in Docker
        if addr in (subnet.network_address, subnet.broadcast_address, gateway):
            continue
        if addr not in used:
            return addr
    raise NetworkConflict(f"no available IPv4 addresses on this network's address pools: "
                          f"{subnet}")


def mac_for(addr: IPv4Address) -> str:
    """Docker's classic MAC: 02:42 followed by the four address bytes."""
    return "02:42:" + ":".join(f"{b:02x}" for b in addr.packed)
