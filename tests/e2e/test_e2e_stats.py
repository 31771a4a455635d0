"""`docker stats` and `docker system df` against a kobakod of the test's own.

The numbers the docker CLI prints are checked against the container's cgroup files
and its /proc/<pid>/net/dev, read by the test right after.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import time

import pytest
from daemon_fixture import DOCKER, busybox_daemon
from daemon_fixture import Engine as BaseEngine

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
         "kB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4}


class Engine(BaseEngine):
    def run(self, *args: str) -> tuple[str, int]:
        name = "kbt-st-" + secrets.token_hex(4)
        self.docker("run", "-d", "--name", name, "--network", "none", *args)
        pid = int(self.docker("inspect", "--format", "{{.State.Pid}}", name).stdout)
        return name, pid

    def stats(self, name: str) -> dict:
        out = self.docker("stats", "--no-stream", "--format", "{{json .}}", name).stdout
        return json.loads(out.strip().splitlines()[0])

    def api(self, path: str) -> dict:
        client = self.daemon.docker_py()
        try:
            response = client.api.get(client.api._url(path))
            assert response.status_code == 200, response.text
            return response.json()
        finally:
            client.close()


@pytest.fixture(scope="module")
def engine():
    with busybox_daemon() as daemon:
        yield Engine(daemon)


def size(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)\s*([A-Za-z]+)", text.strip())
    assert m, text
    return float(m.group(1)) * UNITS[m.group(2)]


def cgroup_dir(pid: int, controller: str) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                return f"/sys/fs/cgroup/{controller}{path}"
            if controllers == "" and os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
                return f"/sys/fs/cgroup{path}"
    raise AssertionError(f"no {controller} cgroup for pid {pid}")


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def memory_from_files(pid: int) -> tuple[int, int]:
    """(usage as the CLI shows it, limit) from the memory cgroup's files."""
    d = cgroup_dir(pid, "memory")
    stat = dict(line.split() for line in read(f"{d}/memory.stat").splitlines())
    if os.path.exists(f"{d}/memory.usage_in_bytes"):  # v1
        return (int(read(f"{d}/memory.usage_in_bytes")) - int(stat["total_inactive_file"]),
                int(read(f"{d}/memory.limit_in_bytes")))
    return int(read(f"{d}/memory.current")) - int(stat["inactive_file"]), int(
        read(f"{d}/memory.max"))


def test_no_stream_numbers_match_the_cgroup_files(engine):
    # three processes: sh and two sleeps
    name, pid = engine.run("--memory", "64m", "busybox", "sh", "-c",
                           "sleep 1000 & sleep 1000 & "
                           "head -c 3000000 /dev/zero | tr '\\0' x > /tmp/f; wait")
    time.sleep(0.5)
    s = engine.stats(name)
    pids_file = int(read(cgroup_dir(pid, "pids") + "/pids.current"))
    usage, limit = memory_from_files(pid)
    assert pids_file == 3
    assert s["PIDs"] == str(pids_file)
    mem_usage, mem_limit = (size(x) for x in s["MemUsage"].split("/"))
    assert limit == 64 << 20 and mem_limit == limit
    assert abs(mem_usage - usage) <= max(0.1 * usage, 256 << 10), (s, usage)
    assert s["NetIO"] == "0B / 0B"  # --network none: only lo, which is never counted
    assert s["Name"] == name and name.startswith(s["Name"])

    doc = engine.api(f"/containers/{name}/stats?stream=0")
    assert doc["name"] == "/" + name
    assert doc["pids_stats"]["current"] == 3
    assert doc["memory_stats"]["limit"] == 64 << 20
    assert abs(doc["memory_stats"]["usage"] - int(read(
        cgroup_dir(pid, "memory") + ("/memory.usage_in_bytes" if os.path.exists(
            cgroup_dir(pid, "memory") + "/memory.usage_in_bytes") else "/memory.current"))
    )) <= 1 << 20
    assert doc["preread"] != "0001-01-01T00:00:00Z"  # stream=false waited for a 2nd sample
    assert doc["cpu_stats"]["online_cpus"] == os.cpu_count()
    assert doc["cpu_stats"]["system_cpu_usage"] > doc["precpu_stats"]["system_cpu_usage"]


def test_cpu_percent_of_a_busy_loop(engine):
    busy, _ = engine.run("busybox", "sh", "-c", "while :; do :; done")
    idle, _ = engine.run("busybox", "sleep", "1000")
    time.sleep(0.3)
    busy_pct = float(engine.stats(busy)["CPUPerc"].rstrip("%"))
    idle_pct = float(engine.stats(idle)["CPUPerc"].rstrip("%"))
    assert busy_pct > 20.0, busy_pct
    assert idle_pct < 5.0, idle_pct
    engine.docker("rm", "-f", busy, idle)


def test_net_io_counts_the_containers_interfaces(engine):
    name, pid = engine.run("busybox", "sleep", "1000")
    tag = secrets.token_hex(3)
    link, peer, netns = f"kbtv{tag}", f"kbtp{tag}", f"kbt-ns-{tag}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        # a veth pair between the container and a namespace of the test's own: the
        # pings go nowhere else
        subprocess.run(["ip", "link", "add", link, "netns", str(pid), "type", "veth",
                        "peer", "name", peer, "netns", netns], check=True)
        ns = ["nsenter", "-t", str(pid), "-n"]
        subprocess.run([*ns, "ip", "addr", "add", "192.0.2.1/24", "dev", link], check=True)
        subprocess.run([*ns, "ip", "link", "set", link, "up"], check=True)
        subprocess.run(["ip", "-n", netns, "addr", "add", "192.0.2.2/24", "dev", peer],
                       check=True)
        subprocess.run(["ip", "-n", netns, "link", "set", peer, "up"], check=True)
        ping = engine.docker("exec", name, "ping", "-c", "3", "-i", "0.2", "-W", "2",
                             "192.0.2.2", check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        def counters() -> list[int]:
            with open(f"/proc/{pid}/net/dev") as f:
                line = next(x for x in f if x.strip().startswith(link + ":"))
            return [int(v) for v in line.split(":", 1)[1].split()]

        # IPv6 neighbour discovery may add packets at any time: bracket each reading
        before = counters()
        doc = engine.api(f"/containers/{name}/stats?stream=0")
        after = counters()
        net = doc["networks"][link]
        assert before[0] <= net["rx_bytes"] <= after[0] and net["rx_bytes"] > 0
        assert before[8] <= net["tx_bytes"] <= after[8] and net["tx_bytes"] > 0
        assert before[9] <= net["tx_packets"] <= after[9] and net["tx_packets"] >= 3
        assert "lo" not in doc["networks"]
        before = counters()
        rx, tx = engine.stats(name)["NetIO"].split("/")
        after = counters()
        assert before[0] * 0.99 <= size(rx) <= after[0] * 1.01
        assert before[8] * 0.99 <= size(tx) <= after[8] * 1.01
    finally:
        subprocess.run(["ip", "netns", "del", netns])  # takes the veth pair with it
        engine.docker("rm", "-f", name)


def test_block_io_is_the_cgroups(engine):
    name, pid = engine.run("busybox", "sleep", "1000")
    doc = engine.api(f"/containers/{name}/stats?stream=0")
    d = cgroup_dir(pid, "blkio") if os.path.isdir("/sys/fs/cgroup/blkio") else None
    if d is None:
        pytest.skip("no v1 blkio hierarchy here")
    expected = []
    for file_name in ("blkio.io_service_bytes_recursive",
                      "blkio.throttle.io_service_bytes_recursive"):
        if os.path.exists(f"{d}/{file_name}"):
            expected = [line.split() for line in read(f"{d}/{file_name}").splitlines()
                        if len(line.split()) == 3]
            if expected:
                break
    got = [[f"{e['major']}:{e['minor']}", e["op"], str(e["value"])]
           for e in doc["blkio_stats"]["io_service_bytes_recursive"] or []]
    assert got == expected
    engine.docker("rm", "-f", name)


def test_stopped_container_shows_zeros(engine):
    name = "kbt-st-" + secrets.token_hex(4)
    engine.docker("run", "--name", name, "--network", "none", "busybox", "true")
    s = engine.stats(name)
    assert (s["CPUPerc"], s["PIDs"], s["NetIO"]) == ("0.00%", "0", "0B / 0B")
    engine.docker("rm", name)


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_disconnecting_stats_clients_do_not_hurt_the_daemon(engine):
    name, _ = engine.run("busybox", "sleep", "1000")
    daemon_pid = engine.daemon.proc.pid
    engine.docker("ps")
    before = _fds(daemon_pid)
    for _ in range(3):
        proc = subprocess.Popen([DOCKER, "stats", name], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=engine.daemon.env())
        time.sleep(1.5)
        proc.kill()
        proc.wait()
    for query in ("stream=1", "stream=0"):
        for _ in range(5):
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(str(engine.daemon.sock))
            sock.sendall(f"GET /containers/{name}/stats?{query} HTTP/1.1\r\n"
                         "Host: x\r\n\r\n".encode())
            if query == "stream=1":
                assert sock.recv(100).startswith(b"HTTP/1.1 200")
            sock.close()  # mid-stream, or before the answer
    time.sleep(2.5)  # the streams notice at their next write
    assert engine.docker("ps", "-q").stdout.split()
    assert engine.stats(name)["PIDs"] == "1"
    assert _fds(daemon_pid) <= before + 2, (before, os.listdir(f"/proc/{daemon_pid}/fd"))
    assert "engine/stats.py" not in engine.daemon.log()  # no traceback through stats
    engine.docker("rm", "-f", name)


def test_stream_sends_a_document_per_second(engine):
    name, _ = engine.run("busybox", "sleep", "1000")
    client = engine.daemon.docker_py()
    start = time.monotonic()
    docs = []
    for doc in client.api.stats(name, stream=True, decode=True):
        docs.append(doc)
        if len(docs) == 3:
            break
    elapsed = time.monotonic() - start
    assert 1.5 < elapsed < 4.0, elapsed
    assert docs[1]["preread"] == docs[0]["read"]
    assert docs[2]["precpu_stats"] == docs[1]["cpu_stats"]
    client.close()
    engine.docker("rm", "-f", name)


def test_system_df_lists_the_image_and_container(engine):
    name, _ = engine.run("busybox", "sh", "-c",
                         "head -c 1048576 /dev/zero > /big; sleep 1000")
    time.sleep(0.5)
    out = engine.docker("system", "df").stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert int(rows["Images"][1]) == 1 and int(rows["Images"][2]) >= 1
    assert int(rows["Containers"][1]) >= 1
    verbose = engine.docker("system", "df", "-v").stdout
    assert "busybox" in verbose
    line = next(x for x in verbose.splitlines() if name in x)
    assert "1.05MB" in line, line  # the container's 1 MiB file, as SIZE
    doc = engine.api("/system/df")
    [c] = [c for c in doc["Containers"] if c["Names"] == ["/" + name]]
    assert 1 << 20 <= c["SizeRw"] < (1 << 20) + 65536
    [image] = doc["Images"]
    assert c["SizeRootFs"] == c["SizeRw"] + image["Size"]
    assert image["Containers"] >= 1 and doc["LayersSize"] == image["Size"]
    engine.docker("rm", "-f", name)
