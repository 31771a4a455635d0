"""Docker's stats document from fake v1 and v2 cgroupfs trees and a fake /proc."""

from __future__ import annotations

import asyncio
import os

import pytest
from fake_cgroups import installed_fake, open_on

from kobako.engine import stats

GIB = 1 << 30


def put(directory: str, name: str, text: str) -> None:
    with open(os.path.join(directory, name), "w") as f:
        f.write(text)


def cli_numbers(doc: dict) -> dict:
    """The docker CLI's columns (cli/command/container/stats_helpers.go)."""
    cpu, pre = doc["cpu_stats"], doc["precpu_stats"]
    cpu_delta = cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
    system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    online = cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or [])
    cpu_pct = cpu_delta / system_delta * online * 100 if system_delta > 0 < cpu_delta else 0.0
    mem = doc["memory_stats"]
    raw = mem.get("stats") or {}
    usage = mem.get("usage", 0)
    if "total_inactive_file" in raw and raw["total_inactive_file"] < usage:
        usage -= raw["total_inactive_file"]
    elif raw.get("inactive_file", 0) < usage:
        usage -= raw.get("inactive_file", 0)
    blk_read = blk_write = 0
    for entry in doc["blkio_stats"].get("io_service_bytes_recursive") or []:
        if entry["op"][:1] in "rR":
            blk_read += entry["value"]
        elif entry["op"][:1] in "wW":
            blk_write += entry["value"]
    nets = doc.get("networks") or {}
    return {"cpu": cpu_pct, "mem": usage, "limit": mem.get("limit", 0),
            "read": blk_read, "write": blk_write,
            "rx": sum(n["rx_bytes"] for n in nets.values()),
            "tx": sum(n["tx_bytes"] for n in nets.values()),
            "pids": doc["pids_stats"].get("current", 0)}


@pytest.fixture
def v1(tmp_path):
    with installed_fake(str(tmp_path / "cg"), mode="hybrid") as tree:
        mgr = open_on(tree)
        mgr.create()
        yield mgr


@pytest.fixture
def v2(tmp_path):
    with installed_fake(str(tmp_path / "cg"), mode="v2") as tree:
        mgr = open_on(tree)
        mgr.create()
        yield mgr


def test_v1_sections(v1):
    p = v1.paths
    put(p["cpuacct"], "cpuacct.usage", "7000000000")
    put(p["cpuacct"], "cpuacct.usage_percpu", "3000000000 4000000000 \n")
    put(p["cpuacct"], "cpuacct.stat", f"user {os.sysconf('SC_CLK_TCK') * 5}\nsystem 0\n")
    put(p["cpu"], "cpu.stat", "nr_periods 10\nnr_throttled 3\nthrottled_time 900\n")
    put(p["memory"], "memory.usage_in_bytes", str(50 << 20))
    put(p["memory"], "memory.max_usage_in_bytes", str(60 << 20))
    put(p["memory"], "memory.limit_in_bytes", str(256 << 20))
    put(p["memory"], "memory.failcnt", "4")
    put(p["memory"], "memory.stat",
        f"cache {8 << 20}\nrss {40 << 20}\ninactive_file {1 << 20}\n"
        f"total_cache {8 << 20}\ntotal_rss {40 << 20}\ntotal_inactive_file {6 << 20}\n")
    put(p["pids"], "pids.current", "3")
    put(p["pids"], "pids.max", "100")
    put(p["blkio"], "blkio.throttle.io_service_bytes_recursive",
        "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:16 Read 100\nTotal 12388\n")

    s = stats.cgroup_sections(v1, machine_memory=4 * GIB)
    assert s["cpu_stats"] == {
        "cpu_usage": {"total_usage": 7_000_000_000,
                      "percpu_usage": [3_000_000_000, 4_000_000_000],
                      "usage_in_kernelmode": 0, "usage_in_usermode": 5_000_000_000},
        "throttling_data": {"periods": 10, "throttled_periods": 3, "throttled_time": 900},
    }
    mem = s["memory_stats"]
    assert (mem["usage"], mem["max_usage"], mem["limit"], mem["failcnt"]) == (
        50 << 20, 60 << 20, 256 << 20, 4)
    assert mem["stats"]["total_inactive_file"] == 6 << 20
    assert s["pids_stats"] == {"current": 3, "limit": 100}
    assert s["blkio_stats"]["io_service_bytes_recursive"] == [
        {"major": 8, "minor": 0, "op": "Read", "value": 4096},
        {"major": 8, "minor": 0, "op": "Write", "value": 8192},
        {"major": 8, "minor": 0, "op": "Sync", "value": 0},
        {"major": 8, "minor": 16, "op": "Read", "value": 100}]
    assert s["blkio_stats"]["sectors_recursive"] == []  # as moby copies an empty one
    doc = {**s, "precpu_stats": {"cpu_usage": {"total_usage": 0}}, "networks": {}}
    numbers = cli_numbers(doc)
    # v1: the CLI takes total_inactive_file (the hierarchy's), not inactive_file
    assert numbers["mem"] == (50 << 20) - (6 << 20)
    assert (numbers["read"], numbers["write"], numbers["pids"]) == (4196, 8192, 3)


def test_v1_unlimited_memory_is_the_machines_and_pids_max_is_left_out(v1):
    s = stats.cgroup_sections(v1, machine_memory=4 * GIB)
    assert s["memory_stats"]["limit"] == 4 * GIB  # memory.limit_in_bytes is 2^63-4096
    assert "failcnt" in s["memory_stats"]  # the fake's memory.failcnt is 1
    assert s["pids_stats"] == {"current": 2}


def test_v2_sections(v2):
    d = v2.path
    put(d, "cpu.stat", "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n"
                       "nr_periods 5\nnr_throttled 1\nthrottled_usec 30\n")
    put(d, "memory.current", str(30 << 20))
    put(d, "memory.max", "max")
    put(d, "memory.peak", str(40 << 20))
    put(d, "memory.stat", f"anon {20 << 20}\nfile {9 << 20}\ninactive_file {4 << 20}\n")
    put(d, "memory.events", "low 0\nhigh 0\nmax 7\noom 2\noom_kill 1\n")
    put(d, "pids.current", "5")
    put(d, "pids.max", "max")
    put(d, "io.stat", "8:0 rbytes=512 wbytes=1024 rios=1 wios=2 dbytes=0 dios=0\n"
                      "253:1 rbytes=10 wbytes=0 rios=1 wios=0\n")

    s = stats.cgroup_sections(v2, machine_memory=2 * GIB)
    assert s["cpu_stats"] == {
        "cpu_usage": {"total_usage": 2_500_000_000, "usage_in_kernelmode": 500_000_000,
                      "usage_in_usermode": 2_000_000_000},
        "throttling_data": {"periods": 5, "throttled_periods": 1, "throttled_time": 30_000},
    }
    mem = s["memory_stats"]
    assert mem["usage"] == 30 << 20
    assert mem["limit"] == 2 * GIB  # "max": the machine's memory
    assert mem["failcnt"] == 2  # memory.events' oom, as moby reports it
    assert "max_usage" not in mem  # v2 has none in dockerd's document
    assert mem["stats"]["inactive_file"] == 4 << 20
    assert s["pids_stats"] == {"current": 5, "limit": 2**64 - 1}
    assert s["blkio_stats"]["io_service_bytes_recursive"] == [
        {"major": 8, "minor": 0, "op": "read", "value": 512},
        {"major": 8, "minor": 0, "op": "write", "value": 1024},
        {"major": 253, "minor": 1, "op": "read", "value": 10},
        {"major": 253, "minor": 1, "op": "write", "value": 0}]
    assert s["blkio_stats"]["io_serviced_recursive"] is None
    numbers = cli_numbers({**s, "precpu_stats": {"cpu_usage": {"total_usage": 0}}})
    assert numbers["mem"] == (30 << 20) - (4 << 20)
    assert (numbers["read"], numbers["write"], numbers["pids"]) == (522, 1024, 5)


def test_v2_memory_limit_below_the_machine_is_kept(v2):
    put(v2.path, "memory.max", str(64 << 20))
    put(v2.path, "pids.max", "20")
    s = stats.cgroup_sections(v2, machine_memory=2 * GIB)
    assert s["memory_stats"]["limit"] == 64 << 20
    assert s["pids_stats"] == {"current": 2, "limit": 20}


NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     840      10    0    0    0     0          0         0      840      10    0    0    0     0       0          0
  eth0: 1500000    1200    1    2    0     0          0         3   250000     900    4    5    0     0       0          0
kbtd0:      0       0    0    0    0     0          0         0       98       1    0    0    0     0       0          0
"""


@pytest.fixture
def proc(tmp_path):
    root = tmp_path / "proc"
    (root / "4242" / "net").mkdir(parents=True)
    (root / "4242" / "net" / "dev").write_text(NET_DEV)
    (root / "stat").write_text("cpu  100 5 50 1000 10 1 2 7 0 0\ncpu0 50 2 25 500 5 0 1 0 0 0\n"
                               "cpu1 50 3 25 500 5 1 1 0 0 0\nintr 1\n")
    (root / "meminfo").write_text("MemTotal:        2048 kB\nMemFree:  1 kB\n")
    return stats.Host(str(root))


def test_host_numbers(proc):
    tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    # user..softirq (7 fields); steal and guest are left out as moby does
    assert proc.system_cpu_usage() == (100 + 5 + 50 + 1000 + 10 + 1 + 2) * tick_ns
    assert proc.online_cpus() == 2
    assert proc.machine_memory() == 2048 * 1024
    nets = proc.network_stats(4242)
    assert set(nets) == {"eth0", "kbtd0"}  # never lo
    assert nets["eth0"] == {"rx_bytes": 1500000, "rx_packets": 1200, "rx_errors": 1,
                            "rx_dropped": 2, "tx_bytes": 250000, "tx_packets": 900,
                            "tx_errors": 4, "tx_dropped": 5}
    assert proc.network_stats(999999) == {}  # gone: nothing, no error


def test_host_without_proc_stat_is_an_error(tmp_path):
    with pytest.raises(stats.StatsError, match="stat"):
        stats.Host(str(tmp_path)).system_cpu_usage()


class FakeContainer:
    def __init__(self, running: bool = True):
        self.id = "c" * 64
        self.doc = {"Name": "/web", "HostConfig": {"NetworkMode": "none"}}
        self.state = {"Pid": 4242 if running else 0}
        self.running = running
        self.removed = asyncio.Event()


@pytest.fixture
def samples(monkeypatch):
    """sample() replaced by a counter: each call uses 1 s more cpu of 2 s more host time."""
    calls: list[int] = []

    def fake_sample(target, runtime_root, host):
        calls.append(target.pid)
        n = len(calls)
        return {"read": f"t{n}", "preread": stats.ZERO_TIME, "pids_stats": {"current": 1},
                "cpu_stats": {"cpu_usage": {"total_usage": n * 10**9},
                              "system_cpu_usage": n * 2 * 10**9, "online_cpus": 2},
                "precpu_stats": {}, "memory_stats": {}, "blkio_stats": {},
                "name": target.name, "id": target.id}

    monkeypatch.setattr(stats, "sample", fake_sample)
    monkeypatch.setattr(stats, "PRIME_INTERVAL", 0.01)
    monkeypatch.setattr(stats, "INTERVAL", 0.01)
    return calls


async def collect(gen, limit: int = 100) -> list[dict]:
    out = []
    async for doc in gen:
        out.append(doc)
        if len(out) >= limit:
            break
    await gen.aclose()
    return out


def test_not_streaming_waits_for_a_second_sample(samples):
    docs = asyncio.run(collect(stats.container_stats(FakeContainer(), "/x", stream=False)))
    assert len(docs) == 1 and len(samples) == 2
    doc = docs[0]
    assert (doc["read"], doc["preread"]) == ("t2", "t1")
    assert doc["precpu_stats"]["cpu_usage"]["total_usage"] == 10**9
    assert cli_numbers({**doc, "memory_stats": {}, "blkio_stats": {}})["cpu"] == 100.0


def test_one_shot_answers_the_first_sample(samples):
    docs = asyncio.run(collect(stats.container_stats(FakeContainer(), "/x", stream=False,
                                                     one_shot=True)))
    assert len(docs) == 1 and len(samples) == 1
    assert docs[0]["preread"] == stats.ZERO_TIME
    assert docs[0]["precpu_stats"]["cpu_usage"]["total_usage"] == 0


def test_stream_chains_precpu_and_ends_when_removed(samples):
    async def run() -> list[dict]:
        c = FakeContainer()
        out = []
        async for doc in stats.container_stats(c, "/x", stream=True):
            out.append(doc)
            if len(out) == 3:
                c.removed.set()
        return out

    docs = asyncio.run(asyncio.wait_for(run(), 5))
    assert [d["read"] for d in docs] == ["t1", "t2", "t3"]
    assert [d["preread"] for d in docs] == [stats.ZERO_TIME, "t1", "t2"]
    assert docs[2]["precpu_stats"]["system_cpu_usage"] == 4 * 10**9


def test_stopped_container_gives_dockers_empty_document(samples):
    docs = asyncio.run(collect(stats.container_stats(FakeContainer(running=False), "/x",
                                                     stream=False)))
    assert samples == []
    assert docs == [stats.empty_document("c" * 64, "/web")]
    assert docs[0]["read"] == stats.ZERO_TIME and docs[0]["memory_stats"] == {}


def test_sample_reads_the_runtime_state_cgroup_and_proc(tmp_path, v2, proc):
    from kobako.runtime.container import Runtime
    from kobako.runtime.state import ContainerState

    runtime = Runtime(str(tmp_path / "runtime"))
    state = ContainerState("kbt-c1", bundle="/b", rootfs="/r", config={}, pid=4242,
                           cgroup_paths=v2.paths)
    state_dir = runtime.dir("kbt-c1")
    os.makedirs(state_dir.path, exist_ok=True)
    state_dir.save(state)
    put(v2.path, "pids.current", "7")
    target = stats.Target(id="kbt-c1", name="/kbt", pid=4242, host_network=False)
    doc = stats.sample(target, runtime.root, proc)
    assert doc["pids_stats"]["current"] == 7
    assert doc["cpu_stats"]["online_cpus"] == 2
    assert doc["cpu_stats"]["system_cpu_usage"] == proc.system_cpu_usage()
    assert doc["memory_stats"]["limit"] == 2048 * 1024
    assert set(doc["networks"]) == {"eth0", "kbtd0"}
    host_net = stats.sample(stats.Target("kbt-c1", "/kbt", 4242, True), runtime.root, proc)
    assert "networks" not in host_net
