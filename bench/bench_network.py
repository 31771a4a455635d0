#!/opt/kobako/bin/python
"""Benchmark: networking, the docker CLI against kobakod and, in the same run, dockerd.

  run        `docker run --rm busybox true` on the default bridge (a veth, an address,
             the rules; median of N)
  throughput TCP between two containers on the default bridge: busybox `dd` of
             --megabytes MB from /dev/zero piped into `nc`, to a `nc -l` in the other
             container, timed by busybox `time` inside the sender (median of R)

Each engine runs under its own directory (socket, data root, exec root, pidfile) with
the same busybox image (kobako's bootstrap tar through `docker import`); the daemons
and helpers come from bench_engine.py. dockerd gets a bridge of its own made here
(kbkbd<random>, on a private subnet that clashes with no host route) and
--iptables=false --ip-forward=false --ip-masq=false: container-to-container traffic
on one bridge needs no NAT, and dockerd then adds no rule to the host. kobakod uses
its own per-exec-root bridge and nft table. All traffic stays on those bridges.
Everything is removed at the end (containers, daemons, bridges, dirs), also on
Ctrl-C, and checked. Not a test: targets are printed, nothing is asserted.

    bench/bench_network.py [-n 20] [-r 5] [--megabytes 500] [--no-dockerd]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_engine import (  # noqa: E402 - the sibling script, not a package
    IMAGE,
    PREFIX,
    BenchError,
    Dockerd,
    Engine,
    Kobako,
    engine_classes,
    log,
    measure_engines,
    median_of,
    print_problems,
)

DOCKER_SUBNETS = ["10.199.0.0/24", "10.199.1.0/24", "10.198.0.0/24", "192.168.219.0/24"]
PORT = 5001


def host_routes() -> list[ipaddress.IPv4Network]:
    out = json.loads(subprocess.run(["ip", "-j", "-4", "route", "show", "table", "all"],
                                    capture_output=True, text=True, check=True).stdout)
    nets = []
    for route in out:
        dst = route.get("dst", "")
        if dst and dst != "default" and not dst.startswith("127."):
            nets.append(ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False))
    return nets


def free_subnet() -> ipaddress.IPv4Network:
    taken = host_routes()
    for cidr in DOCKER_SUBNETS:
        net = ipaddress.ip_network(cidr)
        if not any(net.overlaps(t) for t in taken):
            return net
    raise BenchError(f"none of {DOCKER_SUBNETS} is free of host routes")


class BridgedDockerd(Dockerd):
    """dockerd on a bridge made for it, with no iptables, forwarding or masquerade."""

    def __init__(self) -> None:
        super().__init__()
        self.bridge = "kbkbd" + secrets.token_hex(3)
        self.subnet = free_subnet()

    def start(self, timeout: float = 60.0) -> float:
        from pyroute2 import IPRoute

        gateway = str(self.subnet.network_address + 1)
        with IPRoute() as ipr:
            ipr.link("add", ifname=self.bridge, kind="bridge")
            index = ipr.link_lookup(ifname=self.bridge)[0]
            ipr.addr("add", index=index, address=gateway, prefixlen=self.subnet.prefixlen)
            ipr.link("set", index=index, state="up")
        return super().start(timeout)

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("--bridge=none")] = f"--bridge={self.bridge}"
        return cmd

    def extra_cleanup(self) -> None:
        super().extra_cleanup()
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=self.bridge)
            if found:
                ipr.link("del", index=found[0])


def kobako_leftovers(engine: Kobako) -> list[str]:
    """Links and the nft table of this kobakod, after it stopped (there should be none)."""
    import hashlib

    key = hashlib.sha256(os.path.abspath(engine.exec_root).encode()).hexdigest()[:8]
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True,
                                      text=True).stdout)
    left = [link["ifname"] for link in links
            if link.get("ifalias", "").startswith(f"kobako:{key}:")]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    if f"kobako_{key}" in tables.split():
        left.append(f"nft table kobako_{key}")
    return left


_REAL = re.compile(r"real\s+(?:(\d+)m\s*)?([\d.]+)s")


def throughput(engine: Engine, megabytes: int, runs: int) -> float:
    """Median MB/s from one container to another on the default bridge."""
    engine.docker("run", "-d", "--name", f"{PREFIX}srv", IMAGE, "sleep", "100000")
    engine.docker("run", "-d", "--name", f"{PREFIX}cli", IMAGE, "sleep", "100000")
    ip = engine.docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}",
                       f"{PREFIX}srv").stdout.strip()
    if not ip:
        raise BenchError(f"{engine.name}: the server container has no bridge address")
    rates = []
    for i in range(runs + 1):  # the first one warms up
        port = PORT + i
        # nc ends when its stdin does: a never-ending producer keeps the receiver open
        engine.docker("exec", "-d", f"{PREFIX}srv", "sh", "-c",
                      f"sleep 100000 | nc -l -p {port} > /dev/null")
        for _ in range(100):
            listening = engine.docker("exec", f"{PREFIX}srv", "netstat", "-ltn").stdout
            if f":{port} " in listening:
                break
            time.sleep(0.05)
        else:
            raise BenchError(f"{engine.name}: nc -l on {port} did not come up")
        out = engine.docker("exec", f"{PREFIX}cli", "sh", "-c",
                            f"time sh -c 'dd if=/dev/zero bs=1M count={megabytes} 2>/dev/null"
                            f" | nc {ip} {port}'", timeout=600)
        match = _REAL.search(out.stderr)
        if match is None:
            raise BenchError(f"{engine.name}: no timing from the sender: {out.stderr!r}")
        seconds = int(match.group(1) or 0) * 60 + float(match.group(2))
        if i:
            rates.append(megabytes / seconds)
    engine.docker("rm", "-f", f"{PREFIX}srv", f"{PREFIX}cli")
    return statistics.median(rates)


def bench(engine: Engine, tar: str, args: argparse.Namespace) -> dict[str, float]:
    log(f"{engine.name}: starting ({engine.base})")
    engine.start()
    engine.load_image(tar)
    r = {}
    log(f"{engine.name}: run --rm busybox true on the default bridge x{args.runs}")
    r["run --rm, default bridge (ms)"] = 1000 * median_of(
        args.runs, lambda: engine.timed("run", "--rm", IMAGE, "true"))
    log(f"{engine.name}: TCP throughput, {args.megabytes} MB x{args.repeat}")
    r["TCP container to container (MB/s)"] = throughput(engine, args.megabytes, args.repeat)
    return r


def print_table(results: dict[str, dict[str, float]]) -> None:
    rows = list(next(iter(results.values())))
    names = list(results)
    print(f"\n{'':<38}" + "".join(f"{n:>12}" for n in names)
          + ("      ratio  target" if len(names) > 1 else ""))
    targets = {"run --rm, default bridge (ms)": "<= 0.50", "TCP container to container "
               "(MB/s)": ">= 0.90"}
    for row in rows:
        line = f"{row:<38}" + "".join(f"{results[n].get(row, float('nan')):>12.1f}"
                                      for n in names)
        if len(names) > 1 and results[names[1]].get(row):
            line += f"{results[names[0]][row] / results[names[1]][row]:>11.2f}  {targets[row]}"
        print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=20, help="run latency samples")
    parser.add_argument("-r", "--repeat", type=int, default=5, help="throughput samples")
    parser.add_argument("--megabytes", type=int, default=500)
    parser.add_argument("--no-dockerd", action="store_true", help="measure kobakod only")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_network: needs root", file=sys.stderr)
        return 2

    def check_left(engine: Engine) -> None:
        if isinstance(engine, Kobako):
            left = kobako_leftovers(engine)
            if left:
                engine.problems.append(f"left behind: {left}")
        if isinstance(engine, BridgedDockerd) and os.path.exists(
                f"/sys/class/net/{engine.bridge}"):
            engine.problems.append(f"bridge {engine.bridge} left behind")

    results, problems = measure_engines(engine_classes(args.no_dockerd, BridgedDockerd),
                                        lambda engine, tar: bench(engine, tar, args),
                                        after=check_left)
    if results:
        print_table(results)
        if "dockerd" in results:
            print("dockerd: --bridge of its own, --iptables=false --ip-forward=false "
                  "--ip-masq=false (no rules to apply at run); kobakod applies its nft "
                  "table at every start and stop.")
    return print_problems(problems)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
