"""kobako's packet rules: one nftables table, rebuilt whole and applied atomically.

Everything lives in `table ip <name>` (`kobako` for the default daemon), so
`nft list table ip kobako` shows all of it and deleting the table removes all of it.
The rules are generated from the current networks and published ports and sent to
`nft -j -f -` (nftables' JSON interface) in one transaction that deletes and re-adds
the table, so a change never leaves a half-applied state.

    prerouting/output (nat)  destination is a local address -> jump ports
    ports                    [ip daddr HOSTIP] tcp dport HP dnat to CIP:CP
    postrouting (nat)        masquerade: outbound from each non-internal subnet;
                             127.0.0.1 traffic DNATed into a bridge; hairpin
    forward (filter)         bridge networks isolated from each other; internal
                             networks kept inside; icc=false
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from kobako.network.errors import NetworkError


@dataclass(frozen=True)
class BridgeRules:
    bridge: str
    subnet: str
    internal: bool = False
    masquerade: bool = True
    icc: bool = True


@dataclass(frozen=True)
class PortRule:
    proto: str  # tcp | udp
    host_ip: str  # "" or 0.0.0.0 for every local address
    host_port: int
    container_ip: str
    container_port: int


def _match(left: dict, right, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> dict:
    return {"meta": {"key": key}}


def _saddr() -> dict:
    return {"payload": {"protocol": "ip", "field": "saddr"}}


def _prefix(cidr: str) -> dict:
    addr, _, length = cidr.partition("/")
    return {"prefix": {"addr": addr, "len": int(length or 32)}}


def ruleset(table: str, bridges: list[BridgeRules], ports: list[PortRule]) -> list[dict]:
    """The nft JSON commands that (re)create the whole table."""
    t = {"family": "ip", "table": table}
    cmds: list[dict] = [
        {"add": {"table": {"family": "ip", "name": table}}},
        {"delete": {"table": {"family": "ip", "name": table}}},
        {"add": {"table": {"family": "ip", "name": table}}},
        {"add": {"set": {**t, "name": "bridges", "type": "ifname"}}},
    ]
    for name, kind, hook, prio in (("prerouting", "nat", "prerouting", -100),
                                   ("output", "nat", "output", -100),
                                   ("postrouting", "nat", "postrouting", 100),
                                   ("forward", "filter", "forward", 0)):
        cmds.append({"add": {"chain": {**t, "name": name, "type": kind, "hook": hook,
                                       "prio": prio, "policy": "accept"}}})
    cmds.append({"add": {"chain": {**t, "name": "ports"}}})

    def rule(chain: str, *expr: dict) -> None:
        cmds.append({"add": {"rule": {**t, "chain": chain, "expr": list(expr)}}})

    if bridges:
        cmds.append({"add": {"element": {**t, "name": "bridges",
                                         "elem": sorted(b.bridge for b in bridges)}}})
    local = _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
    rule("prerouting", local, {"jump": {"target": "ports"}})
    rule("output", local, {"jump": {"target": "ports"}})
    for p in ports:
        expr = []
        if p.host_ip and p.host_ip != "0.0.0.0":
            expr.append(_match({"payload": {"protocol": "ip", "field": "daddr"}}, p.host_ip))
        expr.append(_match({"payload": {"protocol": p.proto, "field": "dport"}}, p.host_port))
        expr.append({"dnat": {"addr": p.container_ip, "port": p.container_port}})
        rule("ports", *expr)
    # published ports are reachable from anywhere the host is; isolation is for direct traffic
    rule("forward", _match({"ct": {"key": "status"}}, "dnat", "in"), {"accept": None})
    for b in bridges:
        oif, iif = _meta("oifname"), _meta("iifname")
        # 127.0.0.1:PORT DNATed into the bridge must leave with a routable source
        rule("postrouting", _match(_saddr(), _prefix("127.0.0.0/8")), _match(oif, b.bridge),
             {"masquerade": None})
        # hairpin: a container reaching a published port of its own bridge via a host address
        rule("postrouting", _match({"ct": {"key": "status"}}, "dnat", "in"),
             _match(oif, b.bridge), _match(_saddr(), _prefix(b.subnet)), {"masquerade": None})
        if b.masquerade and not b.internal:
            rule("postrouting", _match(_saddr(), _prefix(b.subnet)),
                 _match(oif, b.bridge, "!="), {"masquerade": None})
        rule("forward", _match(iif, b.bridge), _match(oif, "@bridges"),
             _match(oif, b.bridge, "!="), {"drop": None})
        if b.internal:
            rule("forward", _match(iif, b.bridge), _match(oif, b.bridge, "!="), {"drop": None})
            rule("forward", _match(oif, b.bridge), _match(iif, b.bridge, "!="), {"drop": None})
        if not b.icc:
            rule("forward", _match(iif, b.bridge), _match(oif, b.bridge), {"drop": None})
    return cmds


def teardown(table: str) -> list[dict]:
    return [{"add": {"table": {"family": "ip", "name": table}}},
            {"delete": {"table": {"family": "ip", "name": table}}}]


async def apply(cmds: list[dict]) -> None:
    """Send one nft JSON transaction; all or nothing."""
    proc = await asyncio.create_subprocess_exec(
        "nft", "-j", "-f", "-", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate(json.dumps({"nftables": cmds}).encode())
    if proc.returncode != 0:
        raise NetworkError(f"nftables rejected kobako's rules: {err.decode().strip()}")


async def table_exists(table: str) -> bool:
    proc = await asyncio.create_subprocess_exec(
        "nft", "-j", "list", "tables", "ip", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    try:
        items = json.loads(out or b"{}").get("nftables", [])
    except ValueError:
        return False
    return any(item.get("table", {}).get("name") == table for item in items)
