"""IPAM choices, nft rule generation, port parsing and DNS answers (no root needed)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from kobako.network import ipam, nat, portmap
from kobako.network.dns import DNSServer, nameservers
from kobako.network.errors import InvalidNetworkConfig, NetworkConflict


def test_choose_subnet_skips_taken_routes():
    taken = [ipaddress.ip_network("172.17.0.0/16"), ipaddress.ip_network("172.18.5.0/24")]
    assert str(ipam.choose_subnet(ipam.DEFAULT_POOLS, taken)) == "172.19.0.0/16"


def test_choose_subnet_exhausted():
    with pytest.raises(NetworkConflict):
        ipam.choose_subnet([{"base": "10.1.0.0/24", "size": 24}],
                           [ipaddress.ip_network("10.0.0.0/8")])


def test_parse_subnet_rejects_host_bits_and_garbage():
    with pytest.raises(InvalidNetworkConfig, match="should be 10.123.0.0/24"):
        ipam.parse_subnet("10.123.0.5/24")
    with pytest.raises(InvalidNetworkConfig):
        ipam.parse_subnet("nonsense")


def test_allocate_lowest_free_skipping_gateway_and_range():
    subnet = ipaddress.ip_network("10.123.0.0/24")
    gw = ipaddress.ip_address("10.123.0.1")
    used = {ipaddress.ip_address("10.123.0.2")}
    assert str(ipam.allocate(subnet, None, gw, used)) == "10.123.0.3"
    rng = ipaddress.ip_network("10.123.0.128/25")
    assert str(ipam.allocate(subnet, rng, gw, used)) == "10.123.0.128"
    full = {ipaddress.ip_address(f"10.123.0.{i}") for i in range(2, 255)}
    with pytest.raises(NetworkConflict):
        ipam.allocate(subnet, None, gw, full)


def test_check_in_subnet():
    subnet = ipaddress.ip_network("10.123.0.0/24")
    ipam.check_in_subnet(ipaddress.ip_address("10.123.0.254"), subnet, "ip")
    for bad in ("10.99.0.1", "10.123.0.0", "10.123.0.255"):
        with pytest.raises(InvalidNetworkConfig):
            ipam.check_in_subnet(ipaddress.ip_address(bad), subnet, "ip")


def test_mac_from_address():
    assert ipam.mac_for(ipaddress.ip_address("10.123.0.254")) == "02:42:0a:7b:00:fe"


def test_ruleset_shape():
    cmds = nat.ruleset("kbk_t", [nat.BridgeRules("br-a", "10.123.1.0/24"),
                                 nat.BridgeRules("br-b", "10.123.2.0/24", internal=True,
                                                 icc=False)],
                       [nat.PortRule("tcp", "127.0.0.1", 8080, "10.123.1.2", 80)])
    # the table is deleted and re-added in the same transaction
    assert [next(iter(c)) for c in cmds[:3]] == ["add", "delete", "add"]
    rules = [c["add"]["rule"] for c in cmds if "rule" in c.get("add", {})]
    dnat = [r for r in rules if r["chain"] == "ports"]
    assert dnat[0]["expr"][-1] == {"dnat": {"addr": "10.123.1.2", "port": 80}}
    masq = [r for r in rules if r["chain"] == "postrouting"
            and any(e.get("match", {}).get("op") == "!=" for e in r["expr"])]
    assert len(masq) == 1  # only the non-internal network masquerades outbound
    forward = [r for r in rules if r["chain"] == "forward"]
    assert len(forward) == 1 + 2 + 2 + 1  # dnat accept, isolation x2, internal x2, icc


def test_port_wanted_and_ports_doc():
    hc = {"PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
                           "53/udp": [{"HostPort": ""}]}, "PublishAllPorts": True}
    wants = portmap.wanted(hc, {"80/tcp": {}, "443/tcp": {}})
    assert ("tcp", 80, "127.0.0.1", "8080") in wants
    assert ("udp", 53, "", "") in wants and ("tcp", 443, "", "") in wants
    with pytest.raises(InvalidNetworkConfig):
        portmap.wanted({"PortBindings": {"http/tcp": []}}, None)
    doc = portmap.ports_doc([portmap.Binding("tcp", 80, "127.0.0.1", 8080)], {"443/tcp": {}})
    assert doc == {"443/tcp": None, "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}


def test_reserve_detects_taken_port():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        with pytest.raises(NetworkConflict, match="already allocated"):
            portmap.reserve("tcp", "127.0.0.1", str(port))
    got, sock = portmap.reserve("tcp", "127.0.0.1", "")
    assert got > 0
    sock.close()


def test_nameservers_from_resolv_conf():
    text = "search x\nnameserver 127.0.0.11\nnameserver 10.0.0.2\nnameserver ::1\n"
    assert nameservers(text) == ["10.0.0.2"]


def test_dns_answers_known_names_and_fails_without_upstream():
    server = DNSServer(lambda cid, name: ["10.123.0.5"] if name == "web" else None,
                       lambda cid, ip: None, lambda cid: [])

    async def ask(name: str) -> DNSRecord:
        raw = await server.answer("c1", DNSRecord.question(name).pack(), tcp=False)
        return DNSRecord.parse(raw)

    reply = asyncio.run(ask("web"))
    assert [str(rr.rdata) for rr in reply.rr] == ["10.123.0.5"]
    assert reply.rr[0].rtype == QTYPE.A
    other = asyncio.run(ask("example.invalid"))
    assert other.header.rcode == RCODE.SERVFAIL
