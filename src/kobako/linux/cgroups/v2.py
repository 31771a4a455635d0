"""cgroup v2 manager: one directory in the unified hierarchy (key "" in paths)."""

from __future__ import annotations

import os
import re
import signal

from . import convert, fs
from .errors import CgroupError
from .host import UNIFIED, Host, join, own_cgroup
from .manager import CgroupManager, wait_until
from .paths import CgroupPath

# linux.resources.unified keys: "<controller>.<name>" or "cgroup.<name>", no paths (runc)
_UNIFIED_KEY = re.compile(r"^[a-z_]+\.[A-Za-z0-9_.]+$")


def paths_for(host: Host, cgroup: CgroupPath) -> dict[str, str]:
    """A relative path goes under the parent of our own cgroup, as runc's: ours most
    likely has processes, so no controller could be enabled for a child of it."""
    assert host.unified is not None
    base = os.path.dirname(own_cgroup(host, UNIFIED)) if cgroup.relative else "/"
    return {UNIFIED: join(host.unified.mountpoint, os.path.join(base, cgroup.path))}


class V2Manager(CgroupManager):
    mode = "v2"

    def __init__(self, paths: dict[str, str], mountpoint: str | None = None):
        super().__init__(paths)
        self.path = self.paths[UNIFIED]
        self.mountpoint = mountpoint
        # controller -> why it could not be enabled for our directory
        self.unavailable: dict[str, str] = {}

    # -- create ----------------------------------------------------------------------
    def create(self) -> None:
        for ancestor in self._ancestors():
            self._created.extend(fs.make_dirs(ancestor))
            self._enable_controllers(ancestor)
        self._created.extend(fs.make_dirs(self.path))

    def _ancestors(self) -> list[str]:
        """The directories above ours, from the hierarchy root (the mountpoint) down."""
        chain = []
        current = os.path.dirname(self.path)
        while True:
            chain.append(current)
            parent = os.path.dirname(current)
            if current == self.mountpoint or parent == current:
                break
            if self.mountpoint is None and os.path.isdir(current) and not fs.exists(
                    parent, "cgroup.subtree_control"):
                break  # rebuilt from paths alone: the mount root is the last cgroup dir
            current = parent
        return list(reversed(chain))

    def _enable_controllers(self, directory: str) -> None:
        """Make every controller available here reach the children too (as runc does)."""
        available = (fs.read_optional(directory, "cgroup.controllers") or "").split()
        enabled = set((fs.read_optional(directory, "cgroup.subtree_control") or "").split())
        missing = [c for c in available if c not in enabled]
        if not missing:
            return
        try:
            fs.write(directory, "cgroup.subtree_control", " ".join("+" + c for c in missing))
        except CgroupError as err:
            if (fs.read_optional(directory, "cgroup.procs") or "").strip():
                # processes of its own: only the threaded controllers would go in, and
                # they would turn it into a threaded domain (runc leaves it alone too)
                self.unavailable.update(dict.fromkeys(missing, str(err)))
                return
            # One controller can refuse (cpu with RT tasks): enable the others one by
            # one. A controller left out only matters when its limits are asked for,
            # and then apply() says why it is missing.
            for controller in missing:
                try:
                    fs.write(directory, "cgroup.subtree_control", "+" + controller)
                except CgroupError as err:
                    self.unavailable[controller] = str(err)

    # -- apply -----------------------------------------------------------------------
    def apply(self, resources: dict) -> None:
        cpu = resources.get("cpu") or {}
        if cpu:
            self._apply_cpu(cpu)
        if resources.get("memory"):
            self._apply_memory(resources["memory"])
        pids = resources.get("pids")
        if pids and pids.get("limit") is not None:
            self._write("pids.max", convert.pids_limit_text(int(pids["limit"])))
        if resources.get("blockIO"):
            self._apply_io(resources["blockIO"])
        for entry in resources.get("hugepageLimits") or []:
            size = convert.hugepage_size_name(entry["pageSize"])
            self._write(f"hugetlb.{size}.max", int(entry["limit"]))
            if fs.exists(self.path, f"hugetlb.{size}.rsvd.max"):
                self._write(f"hugetlb.{size}.rsvd.max", int(entry["limit"]))
        if resources.get("devices") is not None:
            self._apply_devices(resources["devices"])
        # unified last: it overrides what the fields above wrote (runc)
        for key, value in (resources.get("unified") or {}).items():
            if not _UNIFIED_KEY.match(key) or ".." in key:
                raise CgroupError(f"invalid linux.resources.unified key {key!r}")
            self._write(key, value)

    def _write(self, name: str, value: str | int) -> None:
        try:
            fs.write(self.path, name, value)
        except CgroupError as err:
            controller = name.split(".", 1)[0]
            reason = self.unavailable.get(controller)
            if reason and not fs.exists(self.path, name):
                raise CgroupError(f"cannot set {name}={value!r}: the {controller} controller "
                                  f"could not be enabled ({reason})", err.path, err.errno) from None
            raise

    def _apply_cpu(self, cpu: dict) -> None:
        if cpu.get("realtimeRuntime") or cpu.get("realtimePeriod"):
            raise CgroupError("cpu.realtimeRuntime/realtimePeriod are not supported on cgroup v2")
        if cpu.get("shares"):
            self._write("cpu.weight", convert.shares_to_weight(int(cpu["shares"])))
        quota, period = int(cpu.get("quota") or 0), int(cpu.get("period") or 0)
        if quota or period:
            text = str(quota) if quota > 0 else "max"
            if period:
                text += f" {period}"
            self._write("cpu.max", text)
        if cpu.get("burst") is not None:
            _write_unless_default(self, "cpu.max.burst", int(cpu["burst"]))
        if cpu.get("idle") is not None:
            _write_unless_default(self, "cpu.idle", int(cpu["idle"]))
        if cpu.get("cpus"):
            self._write("cpuset.cpus", cpu["cpus"])
        if cpu.get("mems"):
            self._write("cpuset.mems", cpu["mems"])

    def _apply_memory(self, memory: dict) -> None:
        limit = memory.get("limit")
        swap = convert.swap_to_v2(memory.get("swap"), limit)
        # swap.max first, so lowering memory.max never leaves a moment with too much swap
        if swap is not None:
            text = convert.limit_text(swap)
            if fs.exists(self.path, "memory.swap.max"):
                self._write("memory.swap.max", text)
            elif text not in ("max", "0"):
                raise CgroupError(f"cannot set memory.swap.max={text!r}: {self.path}/memory.swap.max "
                                  "does not exist (swap accounting is off on this kernel)")
        if limit:
            self._write("memory.max", convert.limit_text(int(limit)))
        if memory.get("reservation"):
            self._write("memory.low", convert.limit_text(int(memory["reservation"])))
        if memory.get("kernel") or memory.get("kernelTCP"):
            raise CgroupError("memory.kernel/kernelTCP limits do not exist on cgroup v2 "
                              "(no memory.kmem.* files)")
        # swappiness and disableOOMKiller have no v2 file: ignored, as runc does

    def _apply_io(self, block_io: dict) -> None:
        bfq = fs.exists(self.path, "io.bfq.weight")
        if block_io.get("weight"):
            weight = int(block_io["weight"])
            if bfq:  # BFQ takes blkio's 10..1000 scale as is
                self._write("io.bfq.weight", weight)
            else:
                self._write("io.weight", convert.blkio_weight_to_io_weight(weight))
        for entry in block_io.get("weightDevice") or []:
            if not entry.get("weight"):
                continue
            device = f"{int(entry['major'])}:{int(entry['minor'])}"
            if bfq:
                self._write("io.bfq.weight", f"{device} {int(entry['weight'])}")
            else:
                self._write("io.weight",
                            f"{device} {convert.blkio_weight_to_io_weight(int(entry['weight']))}")
        for _field, key, major, minor, rate in convert.throttle_entries(block_io):
            self._write("io.max", f"{major}:{minor} {key}={rate if rate > 0 else 'max'}")

    def _apply_devices(self, rules: list[dict]) -> None:
        from . import devices_bpf
        devices_bpf.apply(self.path, rules)

    # -- processes, freezer ----------------------------------------------------------
    def _procs_dir(self) -> str:
        return self.path

    def _can_freeze(self) -> bool:
        return fs.exists(self.path, "cgroup.freeze")

    def freeze(self) -> None:
        self._write("cgroup.freeze", "1")
        wait_until(lambda: self._event("frozen") == 1, f"{self.path} to freeze")

    def thaw(self) -> None:
        self._write("cgroup.freeze", "0")
        wait_until(lambda: self._event("frozen") == 0, f"{self.path} to thaw")

    def frozen(self) -> bool:
        return self._event("frozen") == 1

    def _event(self, key: str) -> int:
        return (fs.read_flat_keyed(self.path, "cgroup.events") or {}).get(key, 0)

    def kill_all(self, sig: int) -> None:
        if sig == signal.SIGKILL and fs.exists(self.path, "cgroup.kill"):
            self._write("cgroup.kill", "1")  # atomic, also reaches tasks forking right now
            return
        super().kill_all(sig)

    # -- stats -----------------------------------------------------------------------
    def oom_kill_count(self) -> int:
        return (fs.read_flat_keyed(self.path, "memory.events") or {}).get("oom_kill", 0)

    def stats(self) -> dict:
        directory = self.path
        data: dict = {}
        cpu_stat = fs.read_flat_keyed(directory, "cpu.stat")
        if cpu_stat is not None:
            data["cpu"] = {
                "usage": {"total": cpu_stat.get("usage_usec", 0) * 1000,
                          "kernel": cpu_stat.get("system_usec", 0) * 1000,
                          "user": cpu_stat.get("user_usec", 0) * 1000},
                "throttling": {"periods": cpu_stat.get("nr_periods", 0),
                               "throttledPeriods": cpu_stat.get("nr_throttled", 0),
                               "throttledTime": cpu_stat.get("throttled_usec", 0) * 1000},
            }
        memory_stats = self._memory_stats()
        if memory_stats is not None:
            data["memory"] = memory_stats
        current = fs.read_uint(directory, "pids.current")
        if current is not None:
            limit = (fs.read_optional(directory, "pids.max") or "max").strip()
            data["pids"] = {"current": current, "limit": 0 if limit == "max" else int(limit)}
        io_stat = fs.read_optional(directory, "io.stat")
        if io_stat is not None:
            data["blkio"] = io_stats(io_stat)
        hugetlb = hugetlb_stats(directory)
        if hugetlb:
            data["hugetlb"] = hugetlb
        return data

    def _memory_stats(self) -> dict | None:
        directory = self.path
        usage = fs.read_uint(directory, "memory.current")
        if usage is None:
            return None
        raw = fs.read_flat_keyed(directory, "memory.stat") or {}
        events = fs.read_flat_keyed(directory, "memory.events") or {}
        result: dict = {
            "cache": raw.get("file", 0),
            "usage": {"limit": fs.read_uint(directory, "memory.max") or 0, "usage": usage,
                      "max": fs.read_uint(directory, "memory.peak") or 0,
                      "failcnt": events.get("max", 0)},
        }
        swap = fs.read_uint(directory, "memory.swap.current")
        if swap is not None:
            # runc reports v1-style memory+swap numbers
            swap_limit = fs.read_uint(directory, "memory.swap.max") or 0
            memory_limit = result["usage"]["limit"]
            combined_limit = (fs.UINT64_MAX if fs.UINT64_MAX in (swap_limit, memory_limit)
                              else swap_limit + memory_limit)
            result["swap"] = {"limit": combined_limit, "usage": swap + usage, "failcnt": 0}
        result["raw"] = raw
        return result


def _write_unless_default(manager: V2Manager, name: str, value: int) -> None:
    if value == 0 and not fs.exists(manager.path, name):
        return
    manager._write(name, value)


def io_stats(text: str) -> dict:
    """io.stat ("8:0 rbytes=1 wbytes=2 rios=3 wios=4 ...") -> runc's blkio stats."""
    service_bytes: list[dict] = []
    serviced: list[dict] = []
    for line in text.splitlines():
        parts = line.split()
        if not parts or ":" not in parts[0]:
            continue
        major, minor = (int(x) for x in parts[0].split(":"))
        values = dict(part.split("=", 1) for part in parts[1:] if "=" in part)
        for key, op, target in (("rbytes", "Read", service_bytes), ("wbytes", "Write", service_bytes),
                                ("rios", "Read", serviced), ("wios", "Write", serviced)):
            if key in values:
                target.append({"major": major, "minor": minor, "op": op, "value": int(values[key])})
    result: dict = {}
    if service_bytes:
        result["ioServiceBytesRecursive"] = service_bytes
    if serviced:
        result["ioServicedRecursive"] = serviced
    return result


def hugetlb_stats(directory: str) -> dict:
    result = {}
    try:
        names = sorted(os.listdir(directory))
    except OSError as err:
        raise CgroupError(f"list {directory}: {err.strerror}", directory, err.errno) from None
    for name in names:
        parts = name.split(".")
        if len(parts) == 3 and parts[0] == "hugetlb" and parts[2] == "current":
            size = parts[1]
            events = fs.read_flat_keyed(directory, f"hugetlb.{size}.events") or {}
            result[size] = {"usage": fs.read_uint(directory, name) or 0,
                            "max": fs.read_uint(directory, f"hugetlb.{size}.max") or 0,
                            "failcnt": events.get("max", 0)}
    return result
