"""Container stats as Docker's API serves them (GET /containers/{id}/stats).

One document per sample, built from the container's cgroup (v1, hybrid or v2, via
kobako.linux.cgroups), its init's /proc/<pid>/net/dev (read on the host: /proc/<pid>/net
shows that process's network namespace, so nobody enters the container) and the host's
/proc/stat. The fields are the ones moby fills (daemon/stats_unix.go, statsV1/statsV2)
and the docker CLI computes its columns from:

    CPU %      (cpu_usage.total_usage delta / system_cpu_usage delta) * online_cpus
    MEM        memory_stats.usage minus stats.total_inactive_file (v1) or
               stats.inactive_file (v2); limit clamped to the machine's memory
    NET I/O    networks.<if>.rx_bytes / tx_bytes
    BLOCK I/O  blkio_stats.io_service_bytes_recursive, ops starting with r / w
    PIDS       pids_stats.current

Streaming sends one document per INTERVAL, each carrying the previous sample as
precpu_stats/preread. stream=false waits for a second sample first so CPU % means
something, as dockerd does; one-shot answers with the first sample at once.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from kobako.linux.cgroups import fs as cgroup_fs

INTERVAL = 1.0  # seconds between streamed documents (dockerd's collector interval)
# Gap between the two samples of a stream=false request. dockerd waits for its next
# collector tick twice (1-2 s). The CPU % is a ratio over whatever gap there is; a
# quarter second is 25 host clock ticks per CPU (a 4% step at worst, from /proc/stat's
# 10 ms ticks), which keeps the number meaningful and `docker stats --no-stream` quick.
PRIME_INTERVAL = 0.25
ZERO_TIME = "0001-01-01T00:00:00Z"
_NET_FIELDS = ("rx_bytes", "rx_packets", "rx_errors", "rx_dropped")
_NET_TX_FIELDS = ("tx_bytes", "tx_packets", "tx_errors", "tx_dropped")


class StatsError(Exception):
    """A stats source could not be read (names the file and the reason)."""


# -- the host ----------------------------------------------------------------------------

@dataclass
class Host:
    """Host-wide numbers every document carries; `proc` is a seam for tests."""

    proc: str = "/proc"

    def system_cpu_usage(self) -> int:
        """The host's cpu time in ns, as moby's getSystemCPUUsage: the first seven
        fields of /proc/stat's "cpu" line (user..softirq), in clock ticks."""
        path = os.path.join(self.proc, "stat")
        try:
            with open(path) as f:
                for line in f:
                    fields = line.split()
                    if fields and fields[0] == "cpu":
                        ticks = sum(int(v) for v in fields[1:8])
                        return ticks * 1_000_000_000 // _clock_ticks()
        except (OSError, ValueError) as err:
            raise StatsError(f"read {path}: {err}") from None
        raise StatsError(f"{path} has no cpu line")

    def online_cpus(self) -> int:
        return os.sysconf("SC_NPROCESSORS_ONLN") if self.proc == "/proc" else _count_cpus(
            os.path.join(self.proc, "stat"))

    def machine_memory(self) -> int:
        path = os.path.join(self.proc, "meminfo")
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("MemTotal:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError) as err:
            raise StatsError(f"read {path}: {err}") from None
        return 0

    def network_stats(self, pid: int) -> dict[str, dict[str, int]]:
        """Every interface but lo of the network namespace `pid` lives in."""
        path = os.path.join(self.proc, str(pid), "net", "dev")
        try:
            with open(path) as f:
                text = f.read()
        except FileNotFoundError:
            return {}  # the process is gone: the container is exiting
        except OSError as err:
            raise StatsError(f"read {path}: {err.strerror}") from None
        return parse_net_dev(text)


def parse_net_dev(text: str) -> dict[str, dict[str, int]]:
    networks: dict[str, dict[str, int]] = {}
    for line in text.splitlines()[2:]:  # two header lines
        name, sep, rest = line.partition(":")
        name = name.strip()
        if not sep or name == "lo":
            continue
        values = [int(v) for v in rest.split()]
        if len(values) < 12:
            continue
        entry = dict(zip(_NET_FIELDS, values[0:4], strict=True))
        entry.update(zip(_NET_TX_FIELDS, values[8:12], strict=True))
        networks[name] = entry
    return networks


def _clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError):
        return 100


def _count_cpus(stat_path: str) -> int:
    with open(stat_path) as f:
        return sum(1 for line in f if line.startswith("cpu") and line[3:4].isdigit())


# -- cgroup numbers -> Docker's sections -------------------------------------------------

def cgroup_sections(manager: Any, machine_memory: int) -> dict[str, Any]:
    """cpu_stats (without the host's fields), memory_stats, blkio_stats and pids_stats
    of one container from its cgroup manager (V1Manager or V2Manager)."""
    raw = manager.stats()  # runc's `events --stats` form
    v2 = manager.mode == "v2"
    return {
        "cpu_stats": _cpu(raw.get("cpu") or {}, v2),
        "memory_stats": _memory(raw.get("memory"), manager, v2, machine_memory),
        "blkio_stats": _blkio(raw.get("blkio") or {}, v2),
        "pids_stats": _pids(raw.get("pids"), manager, v2),
    }


def _cpu(cpu: dict, v2: bool) -> dict:
    usage = cpu.get("usage") or {}
    throttling = cpu.get("throttling") or {}
    cpu_usage: dict[str, Any] = {"total_usage": usage.get("total", 0)}
    if not v2 and usage.get("percpu"):
        cpu_usage["percpu_usage"] = usage["percpu"]  # v2 has no per-cpu numbers
    cpu_usage["usage_in_kernelmode"] = usage.get("kernel", 0)
    cpu_usage["usage_in_usermode"] = usage.get("user", 0)
    return {
        "cpu_usage": cpu_usage,
        "throttling_data": {"periods": throttling.get("periods", 0),
                            "throttled_periods": throttling.get("throttledPeriods", 0),
                            "throttled_time": throttling.get("throttledTime", 0)},
    }


def _memory(memory: dict | None, manager: Any, v2: bool, machine_memory: int) -> dict:
    if not memory:
        return {}
    usage = memory.get("usage") or {}
    limit = usage.get("limit", 0)
    if machine_memory and limit > machine_memory:
        limit = machine_memory  # no limit set: dockerd reports the machine's memory
    doc: dict[str, Any] = {"usage": usage.get("usage", 0)}
    if v2:
        events = cgroup_fs.read_flat_keyed(manager.path, "memory.events") or {}
        doc["stats"] = dict(memory.get("raw") or {})
        failcnt = events.get("oom", 0)  # moby: Failcnt is memory.events' "oom"
    else:
        doc["max_usage"] = usage.get("max", 0)
        doc["stats"] = dict(memory.get("raw") or {})
        failcnt = usage.get("failcnt", 0)
    if failcnt:
        doc["failcnt"] = failcnt
    doc["limit"] = limit
    return doc


_BLKIO_KEYS = ("io_service_bytes_recursive", "io_serviced_recursive", "io_queue_recursive",
               "io_service_time_recursive", "io_wait_time_recursive", "io_merged_recursive",
               "io_time_recursive", "sectors_recursive")


def _blkio(blkio: dict, v2: bool) -> dict:
    # v1: every list, empty ones too, as moby copies them; v2 fills only the bytes
    doc: dict[str, Any] = {key: None if v2 else [] for key in _BLKIO_KEYS}

    def entries(items: list[dict] | None) -> list[dict]:
        return [{"major": e["major"], "minor": e["minor"],
                 "op": e["op"].lower() if v2 else e["op"], "value": e["value"]}
                for e in items or []]

    doc["io_service_bytes_recursive"] = entries(blkio.get("ioServiceBytesRecursive"))
    if not v2:
        doc["io_serviced_recursive"] = entries(blkio.get("ioServicedRecursive"))
    return doc


def _pids(pids: dict | None, manager: Any, v2: bool) -> dict:
    if pids is None:
        return {}
    doc: dict[str, Any] = {"current": pids.get("current", 0)}
    limit = pids.get("limit", 0)
    if v2 and not limit:
        # containerd reads v2's "max" as the u64 maximum; v1's "max" as 0 (left out)
        text = (cgroup_fs.read_optional(manager.path, "pids.max") or "").strip()
        limit = cgroup_fs.UINT64_MAX if text == "max" else limit
    if limit:
        doc["limit"] = limit
    return doc


# -- documents ---------------------------------------------------------------------------

def empty_document(container_id: str, name: str) -> dict[str, Any]:
    """What dockerd sends for a container that is not running: zeros, name and id."""
    zero_cpu = {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0,
                              "usage_in_usermode": 0},
                "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}
    return {
        "read": ZERO_TIME, "preread": ZERO_TIME, "pids_stats": {},
        "blkio_stats": dict.fromkeys(_BLKIO_KEYS), "num_procs": 0, "storage_stats": {},
        "cpu_stats": zero_cpu, "precpu_stats": zero_cpu, "memory_stats": {},
        "name": name, "id": container_id,
    }


@dataclass
class Target:
    """What a sample needs to know about the container."""

    id: str
    name: str  # with the leading "/", as dockerd reports it
    pid: int
    host_network: bool


def sample(target: Target, runtime_root: str, host: Host) -> dict[str, Any]:
    """One document (without precpu_stats/preread). Blocking: run it in a thread."""
    from kobako.linux.cgroups import manager_for_paths
    from kobako.runtime.container import Runtime
    from kobako.timestamps import now_rfc3339

    state, _ = Runtime(runtime_root).load(target.id)
    manager = manager_for_paths(state.cgroup_paths)
    read = now_rfc3339()
    # the host's cpu time right next to the container's, so the ratio is not skewed
    system_usage = host.system_cpu_usage()
    sections = cgroup_sections(manager, host.machine_memory())
    cpu_stats = sections["cpu_stats"]
    cpu_stats["system_cpu_usage"] = system_usage
    cpu_stats["online_cpus"] = host.online_cpus()
    doc: dict[str, Any] = {
        "read": read, "preread": ZERO_TIME,
        "pids_stats": sections["pids_stats"], "blkio_stats": sections["blkio_stats"],
        "num_procs": 0, "storage_stats": {},
        "cpu_stats": cpu_stats, "precpu_stats": {},
        "memory_stats": sections["memory_stats"],
        "name": target.name, "id": target.id,
    }
    networks = {} if target.host_network else host.network_stats(target.pid)
    if networks:
        doc["networks"] = networks
    return doc


class Stream:
    """Successive documents for one container; each carries the previous as precpu."""

    def __init__(self, container: Any, runtime_root: str, host: Host | None = None):
        self.container = container  # kobako.engine.containers.Container
        self.runtime_root = runtime_root
        self.host = host or Host()
        self._pre_cpu: dict[str, Any] = empty_document("", "")["precpu_stats"]
        self._pre_read = ZERO_TIME

    def _target(self) -> Target | None:
        c = self.container
        pid = int(c.state.get("Pid") or 0)
        if not c.running or pid <= 0:
            return None
        return Target(id=c.id, name=c.doc["Name"], pid=pid,
                      host_network=c.doc["HostConfig"].get("NetworkMode") == "host")

    async def next(self) -> dict[str, Any]:
        from kobako.runtime.errors import RuntimeFailure

        target = self._target()
        doc = None
        if target is not None:
            try:
                doc = await asyncio.to_thread(sample, target, self.runtime_root, self.host)
            except (RuntimeFailure, OSError):
                if self.container.running:
                    raise
                doc = None  # it stopped while we read: report it as stopped
        if doc is None:
            doc = empty_document(self.container.id, self.container.doc["Name"])
            self._pre_cpu, self._pre_read = doc["cpu_stats"], ZERO_TIME
            return doc
        doc["precpu_stats"], doc["preread"] = self._pre_cpu, self._pre_read
        self._pre_cpu, self._pre_read = doc["cpu_stats"], doc["read"]
        return doc


async def container_stats(container: Any, runtime_root: str, *, stream: bool,
                          one_shot: bool = False,
                          host: Host | None = None) -> AsyncIterator[dict[str, Any]]:
    """The documents of GET /containers/{id}/stats, as an async generator.

    stream: one per INTERVAL until the container is removed (the client hanging up ends
    it: the route stops iterating). Not streaming: one document; for a running container
    after a second sample (PRIME_INTERVAL later) unless `one_shot`.
    """
    source = Stream(container, runtime_root, host)
    if not stream:
        doc = await source.next()
        if not one_shot and container.running:
            await asyncio.sleep(PRIME_INTERVAL)
            doc = await source.next()
        yield doc
        return
    while not container.removed.is_set():
        yield await source.next()
        try:
            await asyncio.wait_for(container.removed.wait(), INTERVAL)
        except TimeoutError:
            continue
