"""More networking end to end with the docker CLI: connect/disconnect, -P, ranges, UDP,
--internal, driver options, list filters and prune, --dns/--add-host, `kobako ns` and
`kobako netns expose`.

Traffic stays on loopback and on the bridges these tests create (10.123.x.0/24
subnets checked against the host's routes). Names carry the prefix `kbf`.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
import urllib.request

import pytest
from daemon_fixture import Daemon
from test_e2e_network import free_port, free_subnet, kernel_state, network_engine, run, wait_http

HTTPD = "mkdir -p /www && echo {text} > /www/index.html && httpd -f -p {port} -h /www"
# a UDP echo server from the host's python, run chrooted (busybox has no UDP listener)
UDP_ECHO = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            "s.bind(('0.0.0.0', 5353))\nwhile True:\n d, a = s.recvfrom(512); "
            "s.sendto(b'echo:' + d, a)")


@pytest.fixture(scope="module")
def engine():
    yield from network_engine()


def http_get(url: str, tries: int = 40) -> str:
    for _ in range(tries):
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.read().decode().strip()
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} not reachable from the host")


def resolves(engine: Daemon, client: str, name: str) -> str:
    """What the embedded DNS answers `client` for `name` (nslookup's output)."""
    out = engine.docker("exec", client, "nslookup", "-type=a", name, check=False)
    return out.stdout.decode()


def ip_on(engine: Daemon, container: str, network: str) -> str:
    fmt = f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}'
    return run(engine, "inspect", "-f", fmt, container)


def links_in(engine: Daemon, container: str) -> list[str]:
    out = run(engine, "exec", container, "ls", "/sys/class/net")
    return sorted(out.split())


def test_connect_disconnect_running_container(engine):
    subnet = free_subnet(40)
    run(engine, "network", "create", "--subnet", subnet, "kbf-conn")
    static = subnet.rsplit(".", 1)[0] + ".77"
    try:
        run(engine, "run", "-d", "--name", "kbf-srv", "busybox", "sleep", "300")
        run(engine, "run", "-d", "--name", "kbf-cli", "--network", "kbf-conn", "busybox",
            "sleep", "300")
        assert links_in(engine, "kbf-srv") == ["eth0", "lo"]
        assert static not in resolves(engine, "kbf-cli", "kbf-srv")
        run(engine, "network", "connect", "--ip", static, "--alias", "kbf-al", "kbf-conn",
            "kbf-srv")
        assert links_in(engine, "kbf-srv") == ["eth0", "eth1", "lo"]
        addr = run(engine, "exec", "kbf-srv", "ip", "-4", "-o", "addr", "show", "eth1")
        assert f"{static}/24" in addr
        doc = json.loads(run(engine, "inspect", "kbf-srv"))[0]
        entry = doc["NetworkSettings"]["Networks"]["kbf-conn"]
        assert entry["IPAddress"] == static and "kbf-al" in entry["Aliases"]
        assert static in resolves(engine, "kbf-cli", "kbf-srv")
        assert static in resolves(engine, "kbf-cli", "kbf-al")
        inspect = json.loads(run(engine, "network", "inspect", "kbf-conn"))[0]
        assert doc["Id"] in inspect["Containers"]
        # reachable over the new interface
        run(engine, "exec", "-d", "kbf-srv", "sh", "-c", HTTPD.format(text="conn", port=80))
        assert "conn" in wait_http(engine, "kbf-cli", "http://kbf-al/")
        run(engine, "network", "disconnect", "kbf-conn", "kbf-srv")
        assert links_in(engine, "kbf-srv") == ["eth0", "lo"]
        assert static not in resolves(engine, "kbf-cli", "kbf-srv")
        assert static not in resolves(engine, "kbf-cli", "kbf-al")
        inspect = json.loads(run(engine, "network", "inspect", "kbf-conn"))[0]
        assert doc["Id"] not in inspect["Containers"]
        # the address is free again: another container can take it
        run(engine, "run", "-d", "--name", "kbf-taker", "--network", "kbf-conn", "--ip", static,
            "busybox", "sleep", "300")
        assert static in resolves(engine, "kbf-cli", "kbf-taker")
    finally:
        run(engine, "rm", "-f", "kbf-srv", "kbf-cli", "kbf-taker", check=False)
        run(engine, "network", "rm", "kbf-conn", check=False)
    assert kernel_state(engine) == {"veths": [], "netns": []}


def test_publish_all_range_and_udp(engine):
    p1 = free_port()
    while True:  # two consecutive free ports
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p1 + 1))
                break
            except OSError:
                p1 = free_port()
    udp = free_port()
    try:
        run(engine, "run", "-d", "--name", "kbf-pall", "--expose", "80", "-P", "busybox", "sh",
            "-c", HTTPD.format(text="pall", port=80))
        mapping = run(engine, "port", "kbf-pall", "80").splitlines()[0]
        host_port = int(mapping.rsplit(":", 1)[1])
        assert host_port > 0
        ports = json.loads(run(engine, "inspect", "-f", "{{json .NetworkSettings.Ports}}",
                               "kbf-pall"))
        assert ports["80/tcp"][0]["HostPort"] == str(host_port)
        assert http_get(f"http://127.0.0.1:{host_port}/") == "pall"

        run(engine, "run", "-d", "--name", "kbf-range", "-p",
            f"127.0.0.1:{p1}-{p1 + 1}:80-81", "busybox", "sh", "-c",
            HTTPD.format(text="eighty", port=80) + " & "
            + "mkdir -p /w1 && echo eightyone > /w1/index.html && httpd -f -p 81 -h /w1")
        assert run(engine, "port", "kbf-range", "80") == f"127.0.0.1:{p1}"
        assert run(engine, "port", "kbf-range", "81") == f"127.0.0.1:{p1 + 1}"
        assert http_get(f"http://127.0.0.1:{p1}/") == "eighty"
        assert http_get(f"http://127.0.0.1:{p1 + 1}/") == "eightyone"

        run(engine, "run", "-d", "--name", "kbf-udp", "-v", "/:/host:ro", "-p",
            f"127.0.0.1:{udp}:5353/udp", "busybox", "chroot", "/host", "/usr/bin/python3",
            "-c", UDP_ECHO)
        assert run(engine, "port", "kbf-udp", "5353/udp") == f"127.0.0.1:{udp}"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            for _ in range(30):
                s.sendto(b"ping", ("127.0.0.1", udp))
                try:
                    assert s.recvfrom(512)[0] == b"echo:ping"
                    break
                except TimeoutError:
                    continue
            else:
                raise AssertionError("the published UDP port did not answer")
    finally:
        run(engine, "rm", "-f", "kbf-pall", "kbf-range", "kbf-udp", check=False)
    assert kernel_state(engine) == {"veths": [], "netns": []}


def _table(engine: Daemon) -> list[dict]:
    import hashlib

    key = hashlib.sha256(str(engine.exec_root).encode()).hexdigest()[:8]
    out = subprocess.run(["nft", "-j", "list", "table", "ip", f"kobako_{key}"],
                         capture_output=True, text=True, check=True).stdout
    return [item["rule"] for item in json.loads(out)["nftables"] if "rule" in item]


def _masquerades_out(rules: list[dict], subnet: str) -> bool:
    """Is there an outbound masquerade (saddr in subnet, leaving by another interface)?"""
    addr, length = subnet.split("/")
    for rule in rules:
        exprs = rule["expr"]
        if rule["chain"] != "postrouting" or not any("masquerade" in e for e in exprs):
            continue
        saddr = [e for e in exprs if "match" in e
                 and e["match"]["right"] == {"prefix": {"addr": addr, "len": int(length)}}]
        not_own = [e for e in exprs if "match" in e and e["match"]["op"] == "!="]
        if saddr and not_own:
            return True
    return False


def test_internal_network(engine):
    inner, outer = free_subnet(50), free_subnet(60)
    run(engine, "network", "create", "--internal", "--subnet", inner, "kbf-int")
    run(engine, "network", "create", "--subnet", outer, "kbf-ext")
    try:
        doc = json.loads(run(engine, "network", "inspect", "kbf-int"))[0]
        assert doc["Internal"] is True
        rules = _table(engine)
        assert not _masquerades_out(rules, inner)
        assert _masquerades_out(rules, outer)  # the check above can fail
        run(engine, "run", "-d", "--name", "kbf-out", "--network", "kbf-ext", "busybox", "sh",
            "-c", HTTPD.format(text="ext", port=80))
        ext_ip = ip_on(engine, "kbf-out", "kbf-ext")
        run(engine, "run", "-d", "--name", "kbf-in", "--network", "kbf-int", "busybox", "sh",
            "-c", HTTPD.format(text="int", port=80))
        run(engine, "run", "-d", "--name", "kbf-in2", "--network", "kbf-int", "busybox",
            "sleep", "300")
        assert "default" not in run(engine, "exec", "kbf-in", "ip", "route")
        # inside the internal network: fine
        assert "int" in wait_http(engine, "kbf-in2", "http://kbf-in/")
        # out of it, even to another bridge of this daemon: no route, no forwarding
        blocked = engine.docker("exec", "kbf-in", "nc", "-w", "2", ext_ip, "80", check=False,
                                timeout=30)
        assert blocked.returncode != 0
        # from the outside in: dropped too
        in_ip = ip_on(engine, "kbf-in", "kbf-int")
        blocked = engine.docker("exec", "kbf-out", "nc", "-w", "2", in_ip, "80", check=False,
                                timeout=30)
        assert blocked.returncode != 0
    finally:
        run(engine, "rm", "-f", "kbf-in", "kbf-in2", "kbf-out", check=False)
        run(engine, "network", "rm", "kbf-int", "kbf-ext", check=False)
    assert kernel_state(engine) == {"veths": [], "netns": []}


def test_bridge_name_and_mtu_options(engine):
    name = "kbfbr" + secrets.token_hex(3)
    subnet = free_subnet(70)
    run(engine, "network", "create", "--subnet", subnet, "-o",
        f"com.docker.network.bridge.name={name}", "-o", "com.docker.network.driver.mtu=1400",
        "kbf-opts")
    try:
        link = json.loads(subprocess.run(["ip", "-j", "link", "show", name],
                                         capture_output=True, text=True, check=True).stdout)[0]
        assert link["mtu"] == 1400
        addrs = json.loads(subprocess.run(["ip", "-j", "-4", "addr", "show", name],
                                          capture_output=True, text=True).stdout)[0]
        assert addrs["addr_info"][0]["local"] == subnet.rsplit(".", 1)[0] + ".1"
        mtu = run(engine, "run", "--rm", "--network", "kbf-opts", "busybox", "cat",
                  "/sys/class/net/eth0/mtu")
        assert mtu == "1400"
        taken = engine.docker("network", "create", "-o",
                              f"com.docker.network.bridge.name={name}", "kbf-opts2",
                              check=False)
        assert taken.returncode != 0
        bad = engine.docker("network", "create", "-o", "com.docker.network.driver.mtu=abc",
                            "kbf-opts3", check=False)
        assert bad.returncode != 0 and b"MTU" in bad.stderr
    finally:
        run(engine, "network", "rm", "kbf-opts", "kbf-opts2", "kbf-opts3", check=False)
    assert subprocess.run(["ip", "link", "show", name], capture_output=True).returncode != 0


def test_list_inspect_rm_prune_with_filters(engine):
    tag = secrets.token_hex(3)
    run(engine, "network", "create", "--label", f"kbf.tag={tag}", "--label", "kbf.keep=no",
        "kbf-l1")
    run(engine, "network", "create", "--label", f"kbf.tag={tag}", "kbf-l2")
    run(engine, "network", "create", "kbf-l3")
    try:
        def names(*filters: str) -> set[str]:
            args = [x for f in filters for x in ("--filter", f)]
            out = run(engine, "network", "ls", "--format", "{{.Name}}", *args)
            return set(out.split())

        assert names(f"label=kbf.tag={tag}") == {"kbf-l1", "kbf-l2"}
        assert names("label=kbf.keep") == {"kbf-l1"}
        assert names("name=kbf-l") == {"kbf-l1", "kbf-l2", "kbf-l3"}
        assert {"bridge", "host", "none"} <= names("type=builtin")
        assert not names("type=builtin") & {"kbf-l1", "kbf-l2", "kbf-l3"}
        assert names("driver=bridge", "name=kbf-l3") == {"kbf-l3"}
        l3 = run(engine, "network", "inspect", "-f", "{{.Id}}", "kbf-l3")
        assert names(f"id={l3[:10]}") == {"kbf-l3"}
        bad = engine.docker("network", "ls", "--filter", "colour=red", check=False)
        assert bad.returncode != 0
        doc = json.loads(run(engine, "network", "inspect", "kbf-l1"))[0]
        assert doc["Labels"] == {"kbf.tag": tag, "kbf.keep": "no"}
        assert doc["Driver"] == "bridge" and doc["IPAM"]["Config"][0]["Subnet"]
        # in use: not removable, not pruned, not dangling
        run(engine, "run", "-d", "--name", "kbf-user", "--network", "kbf-l2", "busybox",
            "sleep", "300")
        assert "kbf-l2" not in names("dangling=true")
        assert "kbf-l3" in names("dangling=true")
        busy = engine.docker("network", "rm", "kbf-l2", check=False)
        assert busy.returncode != 0 and b"active endpoints" in busy.stderr
        out = run(engine, "network", "prune", "-f", "--filter", f"label=kbf.tag={tag}")
        assert "kbf-l1" in out and "kbf-l2" not in out and "kbf-l3" not in out
        assert names("name=kbf-l") == {"kbf-l2", "kbf-l3"}
        builtin = engine.docker("network", "rm", "bridge", check=False)
        assert builtin.returncode != 0 and b"pre-defined" in builtin.stderr
        taken = engine.docker("network", "create", "none", check=False)
        assert b"operation is not permitted on predefined none network" in taken.stderr
        missing = engine.docker("network", "inspect", "kbf-nonesuch", check=False)
        assert missing.returncode != 0 and b"not found" in missing.stderr
        run(engine, "rm", "-f", "kbf-user")
        run(engine, "network", "rm", "kbf-l2", "kbf-l3")
        assert names("name=kbf-l") == set()
    finally:
        run(engine, "rm", "-f", "kbf-user", check=False)
        run(engine, "network", "rm", "kbf-l1", "kbf-l2", "kbf-l3", check=False)


def test_dns_options_and_extra_hosts(engine):
    subnet = free_subnet(80)
    run(engine, "network", "create", "--subnet", subnet, "kbf-dns")
    try:
        args = ["--dns", "127.0.0.77", "--dns-search", "kbf.test", "--add-host",
                "kbf-extra.test:10.123.250.9", "busybox", "sh", "-c",
                "cat /etc/resolv.conf; echo ---; cat /etc/hosts"]
        out = run(engine, "run", "--rm", *args)
        resolv, hosts = out.split("---")
        assert "nameserver 127.0.0.77" in resolv and "search kbf.test" in resolv
        assert any(line.split() == ["10.123.250.9", "kbf-extra.test"]
                   for line in hosts.splitlines())
        # on a user network the container asks the embedded DNS, which forwards to --dns
        out = run(engine, "run", "--rm", "--network", "kbf-dns", *args)
        resolv, hosts = out.split("---")
        assert "nameserver 127.0.0.11" in resolv and "search kbf.test" in resolv
        assert "127.0.0.77" not in resolv
        assert "kbf-extra.test" in hosts
        # the container's own name and address are in its /etc/hosts
        out = run(engine, "run", "--rm", "--name", "kbf-self", "--network", "kbf-dns",
                  "busybox", "cat", "/etc/hosts")
        assert any(line.split()[0].startswith(subnet.rsplit(".", 1)[0]) for line in
                   out.splitlines() if line.strip())
    finally:
        run(engine, "network", "rm", "kbf-dns", check=False)


def _proc_ns(pid: int) -> dict[str, int]:
    out = {}
    for kind in ("pid", "net", "mnt", "uts", "ipc", "user", "cgroup", "time"):
        out[kind] = int(os.readlink(f"/proc/{pid}/ns/{kind}").split("[")[1].rstrip("]"))
    return out


def test_kobako_ns_matches_proc(engine):
    try:
        run(engine, "run", "-d", "--name", "kbf-nsa", "busybox", "sleep", "300")
        run(engine, "run", "-d", "--name", "kbf-nsb", "--network", "container:kbf-nsa",
            "busybox", "sleep", "300")
        run(engine, "run", "-d", "--name", "kbf-nsc", "--pid", "host", "busybox", "sleep",
            "300")
        report = json.loads(engine.kobako("ns", "--format", "json").stdout)
        by_name = {e["name"]: e for e in report["namespaces"]}
        assert {"host", "kbf-nsa", "kbf-nsb", "kbf-nsc"} <= set(by_name)
        for name in ("kbf-nsa", "kbf-nsb", "kbf-nsc"):
            pid = int(run(engine, "inspect", "-f", "{{.State.Pid}}", name))
            assert by_name[name]["pid"] == pid
            assert by_name[name]["namespaces"] == _proc_ns(pid)
        a, b, c = (by_name[n]["namespaces"] for n in ("kbf-nsa", "kbf-nsb", "kbf-nsc"))
        host = by_name["host"]["namespaces"]
        assert a["net"] == b["net"] and a["pid"] != b["pid"] and a["mnt"] != b["mnt"]
        assert c["pid"] == host["pid"] and a["pid"] != host["pid"]
        groups = {(g["type"], g["inode"]): set(g["members"]) for g in report["shared"]}
        assert groups[("net", a["net"])] == {"kbf-nsa", "kbf-nsb"}
        assert {"host", "kbf-nsc"} <= groups[("pid", host["pid"])]
        assert "kbf-nsa" not in groups[("pid", host["pid"])]
        # only the asked-for containers (and the host) when named
        table = engine.kobako("ns", "kbf-nsa", "kbf-nsb").stdout.decode()
        assert "kbf-nsc" not in table and "SHARED" in table
        assert any(line.split()[:2] == ["net", str(a["net"])] and "kbf-nsa" in line
                   and "kbf-nsb" in line for line in table.splitlines())
        stopped = engine.kobako("ns", "kbf-nonesuch", check=False)
        assert stopped.returncode != 0
    finally:
        run(engine, "rm", "-f", "kbf-nsa", "kbf-nsb", "kbf-nsc", check=False)


def test_netns_expose_and_gone_after_stop(engine):
    subnet = free_subnet(90)
    run(engine, "network", "create", "--subnet", subnet, "kbf-nx")
    name = "kbf-nx-" + secrets.token_hex(3)
    marker = f"/tmp/kbf-host-only-{secrets.token_hex(4)}"
    try:
        run(engine, "run", "-d", "--name", name, "--network", "kbf-nx", "busybox", "sleep",
            "300")
        run(engine, "run", "-d", "--name", name + "-2", "--network", "kbf-nx", "busybox",
            "sleep", "300")
        ip = ip_on(engine, name, "kbf-nx")
        out = engine.kobako("netns", "expose", name, name + "-2").stdout.decode()
        assert f"/var/run/netns/{name}" in out
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert name in listed.split() and name + "-2" in listed.split()
        addrs = subprocess.run(["ip", "netns", "exec", name, "ip", "-j", "-4", "addr"],
                               capture_output=True, text=True, check=True).stdout
        assert ip in addrs
        # ip netns exec switches only the network namespace: host files stay visible
        with open(marker, "w") as f:
            f.write("host")
        seen = subprocess.run(["ip", "netns", "exec", name, "cat", marker],
                              capture_output=True, text=True)
        assert seen.stdout == "host"
        inside = engine.docker("exec", name, "cat", marker, check=False)
        assert inside.returncode != 0
        # exposing again is harmless; a stopped container cannot be exposed
        engine.kobako("netns", "expose", name)
        # unexpose by hand
        engine.kobako("netns", "unexpose", name + "-2")
        assert not os.path.exists(f"/var/run/netns/{name}-2")
        # stopping the container takes its link away (the daemon does it)
        run(engine, "stop", "-t", "0", name)
        assert not os.path.exists(f"/var/run/netns/{name}")
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert name not in listed.split()
        again = engine.kobako("netns", "expose", name, check=False)
        assert again.returncode != 0 and b"not running" in again.stderr
    finally:
        if os.path.exists(marker):
            os.unlink(marker)
        run(engine, "rm", "-f", name, name + "-2", check=False)
        run(engine, "network", "rm", "kbf-nx", check=False)
        for left in (name, name + "-2"):
            engine.kobako("netns", "unexpose", left, check=False)
    assert not os.path.exists(f"/var/run/netns/{name}")
    assert not os.path.exists(f"/var/run/netns/{name}-2")
