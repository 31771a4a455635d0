"""Networking end to end: the docker CLI against kobakod (bridge networks, DNS, ports).

All traffic stays on loopback and on the bridges these tests create (subnets under
10.123.0.0/16, checked against the host's routes first). Every test counts kobako's
veths, bridges, netns files and nft tables before and after.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest
from daemon_fixture import Daemon, busybox_daemon


def _routes() -> list[ipaddress.IPv4Network]:
    out = json.loads(subprocess.run(["ip", "-j", "-4", "route", "show", "table", "all"],
                                    capture_output=True, text=True).stdout or "[]")
    nets = []
    for r in out:
        dst = r.get("dst", "")
        if dst and dst != "default" and not dst.startswith("127."):
            nets.append(ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False))
    return nets


def free_subnet(third: int) -> str:
    for candidate in range(third, 250):
        net = ipaddress.ip_network(f"10.123.{candidate}.0/24")
        if not any(net.overlaps(r) for r in _routes()):
            return str(net)
    pytest.skip("no free 10.123.x.0/24 subnet on this host")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kernel_state(daemon: Daemon) -> dict:
    """kobako's kernel objects of this daemon: links, netns files, nft table rules."""
    key = hashlib.sha256(str(daemon.exec_root).encode()).hexdigest()[:8]
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True,
                                      text=True).stdout)
    veths = sorted(link["ifname"] for link in links
                   if link.get("ifalias", "").startswith(f"kobako:{key}:")
                   and link["ifname"].startswith("veth"))
    netns_dir = daemon.exec_root / "netns"
    files = sorted(os.listdir(netns_dir)) if netns_dir.is_dir() else []
    return {"veths": veths, "netns": files}


def network_engine() -> Iterator[Daemon]:
    """A busybox daemon; at its end every container and network is removed and no veth
    or netns of it may be left (the `engine` fixture of the network modules)."""
    with busybox_daemon() as daemon:
        yield daemon
        daemon.remove_all_containers()
        daemon.docker("network", "prune", "-f", check=False)
        assert kernel_state(daemon) == {"veths": [], "netns": []}


@pytest.fixture(scope="module")
def engine():
    yield from network_engine()


def run(engine: Daemon, *args: str, check: bool = True) -> str:
    return engine.docker(*args, check=check).stdout.decode().strip()


def fetch(url: str) -> str:
    """A shell command fetching url within 3 s (busybox wget -T crashes; a PID 1 ignores
    timeout's SIGTERM, hence the shell around it)."""
    return f"timeout 3 wget -q -O - {url}; exit $?"


def wait_http(engine: Daemon, client: str, url: str, tries: int = 30) -> str:
    for _ in range(tries):
        out = engine.docker("exec", client, "timeout", "3", "wget", "-q", "-O", "-", url,
                            check=False)
        if out.returncode == 0:
            return out.stdout.decode()
        time.sleep(0.2)
    raise AssertionError(f"{url} not reachable from {client}: {out.stderr.decode()}")


def test_user_network_name_alias_and_ports(engine):
    subnet = free_subnet(10)
    run(engine, "network", "create", "--subnet", subnet, "kbn-app")
    port = free_port()
    try:
        run(engine, "run", "-d", "--name", "kbn-web", "--network", "kbn-app",
            "--network-alias", "web-alias", "-p", f"127.0.0.1:{port}:80", "busybox", "sh", "-c",
            "mkdir -p /www && echo hello-kobako > /www/index.html && httpd -f -p 80 -h /www")
        run(engine, "run", "-d", "--name", "kbn-client", "--network", "kbn-app", "busybox",
            "sleep", "300")
        assert "hello-kobako" in wait_http(engine, "kbn-client", "http://kbn-web/")
        assert "hello-kobako" in wait_http(engine, "kbn-client", "http://web-alias/")
        short = run(engine, "inspect", "-f", "{{.Id}}", "kbn-web")[:12]
        assert "hello-kobako" in wait_http(engine, "kbn-client", f"http://{short}/")
        resolv = run(engine, "exec", "kbn-client", "cat", "/etc/resolv.conf")
        assert "nameserver 127.0.0.11" in resolv
        # published on 127.0.0.1 and reachable from the host with a plain HTTP client
        for _ in range(30):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                    assert resp.read().decode().strip() == "hello-kobako"
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError("published port not reachable from the host")
        assert run(engine, "port", "kbn-web", "80") == f"127.0.0.1:{port}"
        ports = json.loads(run(engine, "inspect", "-f", "{{json .NetworkSettings.Ports}}",
                               "kbn-web"))
        assert ports == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
        # the port is held: a second container cannot take it, with a clear error
        clash = engine.docker("run", "-d", "--name", "kbn-clash", "-p",
                              f"127.0.0.1:{port}:80", "busybox", "true", check=False)
        assert clash.returncode != 0 and b"already allocated" in clash.stderr
        run(engine, "rm", "-f", "kbn-clash", check=False)
        # stop: the name is no longer answered
        run(engine, "stop", "-t", "0", "kbn-web")
        out = engine.docker("exec", "kbn-client", "nslookup", "kbn-web", check=False)
        assert b"172." not in out.stdout and b"10.123" not in out.stdout
    finally:
        run(engine, "rm", "-f", "kbn-web", "kbn-client", check=False)
        run(engine, "network", "rm", "kbn-app", check=False)
    assert kernel_state(engine) == {"veths": [], "netns": []}


def test_hostnames_shared_files_host_gateway_and_ndots(engine):
    """As dockerd: peers resolve a container's host name; --network container:X shares
    X's host name and /etc files; host-gateway is the default bridge's gateway; a
    user's ndots is kept."""
    subnet = free_subnet(20)
    run(engine, "network", "create", "--subnet", subnet, "kbn-names")
    try:
        run(engine, "run", "-d", "--name", "kbn-main", "--network", "kbn-names",
            "--hostname", "mainhost", "--network-alias", "al", "--network-alias", "al",
            "busybox", "sleep", "300")
        endpoint = '(index .NetworkSettings.Networks "kbn-names")'
        ip = run(engine, "inspect", "-f", "{{" + endpoint + ".IPAddress}}", "kbn-main")
        names = json.loads(run(engine, "inspect", "-f", "{{json " + endpoint + ".DNSNames}}",
                               "kbn-main"))
        short = run(engine, "inspect", "-f", "{{.Id}}", "kbn-main")[:12]
        assert names == ["kbn-main", "al", short, "mainhost"]
        # an older API's view: the short ID among the aliases, no DNSNames yet
        old_api = {**engine.env(), "DOCKER_API_VERSION": "1.41"}
        old = json.loads(engine.docker("inspect", "kbn-main", env=old_api).stdout)[0]
        entry = old["NetworkSettings"]["Networks"]["kbn-names"]
        assert entry["Aliases"][-1] == short and "DNSNames" not in entry
        found = run(engine, "run", "--rm", "--network", "kbn-names", "busybox",
                    "nslookup", "mainhost")
        assert ip in found
        sidecar = run(engine, "run", "--rm", "--network", "container:kbn-main", "busybox",
                      "sh", "-c", "hostname; cat /etc/resolv.conf; ping -c1 -W2 al >/dev/null"
                      " && echo reached")
        assert sidecar.splitlines()[0] == "mainhost"
        assert "nameserver 127.0.0.11" in sidecar and sidecar.endswith("reached")
        gateway = run(engine, "network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}",
                      "bridge")
        hosts = run(engine, "run", "--rm", "--network", "none", "--add-host",
                    "gw.test:host-gateway", "busybox", "grep", "gw.test", "/etc/hosts")
        assert hosts.split() == [gateway, "gw.test"]
        resolv = run(engine, "run", "--rm", "--network", "kbn-names", "--dns-opt", "ndots:2",
                     "busybox", "grep", "options", "/etc/resolv.conf")
        assert resolv == "options ndots:2"
    finally:
        run(engine, "rm", "-f", "kbn-main", check=False)
        run(engine, "network", "rm", "kbn-names", check=False)


def test_static_ip_route_and_isolation(engine):
    a, b = free_subnet(20), free_subnet(30)
    run(engine, "network", "create", "--subnet", a, "kbn-a")
    run(engine, "network", "create", "--subnet", b, "kbn-b")
    try:
        net_a = ipaddress.ip_network(a)
        static = str(net_a.network_address + 254)
        run(engine, "run", "-d", "--name", "kbn-s", "--network", "kbn-a", "--ip", static,
            "busybox", "sh", "-c", "echo ok > /i && httpd -f -p 80 -h /")
        doc = json.loads(run(engine, "inspect", "kbn-s"))[0]
        assert doc["NetworkSettings"]["Networks"]["kbn-a"]["IPAddress"] == static
        route = run(engine, "exec", "kbn-s", "ip", "route")
        assert f"default via {net_a.network_address + 1}" in route
        addr = run(engine, "exec", "kbn-s", "ip", "-4", "-o", "addr", "show", "eth0")
        assert f"{static}/24" in addr
        # same address again: 409-style conflict
        taken = engine.docker("run", "-d", "--name", "kbn-dup", "--network", "kbn-a", "--ip",
                              static, "busybox", "sleep", "1", check=False)
        assert taken.returncode != 0 and b"already in use" in taken.stderr.lower()
        run(engine, "rm", "-f", "kbn-dup", check=False)
        outside = engine.docker("run", "--rm", "--network", "kbn-a", "--ip", "10.99.99.9",
                                "busybox", "true", check=False)
        assert outside.returncode != 0
        # same network reaches it; the other network does not
        ok = run(engine, "run", "--rm", "--network", "kbn-a", "busybox", "sh", "-c",
                 fetch(f"http://{static}/i"))
        assert ok == "ok"
        blocked = engine.docker("run", "--rm", "--network", "kbn-b", "busybox", "nc", "-w", "2",
                                static, "80", check=False, timeout=30)
        assert blocked.returncode != 0
        # --network container:X reaches X's loopback
        run(engine, "run", "-d", "--name", "kbn-lo", "--network", "kbn-b", "busybox", "sh",
            "-c", "echo lo > /l && httpd -f -p 127.0.0.1:8080 -h /")
        time.sleep(0.3)
        got = run(engine, "run", "--rm", "--network", "container:kbn-lo", "busybox", "sh", "-c",
                  fetch("http://127.0.0.1:8080/l"))
        assert got == "lo"
    finally:
        run(engine, "rm", "-f", "kbn-s", "kbn-lo", check=False)
        run(engine, "network", "rm", "kbn-a", "kbn-b", check=False)
    assert kernel_state(engine) == {"veths": [], "netns": []}


def test_legacy_links(engine):
    """--link on the default bridge: /etc/hosts and the linked container's ports and
    environment as variables; on a user network: a name only the linking container's
    DNS knows. A missing or stopped linked container is an error."""
    run(engine, "run", "-d", "--pull", "never", "--name", "kbn-linked", "-e", "SECRET=s3",
        "--expose", "80", "busybox", "sleep", "1000")
    ip = run(engine, "inspect", "-f", "{{.NetworkSettings.Networks.bridge.IPAddress}}",
             "kbn-linked")
    seen = run(engine, "run", "--rm", "--pull", "never", "--name", "kbn-linking",
               "--link", "kbn-linked:db", "busybox", "sh", "-c",
               "grep -w db /etc/hosts; echo $DB_NAME $DB_PORT $DB_ENV_SECRET; "
               "ping -c1 -W2 db >/dev/null && echo reached")
    hosts, env, reached = seen.splitlines()
    assert hosts.split() == [ip, "db", run(engine, "inspect", "-f", "{{.Id}}",
                                           "kbn-linked")[:12], "kbn-linked"]
    assert env == f"/kbn-linking/db tcp://{ip}:80 s3" and reached == "reached"
    created = run(engine, "create", "--pull", "never", "--link", "kbn-linked:db", "busybox")
    assert json.loads(run(engine, "inspect", "-f", "{{json .HostConfig.Links}}", created)) \
        == [f"/kbn-linked:/{run(engine, 'inspect', '-f', '{{.Name}}', created).lstrip('/')}/db"]
    run(engine, "rm", created)
    run(engine, "network", "create", "--subnet", free_subnet(14), "kbn-links")
    run(engine, "network", "connect", "kbn-links", "kbn-linked")
    answer = run(engine, "run", "--rm", "--pull", "never", "--network", "kbn-links",
                 "--link", "kbn-linked:only-mine", "busybox", "nslookup", "only-mine")
    linked_ip = run(engine, "inspect", "-f",
                    '{{(index .NetworkSettings.Networks "kbn-links").IPAddress}}', "kbn-linked")
    assert linked_ip in answer
    other = engine.docker("run", "--rm", "--pull", "never", "--network", "kbn-links",
                          "busybox", "nslookup", "only-mine", check=False)
    assert linked_ip.encode() not in other.stdout  # the alias is the linking container's
    missing = engine.docker("run", "--rm", "--pull", "never", "--link", "kbn-nosuch:x",
                            "busybox", "true", check=False)
    assert b"could not get container for kbn-nosuch" in missing.stderr
    run(engine, "stop", "-t", "0", "kbn-linked")
    stopped = engine.docker("run", "--rm", "--pull", "never", "--link", "kbn-linked:db",
                            "busybox", "true", check=False)
    assert b"Cannot link to a non running container" in stopped.stderr
    run(engine, "rm", "kbn-linked")
    run(engine, "network", "rm", "kbn-links")
