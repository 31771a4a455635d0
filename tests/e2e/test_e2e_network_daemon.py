"""Networking across the daemon's life: DNS forwarding to the host's resolvers, and
cleanup after a SIGKILLed daemon.

The fake upstream resolvers (dnslib) listen on loopback addresses of the host's
network namespace, on port 53 since a resolv.conf cannot name a port; the embedded
DNS forwards from the host's namespace. The daemon reads its "host resolv.conf"
from KOBAKO_RESOLV_CONF. Names carry the prefix `kbd`.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.request

import pytest
from daemon_fixture import Daemon
from test_e2e_network import free_port, free_subnet, run

dnslib_server = pytest.importorskip("dnslib.server")
from dnslib import QTYPE, RR, A  # noqa: E402


class FixedResolver:
    """Answers `<anything>.<zone>` with one address; everything else NXDOMAIN."""

    def __init__(self, zone: str, address: str):
        self.zone, self.address = zone, address
        self.asked: list[str] = []

    def resolve(self, request, handler):
        reply = request.reply()
        qname = str(request.q.qname).rstrip(".")
        self.asked.append(qname)
        if qname.endswith(self.zone) and request.q.qtype == QTYPE.A:
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(self.address), ttl=5))
        else:
            reply.header.rcode = 3  # NXDOMAIN
        return reply


def start_resolver(zone: str, address: str) -> tuple[object, FixedResolver, str]:
    """A UDP resolver on a free 127.0.0.x:53."""
    for last in range(200, 250):
        ip = f"127.0.0.{last}"
        resolver = FixedResolver(zone, address)
        # dnslib sets SO_REUSEADDR, with which a second UDP bind to a taken address
        # succeeds: probe with a plain socket first
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind((ip, 53))
        except OSError:
            continue
        finally:
            probe.close()
        try:
            server = dnslib_server.DNSServer(resolver, address=ip, port=53,
                                             logger=dnslib_server.DNSLogger("-request,-reply,"
                                                                            "-truncated,-error,"
                                                                            "-recv,-send,-data"))
        except OSError:
            continue
        server.start_thread()
        return server, resolver, ip
    pytest.skip("no free 127.0.0.x:53 for a fake resolver")


def kobako_objects(daemon: Daemon) -> dict:
    """Everything of this daemon's that the kernel and the state DB hold."""
    key = hashlib.sha256(str(daemon.exec_root).encode()).hexdigest()[:8]
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True,
                                      text=True).stdout)
    mine = sorted(link["ifname"] for link in links
                  if link.get("ifalias", "").startswith(f"kobako:{key}:"))
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    netns_dir = daemon.exec_root / "netns"
    db = daemon.data_root / "state.db"
    rows = 0
    if db.exists():
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            rows = conn.execute("SELECT COUNT(*) FROM endpoints").fetchone()[0]
        finally:
            conn.close()
    return {"links": mine, "table": f"kobako_{key}" in tables.split(),
            "netns": sorted(os.listdir(netns_dir)) if netns_dir.is_dir() else [],
            "endpoints": rows}


def test_dns_forwarded_to_host_resolvers_and_to_dns_option(tmp_path):
    host_srv, host_res, host_ip = start_resolver("kbd-host.test", "10.123.251.7")
    opt_srv, opt_res, opt_ip = start_resolver("kbd-opt.test", "10.123.251.8")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"# the fake host resolver\nnameserver {host_ip}\nsearch kbd.test\n")
    daemon = Daemon(extra_env={"KOBAKO_RESOLV_CONF": str(resolv)}).start()
    try:
        daemon.import_busybox()
        run(daemon, "network", "create", "--subnet", free_subnet(100), "kbd-net")
        run(daemon, "run", "-d", "--name", "kbd-peer", "--network", "kbd-net", "busybox",
            "sleep", "300")
        proc = daemon.docker("run", "--rm", "--network", "kbd-net", "busybox", "sh", "-c",
                             "cat /etc/resolv.conf; nslookup -type=a www.kbd-host.test;"
                             # getaddrinfo (search list, then the bare name), as
                             # programs do; busybox nslookup stops at the search list
                             "ping -c 1 -W 2 kbd-peer", check=False)
        out = proc.stdout.decode() + proc.stderr.decode()
        assert "nameserver 127.0.0.11" in out and "search kbd.test" in out
        assert "10.123.251.7" in out, out
        assert "www.kbd-host.test" in host_res.asked
        # container names are answered by the embedded DNS itself, never forwarded
        assert "kbd-peer" not in host_res.asked
        peer_ip = run(daemon, "inspect", "-f",
                      '{{(index .NetworkSettings.Networks "kbd-net").IPAddress}}', "kbd-peer")
        assert peer_ip in out
        # unknown names: the upstream's NXDOMAIN comes back
        missing = daemon.docker("run", "--rm", "--network", "kbd-net", "busybox", "nslookup",
                                "-type=a", "nothing.kbd-elsewhere.test", check=False)
        assert missing.returncode != 0 or b"10.123.251" not in missing.stdout
        assert "nothing.kbd-elsewhere.test" in host_res.asked
        # --dns replaces the host's resolvers as the embedded DNS's upstream
        out = run(daemon, "run", "--rm", "--network", "kbd-net", "--dns", opt_ip, "busybox",
                  "nslookup", "-type=a", "api.kbd-opt.test")
        assert "10.123.251.8" in out
        assert "api.kbd-opt.test" in opt_res.asked
        assert "api.kbd-opt.test" not in host_res.asked
    finally:
        run(daemon, "rm", "-f", "kbd-peer", check=False)
        run(daemon, "network", "rm", "kbd-net", check=False)
        daemon.stop()
        host_srv.stop()
        opt_srv.stop()


def _published(port: int, tries: int = 40) -> str:
    for _ in range(tries):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/i.html", timeout=2) as resp:
                return resp.read().decode().strip()
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"127.0.0.1:{port} not reachable")


def test_nothing_left_after_sigkilled_daemon():
    daemon = Daemon().start()
    daemon.import_busybox()
    ports = [free_port(), free_port()]
    names = ["kbd-c0", "kbd-c1", "kbd-c2"]
    try:
        before = kobako_objects(daemon)
        assert before["netns"] == [] and before["endpoints"] == 0
        run(daemon, "network", "create", "--subnet", free_subnet(110), "kbd-crash")
        for name, port in zip(names, ports, strict=False):
            run(daemon, "run", "-d", "--name", name, "--network", "kbd-crash", "-p",
                f"127.0.0.1:{port}:80", "busybox", "sh", "-c",
                f"echo {name} > /i.html && httpd -f -p 80 -h / -c /dev/null")
        run(daemon, "run", "-d", "--name", names[2], "--network", "kbd-crash", "busybox",
            "sleep", "300")
        run(daemon, "network", "connect", "bridge", names[2])
        running = kobako_objects(daemon)
        # 4 veths (one per container, one more for the connect) and 2 bridges
        assert len(running["links"]) == 6 and running["table"]
        assert len(running["netns"]) == 3 and running["endpoints"] == 4

        # 1. SIGKILL the daemon: the containers live on, and so does their network
        daemon.kill()
        assert kobako_objects(daemon) == running
        daemon.start()
        assert _published(ports[0]) == "kbd-c0"
        assert _published(ports[1]) == "kbd-c1"
        assert kobako_objects(daemon) == running

        # 2. SIGKILL the daemon, then the containers' processes behind its back
        pids = [int(run(daemon, "inspect", "-f", "{{.State.Pid}}", n)) for n in names]
        daemon.kill()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        for pid in pids:
            for _ in range(100):
                if not os.path.exists(f"/proc/{pid}"):
                    break
                time.sleep(0.05)
        daemon.start()
        for _ in range(100):  # the exits are noticed and what they held is released
            state = kobako_objects(daemon)
            if state["endpoints"] == 0 and state["netns"] == [] and len(state["links"]) == 2:
                break
            time.sleep(0.1)
        assert state == {"links": sorted(state["links"]), "table": True, "netns": [],
                         "endpoints": 0}
        assert len(state["links"]) == 2  # just the two bridges
        assert run(daemon, "ps", "-q") == ""
        # the addresses and ports are free again
        run(daemon, "start", names[0])
        assert _published(ports[0]) == "kbd-c0"

        # 3. stop everything and remove the network: nothing of this daemon is left
        run(daemon, "rm", "-f", *names)
        run(daemon, "network", "rm", "kbd-crash")
        after = kobako_objects(daemon)
        assert after["netns"] == [] and after["endpoints"] == 0
        assert len(after["links"]) == 1  # the default bridge, while the daemon runs
        assert daemon.terminate() == 0
        assert kobako_objects(daemon) == {"links": [], "table": False, "netns": [],
                                          "endpoints": 0}
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            run(daemon, "rm", "-f", *names, check=False)
            run(daemon, "network", "rm", "kbd-crash", check=False)
        daemon.stop()
