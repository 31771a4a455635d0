"""NetworkService: Docker's networks on the host — the engine's and the API's entry point.

The container service calls the hooks (see kobako.engine.containers):

    on_create(doc, networking)  validate the networks/addresses asked for, record them
    on_start(doc) -> netns      reserve ports, make the namespace, veths, addresses,
                                routes, DNS listener and rules; fill NetworkSettings
    on_stop(doc)                undo all of that (idempotent; also after failed starts)
    on_remove(doc)              release whatever is still held

An address is allocated when a container starts and released when it stops, as
Docker does; a static --ip is re-requested at each start. The IPAM rows are the
truth about who holds which address; on start-up the daemon rebuilds its rules,
port reservations and DNS listeners for the containers still running, and removes
every namespace file, veth and row that no running container owns.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import os
import re
import secrets
import time
from typing import Any

from kobako.engine.errors import Forbidden
from kobako.network import bridge, exposure, ipam, nat, netns, portmap
from kobako.network.dns import DNSServer, nameservers
from kobako.network.errors import (
    InvalidNetworkConfig,
    NetworkConflict,
    NetworkError,
    NetworkNotFound,
)
from kobako.network.store import Endpoint, NetworkStore
from kobako.timestamps import now_rfc3339

log = logging.getLogger("kobakod.network")

DEFAULT_EXEC_ROOT = "/run/kobako"
PREDEFINED = ("bridge", "host", "none")
OPT_BRIDGE_NAME = "com.docker.network.bridge.name"
OPT_MTU = "com.docker.network.driver.mtu"
OPT_ICC = "com.docker.network.bridge.enable_icc"
OPT_MASQ = "com.docker.network.bridge.enable_ip_masquerade"
RESOLV_CONF_ENV = "KOBAKO_RESOLV_CONF"
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_BAD_NAME = re.compile(r"[/\x00-\x1f]")  # dockerd takes "test 01"; not a path or control


def _truthy(value: Any, default: bool = True) -> bool:
    if value is None or value == "":
        return default
    return str(value).lower() in ("1", "true", "yes", "on")


class Network:
    """One network's document and what the driver needs from it."""

    def __init__(self, doc: dict):
        self.doc = doc

    @property
    def id(self) -> str:
        return self.doc["Id"]

    @property
    def name(self) -> str:
        return self.doc["Name"]

    @property
    def driver(self) -> str:
        return self.doc["Driver"]

    @property
    def is_bridge(self) -> bool:
        return self.driver == "bridge"

    @property
    def user_defined(self) -> bool:
        return self.name not in PREDEFINED

    @property
    def bridge(self) -> str:
        return self.doc["Kobako"]["bridge"]

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipam.parse_subnet(self.doc["IPAM"]["Config"][0]["Subnet"])

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return ipam.parse_address(self.doc["IPAM"]["Config"][0]["Gateway"])

    @property
    def ip_range(self) -> ipaddress.IPv4Network | None:
        text = self.doc["IPAM"]["Config"][0].get("IPRange")
        return ipam.parse_subnet(text) if text else None

    @property
    def auxiliary(self) -> set[ipaddress.IPv4Address]:
        """Addresses IPAM keeps out of allocation (--aux-address)."""
        return {ipam.parse_address(a) for c in self.doc["IPAM"]["Config"]
                for a in (c.get("AuxiliaryAddresses") or {}).values()}

    @property
    def mtu(self) -> int:
        return int(self.doc["Options"].get(OPT_MTU) or 1500)

    def rules(self) -> nat.BridgeRules:
        opts = self.doc["Options"]
        return nat.BridgeRules(self.bridge, str(self.subnet), bool(self.doc["Internal"]),
                               _truthy(opts.get(OPT_MASQ)), _truthy(opts.get(OPT_ICC)))

    def public(self) -> dict:
        return {k: v for k, v in self.doc.items() if k != "Kobako"}


# daemons' network keys -> their exec-root, to clean up after daemons that died
REGISTRY = "/run/kobako-netkeys"


class NetworkService:
    def __init__(self, *, conn, exec_root: str, containers: Any, events: Any = None,
                 bip: str | None = None, pools: list[dict] | None = None,
                 resolv_conf: str | None = None):
        self.store = NetworkStore(conn)
        self.exec_root = exec_root
        self.containers = containers
        self.events = events
        self.bip = bip
        self.pools = pools or ipam.DEFAULT_POOLS
        self.resolv_conf = resolv_conf or os.environ.get(RESOLV_CONF_ENV) or "/etc/resolv.conf"
        # one daemon per exec-root: the default one owns kobako0 and table `kobako`;
        # others (tests, side-by-side daemons) get names of their own
        if os.path.abspath(exec_root) == DEFAULT_EXEC_ROOT:
            self.key, self.default_bridge, self.table = "", "kobako0", "kobako"
        else:
            key = hashlib.sha256(os.path.abspath(exec_root).encode()).hexdigest()[:8]
            self.key, self.default_bridge, self.table = key, f"kbk{key}0", f"kobako_{key}"
        self.tag = f"kobako:{self.key}:"
        self.netns_dir = os.path.join(exec_root, "netns")
        self.nets: dict[str, Network] = {d["Id"]: Network(d) for d in self.store.networks()}
        self.ports: dict[str, list[portmap.Binding]] = {}
        self.lock = asyncio.Lock()
        self.restoring: asyncio.Task | None = None  # startup's background part
        self.dns = DNSServer(self._dns_lookup, self._dns_reverse, self._dns_upstreams)

    # -- daemon lifecycle --------------------------------------------------------------

    async def _sweep_dead_daemons(self) -> None:
        """Take down the bridges and rules of daemons whose exec-root is gone.

        Each daemon registers its key and exec-root under REGISTRY; a daemon that was
        killed and never came back (a test's, typically) would otherwise leave its
        bridges and nft table on the host forever."""
        os.makedirs(REGISTRY, mode=0o700, exist_ok=True)
        with open(os.path.join(REGISTRY, self.key or "default"), "w") as f:
            f.write(os.path.abspath(self.exec_root))
        for key in os.listdir(REGISTRY):
            path = os.path.join(REGISTRY, key)
            try:
                with open(path) as f:
                    exec_root = f.read().strip()
            except OSError:
                continue
            if key in (self.key, "default") or os.path.isdir(exec_root):
                continue
            for ifname in await bridge.tagged_links(f"kobako:{key}:"):
                await bridge.delete_link(ifname)
            if await nat.table_exists(f"kobako_{key}"):
                await nat.apply(nat.teardown(f"kobako_{key}"))
            os.unlink(path)

    async def startup(self, repaired: asyncio.Event) -> None:
        """The predefined networks now (a --bip that attached containers forbid stops the
        daemon); the rest on a task of its own, so that the API answers meanwhile: it
        holds the network lock, which every network operation waits for, while it
        imports pyroute2 (on a thread) and brings back the bridges, rules, port
        reservations and DNS of the running containers; once `repaired` is set (the
        containers' own repair is done) it sweeps what no running container owns."""
        async with self.lock:
            await self._predefined()
        self.restoring = asyncio.get_running_loop().create_task(self._restore(repaired))
        await asyncio.sleep(0)  # the task takes the lock before any request can

    async def _restore(self, repaired: asyncio.Event) -> None:
        try:
            async with self.lock:
                await asyncio.to_thread(bridge.netlink)
                await self._restore_running()
            await repaired.wait()
            await self.sweep()
        except Exception:  # noqa: BLE001 - the daemon goes on; network operations report
            log.exception("restoring the networks failed")

    async def _restore_running(self) -> None:
        try:
            await self._sweep_dead_daemons()
        except OSError as err:
            log.warning("cannot clean up after dead daemons: %s", err)
        try:
            with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
                f.write("1")
        except OSError as err:
            log.warning("cannot enable IPv4 forwarding: %s", err)
        for net in self.nets.values():
            if net.is_bridge:
                await self._ensure_bridge(net)
        running = self._running_ids()
        for ep in self.store.endpoints():
            if ep.container_id in running and netns.is_mounted(self._ns_path(ep.container_id)):
                c = self.containers.containers[ep.container_id]
                net = self.nets.get(ep.network_id)
                if net is not None and net.user_defined:
                    try:
                        await self.dns.add(ep.container_id, self._ns_path(ep.container_id))
                    except OSError as err:
                        log.warning("no DNS for %s: %s", ep.container_id[:12], err)
                if ep.container_id not in self.ports:
                    self.ports[ep.container_id] = self._rebind(c.doc)
        await self._apply()

    def _owners(self) -> set[str]:
        """Containers that own their network: running ones, and those being started,
        stopped or removed (their lock is held; restart policies start some at start-up)."""
        return self._running_ids() | {
            cid for cid, c in self.containers.containers.items() if c.lock.locked()}

    def release_stopped(self) -> None:
        """Unmount the network namespaces of containers that are not running any more
        (after a crash, a SIGKILL), and forget their endpoints. No netlink needed: with
        its last reference gone the namespace goes, and its veth pair with it."""
        owners = self._owners()
        for ep in self.store.endpoints():
            if ep.container_id not in owners:
                self.store.delete_endpoint(ep.network_id, ep.container_id)
        if os.path.isdir(self.netns_dir):
            for name in os.listdir(self.netns_dir):
                if name not in owners:
                    netns.remove(os.path.join(self.netns_dir, name))
        for cid in list(self.ports):
            if cid not in owners:
                portmap.release(self.ports.pop(cid))

    async def sweep(self) -> None:
        """Remove what no running container owns: namespaces, links, port reservations,
        `ip netns` exposures; then the rules are rebuilt."""
        async with self.lock:
            running = self._owners()
            for ep in self.store.endpoints():
                if ep.container_id not in running:
                    await bridge.delete_link(ep.host_ifname)
            self.release_stopped()
            owned = {ep.host_ifname for ep in self.store.endpoints()}
            bridges = {n.bridge for n in self.nets.values() if n.is_bridge}
            for ifname, (_alias, _kind) in (await bridge.tagged_links(self.tag)).items():
                if ifname not in owned and ifname not in bridges:
                    await bridge.delete_link(ifname)
            for exposed in exposure.records():
                if exposed.container_id in self.containers.containers \
                        and exposed.container_id not in running:
                    self._unexpose(exposed.container_id)
            await self._apply()

    async def shutdown(self) -> None:
        """Stop serving DNS; with no container running, take the bridges and rules down."""
        if self.restoring is not None and not self.restoring.done():
            self.restoring.cancel()  # stopped right after the start: the next start redoes it
            await asyncio.gather(self.restoring, return_exceptions=True)
        await self.dns.close()
        for bindings in self.ports.values():
            portmap.release(bindings)
        self.ports.clear()
        if self._running_ids():
            return  # live restore: the containers keep their network
        for net in self.nets.values():
            if net.is_bridge:
                await bridge.delete_link(net.bridge)
        await nat.apply(nat.teardown(self.table))
        try:
            os.unlink(os.path.join(REGISTRY, self.key or "default"))
        except FileNotFoundError:
            pass

    def _running_ids(self) -> set[str]:
        return {cid for cid, c in self.containers.containers.items() if c.running}

    def _ns_path(self, container_id: str) -> str:
        return os.path.join(self.netns_dir, container_id)

    async def _predefined(self) -> None:
        by_name = {n.name: n for n in self.nets.values()}
        for name, driver in (("host", "host"), ("none", "null")):
            if name not in by_name:
                self._insert(self._doc(name, driver, subnet=None, gateway=None))
        current = by_name.get("bridge")
        if self.bip:
            iface = ipaddress.ip_interface(self.bip)
            subnet, gateway = str(iface.network), str(iface.ip)
        elif current is not None:
            subnet, gateway = str(current.subnet), str(current.gateway)
        else:
            chosen = ipam.choose_subnet(self.pools, await self._taken_subnets())
            subnet, gateway = str(chosen), str(ipam.default_gateway(chosen))
        opts = {"com.docker.network.bridge.default_bridge": "true", OPT_ICC: "true",
                OPT_MASQ: "true", "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
                OPT_BRIDGE_NAME: self.default_bridge, OPT_MTU: "1500"}
        if current is not None and (str(current.subnet), str(current.gateway)) == (subnet,
                                                                                   gateway):
            return
        if current is not None:
            if self.store.endpoints(current.id):
                raise NetworkError(f"cannot change the default bridge to {self.bip}: "
                                   "containers are still attached to it")
            self.store.delete_network(current.id)
            del self.nets[current.id]
        self._insert(self._doc("bridge", "bridge", subnet=subnet, gateway=gateway,
                               options=opts, bridge_name=self.default_bridge))

    async def _taken_subnets(self) -> list[ipaddress.IPv4Network]:
        taken = [n.subnet for n in self.nets.values() if n.is_bridge]
        for cidr in await bridge.host_routes():
            net = ipaddress.ip_network(cidr, strict=False)
            if isinstance(net, ipaddress.IPv4Network) and not net.is_loopback:
                taken.append(net)
        return taken

    def _doc(self, name: str, driver: str, *, subnet: str | None, gateway: str | None,
             ip_range: str | None = None, options: dict | None = None,
             labels: dict | None = None, internal: bool = False, attachable: bool = False,
             bridge_name: str | None = None, auxiliary: dict | None = None,
             ipam_options: dict | None = None) -> dict:
        net_id = secrets.token_hex(32)
        config = []
        if subnet:
            entry = {"Subnet": subnet, "Gateway": gateway}
            if ip_range:
                entry["IPRange"] = ip_range
            if auxiliary:
                entry["AuxiliaryAddresses"] = auxiliary
            config.append(entry)
        doc = {
            "Name": name, "Id": net_id, "Created": now_rfc3339(), "Scope": "local", "Driver": driver,
            "EnableIPv4": True, "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": ipam_options, "Config": config},
            "Internal": internal, "Attachable": attachable, "Ingress": False,
            "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": {},
            "Options": options or {}, "Labels": labels or {},
            "Kobako": {"bridge": bridge_name or ""},
        }
        return doc

    def _insert(self, doc: dict) -> Network:
        self.store.insert_network(doc)
        net = Network(doc)
        self.nets[net.id] = net
        return net

    async def _ensure_bridge(self, net: Network) -> None:
        await bridge.ensure_bridge(net.bridge, str(net.gateway), net.subnet.prefixlen, net.mtu,
                                   self.tag + net.id[:12])

    async def _apply(self) -> None:
        bridges = [n.rules() for n in self.nets.values() if n.is_bridge]
        rules = []
        for cid, bindings in self.ports.items():
            ip = self._primary_ip(cid)
            if ip is None:
                continue
            for b in bindings:
                rules.append(nat.PortRule(b.proto, b.host_ip, b.host_port, ip, b.container_port))
        await nat.apply(nat.ruleset(self.table, bridges, rules))

    def _primary_ip(self, container_id: str) -> str | None:
        eps = sorted((ep for ep in self.store.endpoints() if ep.container_id == container_id),
                     key=lambda ep: ep.ifname)
        return eps[0].ip if eps else None

    # -- lookups -----------------------------------------------------------------------

    def _find(self, ref: str) -> Network | None:
        try:
            return self.get(ref)
        except NetworkNotFound:
            return None

    def get(self, ref: str) -> Network:
        if ref in self.nets:
            return self.nets[ref]
        for net in self.nets.values():
            if net.name == ref:
                return net
        matches = [n for n in self.nets.values() if n.id.startswith(ref)] if ref else []
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidNetworkConfig(f"network {ref} is ambiguous ({len(matches)} matches "
                                       "found based on ID prefix)")
        raise NetworkNotFound(f"network {ref} not found")

    def _container_networks(self, doc: dict) -> list[Network]:
        """The bridge networks a container is attached to, in attachment order."""
        out = []
        for name, entry in (doc["NetworkSettings"].get("Networks") or {}).items():
            try:
                net = self.get((entry or {}).get("NetworkID") or name)
            except NetworkNotFound:
                net = self.get(name)
            if net.is_bridge:
                out.append(net)
        return out

    @staticmethod
    def _mode(doc: dict) -> str:
        mode = doc["HostConfig"].get("NetworkMode") or "default"
        return "bridge" if mode == "default" else mode

    @staticmethod
    def _special(mode: str) -> bool:
        return mode in ("host", "none") or mode.startswith("container:")

    # -- container hooks ---------------------------------------------------------------

    async def on_create(self, doc: dict, networking: dict) -> None:
        mode = self._mode(doc)
        settings = doc["NetworkSettings"]
        portmap.wanted(doc["HostConfig"], doc["Config"].get("ExposedPorts"))  # syntax check
        endpoints = (networking or {}).get("EndpointsConfig") or {}
        if self._special(mode):
            if mode in ("host", "none"):
                net = self.get(mode)
                # an --ip or --alias there is refused as dockerd refuses it
                self._endpoint_settings(net, endpoints.get(mode) or {}, doc["Id"])
                entry = settings["Networks"].setdefault(mode, {})
                entry.update({"NetworkID": net.id})
            return
        # As dockerd, a network that does not exist (yet) is no error here: the start
        # fails with "network X not found" if it still does not (a 404 at create would
        # make the docker CLI try to pull the image).
        primary = self._find(mode)
        if primary is not None and not primary.is_bridge:
            raise InvalidNetworkConfig(f"network {mode} cannot be used with other networks")
        primary_name = primary.name if primary else mode
        wanted = {primary_name: endpoints.get(mode) or endpoints.get(primary_name)
                  or (primary and endpoints.get(primary.id)) or endpoints.get("default") or {}}
        for ref, cfg in endpoints.items():
            if ref in ("default", mode):
                continue
            net = self._find(ref)
            if net is None:
                wanted[ref] = cfg or {}
            elif primary is None or net.id != primary.id:
                if not net.is_bridge:
                    raise InvalidNetworkConfig(
                        f"container cannot be connected to network {net.name} and {primary_name}")
                wanted[net.name] = cfg or {}
        mac = doc["Config"].get("MacAddress")
        if mac and not wanted[primary_name].get("MacAddress"):
            # the pre-1.44 place of it (dockerd moves it to the primary endpoint too)
            wanted[primary_name] = {**wanted[primary_name], "MacAddress": mac}
        networks = {}
        for name, cfg in wanted.items():
            networks[name] = self._endpoint_settings(self._find(name), cfg, doc["Id"])
        settings["Networks"] = networks
        # the MACs asked for, kept for every start (the entries' own clear at each stop)
        macs = {name: e["MacAddress"] for name, e in networks.items() if e["MacAddress"]}
        if macs:
            doc.setdefault("Kobako", {})["macs"] = macs

    def _endpoint_settings(self, net: Network | None, cfg: dict, container_id: str) -> dict:
        """Validate an EndpointsConfig entry; the Networks entry as inspect shows it.
        For a network that does not exist (yet), the entry as given."""
        cfg = cfg or {}
        ipam_cfg = cfg.get("IPAMConfig") or None
        static = (ipam_cfg or {}).get("IPv4Address") or ""
        aliases = [a for a in (cfg.get("Aliases") or []) if a]
        if static and net is not None:
            if not net.user_defined:
                raise InvalidNetworkConfig(
                    "user specified IP address is supported on user defined networks only")
            addr = ipam.parse_address(static, "IPv4 address")
            ipam.check_in_subnet(addr, net.subnet, "IPv4 address")
            if addr == net.gateway:
                raise NetworkConflict(f"Address already in use: {addr} is the gateway")
            if addr in net.auxiliary:
                raise NetworkConflict(f"Address already in use: {addr} is reserved")
            for ep in self.store.endpoints(net.id):
                if ep.ip == str(addr) and ep.container_id != container_id:
                    raise NetworkConflict(f"Address already in use: {addr}")
        if aliases and net is not None and not net.user_defined:
            raise InvalidNetworkConfig(
                "network-scoped alias is supported only for containers in user defined networks")
        mac = cfg.get("MacAddress") or ""
        if mac and not _MAC.match(mac):
            raise InvalidNetworkConfig(f"invalid MAC address: {mac}")
        return {
            "IPAMConfig": ipam_cfg, "Links": cfg.get("Links"), "Aliases": aliases or None,
            "MacAddress": mac.lower(), "DriverOpts": cfg.get("DriverOpts"), "GwPriority": 0,
            "NetworkID": net.id if net else "", "EndpointID": "", "Gateway": "", "IPAddress": "",
            "IPPrefixLen": 0, "IPv6Gateway": "", "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0, "DNSNames": None,
        }

    async def on_start(self, doc: dict) -> str | None:
        mode = self._mode(doc)
        if mode in ("host", "none"):  # dockerd's network events come for these too
            self._event("connect", self.get(mode), {"container": doc["Id"]})
        if mode == "none":
            return await self._sandbox_only(doc)
        if self._special(mode):
            return None
        cid = doc["Id"]
        wants = portmap.wanted(doc["HostConfig"], doc["Config"].get("ExposedPorts"))
        async with self.lock:
            try:
                bindings = portmap.reserve_all(wants)
            except NetworkConflict as err:
                raise NetworkError(
                    f"driver failed programming external connectivity on endpoint "
                    f"{doc['Name'].lstrip('/')}: {err}") from None
            self.ports[cid] = bindings
            ns_path = self._ns_path(cid)
            try:
                await self._fresh_netns(ns_path)
                attached = self._container_networks(doc)
                for index, net in enumerate(attached):
                    await self._attach(doc, net, f"eth{index}", default_route=index == 0)
                doc["NetworkSettings"]["Ports"] = portmap.ports_doc(
                    bindings, doc["Config"].get("ExposedPorts"))
                self._fill_sandbox(doc, ns_path)
                self._fill_primary(doc)
                await self._apply()
            except BaseException:
                await self._detach_all(doc)
                raise
        for net in attached:
            self._event("connect", net, {"container": cid})
        return ns_path

    async def _sandbox_only(self, doc: dict) -> str:
        """--network none: a namespace with only lo, kept as a file like the others, so
        SandboxKey names it (nsenter, `kobako netns expose`), as dockerd's sandbox."""
        ns_path = self._ns_path(doc["Id"])
        await self._fresh_netns(ns_path, loopback=True)
        self._fill_sandbox(doc, ns_path)
        networks = doc["NetworkSettings"].setdefault("Networks", {})
        networks.setdefault("none", {})["EndpointID"] = secrets.token_hex(32)
        return ns_path

    @staticmethod
    async def _fresh_netns(ns_path: str, loopback: bool = False) -> None:
        if os.path.exists(ns_path):  # a stale one (a crash): it is ours to replace
            netns.remove(ns_path)
        await asyncio.to_thread(netns.create, ns_path, loopback)

    def _fill_sandbox(self, doc: dict, ns_path: str) -> None:
        doc["NetworkSettings"]["SandboxKey"] = ns_path
        doc["NetworkSettings"]["SandboxID"] = hashlib.sha256(ns_path.encode()).hexdigest()

    async def _attach(self, doc: dict, net: Network, ifname: str, default_route: bool) -> None:
        cid = doc["Id"]
        entry = doc["NetworkSettings"]["Networks"][net.name]
        static = (entry.get("IPAMConfig") or {}).get("IPv4Address") or ""
        if static:
            addr = ipam.parse_address(static)
            ipam.check_in_subnet(addr, net.subnet, "IPv4 address")
        else:
            used = {ipaddress.ip_address(ep.ip) for ep in self.store.endpoints(net.id)}
            used |= self._static_reservations(net, cid)
            addr = ipam.allocate(net.subnet, net.ip_range, net.gateway, used)
        endpoint_id = secrets.token_hex(32)
        # asked for, else made from the address
        mac = (doc.get("Kobako") or {}).get("macs", {}).get(net.name) or ipam.mac_for(addr)
        ep = Endpoint(net.id, cid, endpoint_id, str(addr), mac, ifname,
                      "veth" + endpoint_id[:11])
        self.store.insert_endpoint(ep)  # the address is ours from here on (or 409)
        itf = bridge.Interface(ep.host_ifname, ifname, ep.ip, net.subnet.prefixlen, ep.mac,
                               str(net.gateway) if default_route and not net.doc["Internal"]
                               else None, net.mtu, self.tag + endpoint_id[:12])
        await bridge.attach(self._ns_path(cid), net.bridge, itf)
        dns_names = None
        if net.user_defined:
            dns_names = _dns_names(doc, entry)
            await self.dns.add(cid, self._ns_path(cid))
        entry.update({"EndpointID": endpoint_id, "Gateway": str(net.gateway),
                      "IPAddress": ep.ip, "IPPrefixLen": net.subnet.prefixlen,
                      "MacAddress": ep.mac, "DNSNames": dns_names, "NetworkID": net.id})

    @staticmethod
    def _auxiliary_addresses(given: Any, subnet: ipaddress.IPv4Network) -> dict[str, str]:
        """IPAM's AuxiliaryAddresses (--aux-address): names of addresses in the subnet
        that are never given to a container."""
        if not given:
            return {}
        if not isinstance(given, dict):
            raise InvalidNetworkConfig("AuxiliaryAddresses must be a JSON object")
        out = {}
        for name, text in given.items():
            addr = ipam.parse_address(str(text), "auxiliary address")
            ipam.check_in_subnet(addr, subnet, "auxiliary address")
            out[str(name)] = str(addr)
        return out

    def _static_reservations(self, net: Network, except_id: str) -> set:
        """Addresses never handed out: the auxiliary ones and other containers' static IPs."""
        out = net.auxiliary
        for cid, c in self.containers.containers.items():
            if cid == except_id:
                continue
            for entry in (c.doc["NetworkSettings"].get("Networks") or {}).values():
                ip = ((entry or {}).get("IPAMConfig") or {}).get("IPv4Address")
                if ip and (entry or {}).get("NetworkID") == net.id:
                    out.add(ipaddress.ip_address(ip))
        return out

    def _fill_primary(self, doc: dict) -> None:
        """The top-level (legacy) fields mirror the default bridge's endpoint, as Docker's."""
        settings = doc["NetworkSettings"]
        entry = (settings.get("Networks") or {}).get("bridge") or {}
        for key in ("EndpointID", "Gateway", "IPAddress", "IPPrefixLen", "MacAddress"):
            settings[key] = entry.get(key, "" if key != "IPPrefixLen" else 0)
        settings["Bridge"] = ""

    def _unexpose(self, container_id: str) -> None:
        """`kobako netns expose` links of a container that stopped go with it."""
        try:
            for name in exposure.unexpose_container(container_id):
                log.info("removed %s/%s of %s", exposure.NETNS_DIR, name, container_id[:12])
        except OSError as err:
            log.warning("cannot remove the netns links of %s: %s", container_id[:12], err)

    async def on_stop(self, doc: dict) -> None:
        await asyncio.to_thread(self._unexpose, doc["Id"])
        mode = self._mode(doc)
        if mode in ("host", "none"):
            self._event("disconnect", self.get(mode), {"container": doc["Id"]})
        if mode == "none":  # its namespace only: nothing of the network lock's
            await self._detach_all(doc)
            return
        if self._special(mode) and doc["Id"] not in self.ports:
            return
        async with self.lock:
            await self._detach_all(doc)
            await self._apply()

    async def _detach_all(self, doc: dict) -> None:
        cid = doc["Id"]
        portmap.release(self.ports.pop(cid, []))
        await self.dns.remove(cid)
        for ep in self.store.endpoints():
            if ep.container_id == cid:
                await bridge.delete_link(ep.host_ifname)
                self.store.delete_endpoint(ep.network_id, cid)
                if ep.network_id in self.nets:
                    self._event("disconnect", self.nets[ep.network_id], {"container": cid})
        await asyncio.to_thread(netns.remove, self._ns_path(cid))
        settings = doc["NetworkSettings"]
        for entry in (settings.get("Networks") or {}).values():
            if entry:
                entry.update({"EndpointID": "", "Gateway": "", "IPAddress": "",
                              "IPPrefixLen": 0, "MacAddress": "", "DNSNames": None})
        settings.update({"Ports": {}, "SandboxKey": "", "SandboxID": ""})
        if not self._special(self._mode(doc)):
            self._fill_primary(doc)

    async def on_remove(self, doc: dict) -> None:
        await asyncio.to_thread(self._unexpose, doc["Id"])
        async with self.lock:
            held = doc["Id"] in self.ports or any(
                ep.container_id == doc["Id"] for ep in self.store.endpoints())
            await self._detach_all(doc)
            if held:
                await self._apply()

    # -- for the container's /etc files --------------------------------------------------

    def uses_embedded_dns(self, doc: dict) -> bool:
        if self._special(self._mode(doc)):
            return False
        return any(n.user_defined for n in self._container_networks(doc))

    def host_resolv_conf(self) -> str:
        try:
            with open(self.resolv_conf) as f:
                return f.read()
        except OSError:
            return ""

    def container_addresses(self, doc: dict) -> list[str]:
        """The container's own addresses (for its /etc/hosts)."""
        return [e["IPAddress"] for e in (doc["NetworkSettings"].get("Networks") or {}).values()
                if e and e.get("IPAddress")]

    # -- embedded DNS ------------------------------------------------------------------

    def _peers(self, container_id: str) -> list[tuple[Network, Endpoint, Any]]:
        """(network, endpoint, container) of everyone sharing a user network with it."""
        mine = {ep.network_id for ep in self.store.endpoints() if ep.container_id == container_id}
        out = []
        for ep in self.store.endpoints():
            net = self.nets.get(ep.network_id)
            c = self.containers.containers.get(ep.container_id)
            if ep.network_id in mine and net is not None and net.user_defined and c is not None:
                out.append((net, ep, c))
        return out

    def _dns_lookup(self, container_id: str, name: str) -> list[str] | None:
        asking = self.containers.containers.get(container_id)
        links = list((asking.doc["HostConfig"].get("Links") or []) if asking else [])
        for entry in ((asking.doc["NetworkSettings"].get("Networks") or {}).values()
                      if asking else []):
            links += (entry or {}).get("Links") or []  # an endpoint's own (connect --link)
        for link in links:
            linked, _, alias = link.partition(":")  # "/name:/own/alias", --link name:alias
            if name == alias.rsplit("/", 1)[-1].lower():
                name = linked.lstrip("/").lower()  # an alias only this container knows
                break
        found = []
        for net, ep, c in self._peers(container_id):
            entry = (c.doc["NetworkSettings"].get("Networks") or {}).get(net.name) or {}
            names = {n.lower() for n in _dns_names(c.doc, entry)}
            if name in names or name in {f"{n}.{net.name.lower()}" for n in names}:
                found.append(ep.ip)
        return sorted(set(found)) or None

    def _dns_reverse(self, container_id: str, ip: str) -> list[str] | None:
        for net, ep, c in self._peers(container_id):
            if ep.ip == ip:
                return [f"{c.name}.{net.name}"]
        return None

    def _dns_upstreams(self, container_id: str) -> list[str]:
        c = self.containers.containers.get(container_id)
        dns = (c.doc["HostConfig"].get("Dns") or []) if c is not None else []
        return list(dns) or nameservers(self.host_resolv_conf())

    # -- ports -------------------------------------------------------------------------

    def _rebind(self, doc: dict) -> list[portmap.Binding]:
        """After a daemon restart: hold the running container's host ports again."""
        out = []
        for key, entries in (doc["NetworkSettings"].get("Ports") or {}).items():
            port, proto = portmap.parse_port_key(key)
            for e in entries or []:
                try:
                    _, sock = portmap.reserve(proto, e.get("HostIp") or "", str(e["HostPort"]))
                except (NetworkConflict, InvalidNetworkConfig) as err:
                    log.warning("cannot hold host port %s again: %s", e, err)
                    sock = None
                out.append(portmap.Binding(proto, port, e.get("HostIp") or "0.0.0.0",
                                           int(e["HostPort"]), sock))
        return out

    # -- the /networks API -------------------------------------------------------------

    def _event(self, action: str, net: Network, extra: dict | None = None) -> None:
        if self.events is not None:
            self.events.publish("network", action, net.id,
                                {"name": net.name, "type": net.driver, **(extra or {})})

    def _containers_of(self, net: Network) -> dict:
        out = {}
        for ep in self.store.endpoints(net.id):
            c = self.containers.containers.get(ep.container_id)
            out[ep.container_id] = {
                "Name": c.name if c is not None else "", "EndpointID": ep.endpoint_id,
                "MacAddress": ep.mac, "IPv4Address": f"{ep.ip}/{net.subnet.prefixlen}",
                "IPv6Address": "",
            }
        return out

    async def inspect(self, ref: str, verbose: bool = False) -> dict:
        net = self.get(ref)
        doc = net.public()
        doc["Containers"] = self._containers_of(net) if net.is_bridge else {}
        return doc

    async def list(self, filters: dict[str, list[str]]) -> list[dict]:
        out = []
        for net in sorted(self.nets.values(), key=lambda n: n.doc["Created"]):
            if self._matches(net, filters or {}):
                doc = net.public()
                doc["Containers"] = {}
                out.append(doc)
        return out

    def _matches(self, net: Network, filters: dict[str, list[str]]) -> bool:
        for key, values in filters.items():
            if not values:
                continue
            if key == "name" and not any(v in net.name for v in values):
                return False
            if key == "id" and not any(net.id.startswith(v) for v in values):
                return False
            if key == "driver" and net.driver not in values:
                return False
            if key == "scope" and "local" not in values:
                return False
            if key == "type":
                kind = "custom" if net.user_defined else "builtin"
                if kind not in values:
                    return False
            if key == "label":
                labels = net.doc.get("Labels") or {}
                for spec in values:
                    k, sep, v = spec.partition("=")
                    if k not in labels or (sep and labels[k] != v):
                        return False
            if key == "dangling":
                dangling = net.user_defined and not self._in_use(net)
                if _truthy(values[0]) != dangling:
                    return False
            if key not in ("name", "id", "driver", "scope", "type", "label", "dangling"):
                raise InvalidNetworkConfig(f"invalid filter '{key}'")
        return True

    def _in_use(self, net: Network) -> bool:
        return bool(self.store.endpoints(net.id))

    async def create(self, body: dict) -> dict:
        name = body.get("Name") or ""
        if not isinstance(name, str) or not name.strip() or _BAD_NAME.search(name):
            raise InvalidNetworkConfig(f"invalid network name {name!r}")
        if name in (*PREDEFINED, "default", "ingress"):  # (dockerd's words, trailing space too)
            raise Forbidden(f"operation is not permitted on predefined {name} network ")
        driver = body.get("Driver") or "bridge"
        if driver != "bridge":
            if driver in ("host", "null"):
                raise Forbidden(f"only one instance of \"{driver}\" network is allowed")
            raise NetworkNotFound(f"plugin \"{driver}\" not found")
        if body.get("EnableIPv6"):
            raise InvalidNetworkConfig("IPv6 networks are not supported by kobako yet")
        if body.get("ConfigOnly") or body.get("ConfigFrom"):
            raise InvalidNetworkConfig("config-only networks are not supported")
        options = {str(k): str(v) for k, v in (body.get("Options") or {}).items()}
        labels = body.get("Labels") or {}
        ipam_body = body.get("IPAM") or {}
        if (ipam_body.get("Driver") or "default") != "default":
            raise NetworkNotFound(f"plugin \"{ipam_body['Driver']}\" not found")
        configs = [c for c in ipam_body.get("Config") or [] if c]
        if len(configs) > 1:
            raise InvalidNetworkConfig("only one IPv4 subnet per network is supported")
        async with self.lock:
            if any(n.name == name for n in self.nets.values()):
                raise NetworkConflict(f"network with name {name} already exists")
            taken = await self._taken_subnets()
            cfg = configs[0] if configs else {}
            if cfg.get("Subnet"):
                subnet = ipam.parse_subnet(cfg["Subnet"])
                for other in self.nets.values():
                    if other.is_bridge and other.subnet.overlaps(subnet):
                        raise NetworkConflict(
                            f"invalid pool request: Pool overlaps with other one on this "
                            f"address space ({subnet} overlaps {other.name}'s {other.subnet})")
            elif cfg.get("Gateway") or cfg.get("IPRange"):
                raise InvalidNetworkConfig("a gateway or ip-range needs a subnet (--subnet)")
            else:
                subnet = ipam.choose_subnet(self.pools, taken)
            gateway = (ipam.parse_address(cfg["Gateway"], "gateway") if cfg.get("Gateway")
                       else ipam.default_gateway(subnet))
            ipam.check_in_subnet(gateway, subnet, "gateway")
            ip_range = None
            if cfg.get("IPRange"):
                ip_range = ipam.parse_subnet(cfg["IPRange"])
                if not ip_range.subnet_of(subnet):
                    raise InvalidNetworkConfig(f"ip-range {ip_range} is not in subnet {subnet}")
            mtu = options.get(OPT_MTU)
            if mtu is not None and (not mtu.isdigit() or not 68 <= int(mtu) <= 65535):
                raise InvalidNetworkConfig(f"invalid MTU {mtu!r}")
            aux = self._auxiliary_addresses(cfg.get("AuxiliaryAddresses"), subnet)
            doc = self._doc(name, "bridge", subnet=str(subnet), gateway=str(gateway),
                            ip_range=str(ip_range) if ip_range else None, options=options,
                            labels=labels, internal=bool(body.get("Internal")),
                            attachable=bool(body.get("Attachable")), auxiliary=aux,
                            ipam_options=ipam_body.get("Options"))
            bridge_name = options.get(OPT_BRIDGE_NAME) or "br-" + doc["Id"][:12]
            if len(bridge_name) > 15:
                raise InvalidNetworkConfig(f"bridge name {bridge_name} is longer than 15")
            if any(n.is_bridge and n.bridge == bridge_name for n in self.nets.values()):
                raise NetworkConflict(f"bridge name {bridge_name} is already in use")
            doc["Kobako"]["bridge"] = bridge_name
            net = Network(doc)
            await self._ensure_bridge(net)
            try:
                self._insert(doc)
                await self._apply()
            except BaseException:
                self.nets.pop(net.id, None)
                self.store.delete_network(net.id)
                await bridge.delete_link(bridge_name)
                raise
        self._event("create", net)
        return {"Id": net.id, "Warning": ""}

    async def remove(self, ref: str) -> None:
        net = self.get(ref)
        if not net.user_defined:
            raise Forbidden(f"{net.name} is a pre-defined network and cannot be removed")
        async with self.lock:
            if self._in_use(net):
                raise Forbidden(f"error while removing network: network {net.name} id "
                                f"{net.id} has active endpoints")
            await bridge.delete_link(net.bridge)
            del self.nets[net.id]
            self.store.delete_network(net.id)
            await self._apply()
        self._event("destroy", net)

    async def prune(self, filters: dict[str, list[str]]) -> dict:
        deleted = []
        until = (filters or {}).get("until")
        for net in list(self.nets.values()):
            if not net.user_defined or self._in_use(net):
                continue
            if not self._matches(net, {k: v for k, v in (filters or {}).items()
                                       if k == "label"}):
                continue
            if until:
                from kobako.engine.events import parse_timestamp

                limit = parse_timestamp(until[0])
                created = time.mktime(time.strptime(net.doc["Created"][:19],
                                                    "%Y-%m-%dT%H:%M:%S")) - time.timezone
                if limit is not None and created > limit:
                    continue
            await self.remove(net.id)
            deleted.append(net.name)
        return {"NetworksDeleted": deleted}

    async def connect(self, ref: str, container_ref: str, config: dict) -> None:
        net = self.get(ref)
        c = self.containers.get(container_ref)
        mode = self._mode(c.doc)
        if self._special(mode):
            raise Forbidden(f"container sharing network namespace with another container or "
                            f"host cannot be connected to any other network ({mode})")
        if not net.is_bridge:
            raise Forbidden(f"container cannot be disconnected from host network or connected "
                            f"to host network ({net.name})")
        networks = c.doc["NetworkSettings"].setdefault("Networks", {})
        if net.name in networks:
            raise Forbidden(f"endpoint with name {c.name} already exists in network {net.name}")
        entry = self._endpoint_settings(net, config or {}, c.id)
        async with self.lock:
            networks[net.name] = entry
            if c.running:
                used = {ep.ifname for ep in self.store.endpoints() if ep.container_id == c.id}
                ifname = next(f"eth{i}" for i in range(len(used) + 1) if f"eth{i}" not in used)
                try:
                    await self._attach(c.doc, net, ifname, default_route=False)
                    await self._apply()
                except BaseException:
                    del networks[net.name]
                    for ep in self.store.endpoints(net.id):
                        if ep.container_id == c.id:
                            await bridge.delete_link(ep.host_ifname)
                            self.store.delete_endpoint(net.id, c.id)
                    raise
            self.containers.store.update(c.doc)
        self._event("connect", net, {"container": c.id})

    async def disconnect(self, ref: str, container_ref: str, force: bool) -> None:
        net = self.get(ref)
        c = self.containers.get(container_ref)
        networks = c.doc["NetworkSettings"].get("Networks") or {}
        if net.name not in networks:
            raise Forbidden(f"container {c.id} is not connected to network {net.name}")
        async with self.lock:
            for ep in self.store.endpoints(net.id):
                if ep.container_id == c.id:
                    await bridge.delete_link(ep.host_ifname)
                    self.store.delete_endpoint(net.id, c.id)
            del networks[net.name]
            if not any(n.user_defined for n in self._container_networks(c.doc)):
                await self.dns.remove(c.id)
            if c.running:
                await self._apply()
            self.containers.store.update(c.doc)
        self._event("disconnect", net, {"container": c.id})


def _dns_names(doc: dict, entry: dict) -> list[str]:
    """What other containers on a user network call this one (dockerd's
    buildEndpointDNSNames): its name, its aliases there, its short ID, its host name."""
    names = [doc["Name"].lstrip("/"), *(entry.get("Aliases") or []), doc["Id"][:12],
             doc["Config"].get("Hostname") or ""]
    return [n for n in dict.fromkeys(names) if n]
