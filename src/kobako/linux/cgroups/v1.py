"""cgroup v1 (and hybrid) manager: one directory per mounted controller hierarchy.

On a hybrid host the cgroup2 "unified" mount is joined too (key ""), and
hugetlb limits go there when no v1 hugetlb hierarchy is mounted.
"""

from __future__ import annotations

import errno as _errno
import os

from . import convert, fs
from .errors import CgroupError
from .host import UNIFIED, Host, join, own_cgroup
from .manager import CgroupManager, wait_until
from .paths import CgroupPath

# runc's subsystem order: cpuset first (tasks cannot join an empty cpuset), freezer last
ORDER = ("cpuset", "devices", "memory", "cpu", "cpuacct", "pids", "blkio", "hugetlb",
         "net_cls", "net_prio", "perf_event", "freezer", "rdma", "misc")

_ticks_per_second = 100


def paths_for(host: Host, cgroup: CgroupPath) -> dict[str, str]:
    paths: dict[str, str] = {}
    for controller, hierarchy in host.v1.items():
        base = own_cgroup(host, controller) if cgroup.relative else "/"
        paths[controller] = join(hierarchy.mountpoint, os.path.join(base, cgroup.path))
    if host.unified is not None:
        base = own_cgroup(host, UNIFIED) if cgroup.relative else "/"
        paths[UNIFIED] = join(host.unified.mountpoint, os.path.join(base, cgroup.path))
    return paths


class V1Manager(CgroupManager):
    mode = "v1"

    def _dir(self, controller: str) -> str | None:
        return self.paths.get(controller)

    def _need(self, controller: str, what: str) -> str:
        directory = self.paths.get(controller)
        if directory is None:
            raise CgroupError(f"cannot set {what}: the {controller} cgroup controller is not mounted")
        return directory

    # -- create ----------------------------------------------------------------------
    def create(self) -> None:
        for directory in self.directories():
            created = fs.make_dirs(directory)
            self._created.extend(created)
            if directory == self.paths.get("cpuset"):
                _fill_cpusets(directory)
        unified = self.paths.get(UNIFIED)
        if unified is not None and "hugetlb" not in self.paths:
            _enable_unified_hugetlb(unified)

    # -- apply -----------------------------------------------------------------------
    def apply(self, resources: dict) -> None:
        if resources.get("unified"):
            raise CgroupError("linux.resources.unified needs cgroup v2; this host uses cgroup v1")
        cpu = resources.get("cpu") or {}
        if cpu.get("cpus") or cpu.get("mems"):
            self._apply_cpuset(cpu)
        if resources.get("devices") is not None:
            self._apply_devices(resources["devices"])
        if resources.get("memory"):
            self._apply_memory(resources["memory"])
        if cpu:
            self._apply_cpu(cpu)
        pids = resources.get("pids")
        if pids and pids.get("limit") is not None:
            fs.write(self._need("pids", "pids.limit"), "pids.max",
                     convert.pids_limit_text(int(pids["limit"])))
        if resources.get("blockIO"):
            self._apply_blkio(resources["blockIO"])
        if resources.get("hugepageLimits"):
            self._apply_hugetlb(resources["hugepageLimits"])

    def _apply_cpuset(self, cpu: dict) -> None:
        directory = self._need("cpuset", "cpu.cpus/cpu.mems")
        if cpu.get("cpus"):
            fs.write(directory, "cpuset.cpus", cpu["cpus"])
        if cpu.get("mems"):
            fs.write(directory, "cpuset.mems", cpu["mems"])

    def _apply_devices(self, rules: list[dict]) -> None:
        directory = self._need("devices", "linux.resources.devices")
        # as runc: start from deny-all, then the rules in order
        fs.write(directory, "devices.deny", "a")
        for rule in rules:
            converted = convert.device_rule(rule)
            if converted is None:
                continue  # a fifo: not the device cgroup's business
            allow, text = converted
            fs.write(directory, "devices.allow" if allow else "devices.deny", text)

    def _apply_memory(self, memory: dict) -> None:
        directory = self._need("memory", "linux.resources.memory")
        limit = int(memory.get("limit") or 0)
        swap = int(memory.get("swap") or 0)
        if limit == -1 and swap == 0 and fs.exists(directory, "memory.memsw.limit_in_bytes"):
            swap = -1  # "unlimited memory" means unlimited swap too (runc)
        if limit and swap:
            # memsw must stay >= memory at every step: order the two writes (runc)
            current = fs.read_uint(directory, "memory.limit_in_bytes") or 0
            if swap == -1 or current < swap:
                self._write_swap(directory, swap)
                self._write_limit(directory, limit)
            else:
                self._write_limit(directory, limit)
                self._write_swap(directory, swap)
        else:
            if limit:
                self._write_limit(directory, limit)
            if swap:
                self._write_swap(directory, swap)
        if memory.get("reservation"):
            fs.write(directory, "memory.soft_limit_in_bytes", int(memory["reservation"]))
        if memory.get("kernel"):
            fs.write(directory, "memory.kmem.limit_in_bytes", int(memory["kernel"]))
        if memory.get("kernelTCP"):
            fs.write(directory, "memory.kmem.tcp.limit_in_bytes", int(memory["kernelTCP"]))
        swappiness = memory.get("swappiness")
        if swappiness is not None and int(swappiness) != -1:
            if not 0 <= int(swappiness) <= 100:
                raise CgroupError(f"invalid memory.swappiness {swappiness}: must be 0..100")
            fs.write(directory, "memory.swappiness", int(swappiness))
        if memory.get("disableOOMKiller"):
            fs.write(directory, "memory.oom_control", 1)

    @staticmethod
    def _write_limit(directory: str, limit: int) -> None:
        try:
            fs.write(directory, "memory.limit_in_bytes", limit)
        except CgroupError as err:
            if err.errno == _errno.EBUSY:
                usage = fs.read_uint(directory, "memory.usage_in_bytes")
                raise CgroupError(
                    f"cannot set memory limit {limit}: current usage {usage} is above it "
                    f"({err})", err.path, err.errno) from None
            raise

    @staticmethod
    def _write_swap(directory: str, swap: int) -> None:
        fs.write(directory, "memory.memsw.limit_in_bytes", swap)

    def _apply_cpu(self, cpu: dict) -> None:
        fields = ("shares", "quota", "period", "burst", "realtimeRuntime", "realtimePeriod", "idle")
        if not any(cpu.get(name) not in (None, 0) for name in fields) and cpu.get("idle") is None:
            return
        directory = self._need("cpu", "linux.resources.cpu")
        if cpu.get("shares"):
            shares = int(cpu["shares"])
            fs.write(directory, "cpu.shares", shares)
            actual = fs.read_uint(directory, "cpu.shares")
            if actual != shares:
                bound = "maximum" if shares > (actual or 0) else "minimum"
                raise CgroupError(f"the {bound} allowed cpu-shares is {actual}, asked for {shares}",
                                  os.path.join(directory, "cpu.shares"))
        if cpu.get("period"):
            fs.write(directory, "cpu.cfs_period_us", int(cpu["period"]))
        if cpu.get("quota"):
            fs.write(directory, "cpu.cfs_quota_us", int(cpu["quota"]))
        if cpu.get("burst") is not None:
            write_unless_default(directory, "cpu.cfs_burst_us", int(cpu["burst"]))
        # period before runtime, so a larger runtime fits (runc)
        if cpu.get("realtimePeriod"):
            fs.write(directory, "cpu.rt_period_us", int(cpu["realtimePeriod"]))
        if cpu.get("realtimeRuntime"):
            fs.write(directory, "cpu.rt_runtime_us", int(cpu["realtimeRuntime"]))
        if cpu.get("idle") is not None:
            write_unless_default(directory, "cpu.idle", int(cpu["idle"]))

    def _apply_blkio(self, block_io: dict) -> None:
        directory = self._need("blkio", "linux.resources.blockIO")
        # blkio.weight is CFQ's; with BFQ only blkio.bfq.weight exists (runc picks the same)
        weight_file = ("blkio.weight" if fs.exists(directory, "blkio.weight")
                       else "blkio.bfq.weight")
        if block_io.get("weight"):
            fs.write(directory, weight_file, int(block_io["weight"]))
        if block_io.get("leafWeight"):
            fs.write(directory, "blkio.leaf_weight", int(block_io["leafWeight"]))
        for entry in block_io.get("weightDevice") or []:
            device = f"{int(entry['major'])}:{int(entry['minor'])}"
            if entry.get("weight"):
                fs.write(directory, weight_file + "_device", f"{device} {int(entry['weight'])}")
            if entry.get("leafWeight"):
                fs.write(directory, "blkio.leaf_weight_device",
                         f"{device} {int(entry['leafWeight'])}")
        files = {"rbps": "read_bps_device", "wbps": "write_bps_device",
                 "riops": "read_iops_device", "wiops": "write_iops_device"}
        for _field, key, major, minor, rate in convert.throttle_entries(block_io):
            fs.write(directory, f"blkio.throttle.{files[key]}", f"{major}:{minor} {rate}")

    def _apply_hugetlb(self, limits: list[dict]) -> None:
        v1_dir = self.paths.get("hugetlb")
        unified = self.paths.get(UNIFIED)
        if v1_dir is None and unified is None:
            raise CgroupError("cannot set hugepageLimits: no hugetlb controller on this host")
        for entry in limits:
            size = convert.hugepage_size_name(entry["pageSize"])
            limit = int(entry["limit"])
            if v1_dir is not None:
                fs.write(v1_dir, f"hugetlb.{size}.limit_in_bytes", limit)
                if fs.exists(v1_dir, f"hugetlb.{size}.rsvd.limit_in_bytes"):
                    fs.write(v1_dir, f"hugetlb.{size}.rsvd.limit_in_bytes", limit)
            else:
                assert unified is not None
                fs.write(unified, f"hugetlb.{size}.max", limit)
                if fs.exists(unified, f"hugetlb.{size}.rsvd.max"):
                    fs.write(unified, f"hugetlb.{size}.rsvd.max", limit)

    # -- processes, freezer ----------------------------------------------------------
    def _procs_dir(self) -> str:
        for controller in ("pids", "freezer", "memory", "cpu", "devices"):
            if controller in self.paths:
                return self.paths[controller]
        return self.directories()[0]

    def _can_freeze(self) -> bool:
        directory = self.paths.get("freezer")
        return directory is not None and os.path.isdir(directory)

    def freeze(self) -> None:
        directory = self._need("freezer", "freezer.state")
        fs.write(directory, "freezer.state", "FROZEN")
        # FREEZING until every task stopped; re-writing FROZEN nudges stragglers (runc)
        def settled() -> bool:
            state = fs.read(directory, "freezer.state").strip()
            if state == "FREEZING":
                fs.write(directory, "freezer.state", "FROZEN")
            return state == "FROZEN"
        try:
            wait_until(settled, f"{directory} to freeze")
        except CgroupError:
            fs.write(directory, "freezer.state", "THAWED")
            raise

    def thaw(self) -> None:
        directory = self._need("freezer", "freezer.state")
        fs.write(directory, "freezer.state", "THAWED")
        wait_until(lambda: fs.read(directory, "freezer.state").strip() == "THAWED",
                   f"{directory} to thaw")

    def frozen(self) -> bool:
        directory = self.paths.get("freezer")
        if directory is None:
            return False
        state = fs.read_optional(directory, "freezer.state")
        return state is not None and state.strip() == "FROZEN"

    # -- stats -----------------------------------------------------------------------
    def oom_kill_count(self) -> int:
        directory = self._need("memory", "oom_kill count")
        return (fs.read_flat_keyed(directory, "memory.oom_control") or {}).get("oom_kill", 0)

    def stats(self) -> dict:
        data: dict = {}
        if "cpuacct" in self.paths or "cpu" in self.paths:
            data["cpu"] = self._cpu_stats()
        if "memory" in self.paths:
            data["memory"] = self._memory_stats(self.paths["memory"])
        if "pids" in self.paths:
            directory = self.paths["pids"]
            limit = (fs.read_optional(directory, "pids.max") or "max").strip()
            data["pids"] = {"current": fs.read_uint(directory, "pids.current") or 0,
                            "limit": 0 if limit == "max" else int(limit)}
        if "blkio" in self.paths:
            data["blkio"] = _blkio_stats(self.paths["blkio"])
        if "hugetlb" in self.paths:
            data["hugetlb"] = _hugetlb_v1_stats(self.paths["hugetlb"])
        elif UNIFIED in self.paths:
            from .v2 import hugetlb_stats
            hugetlb = hugetlb_stats(self.paths[UNIFIED])
            if hugetlb:
                data["hugetlb"] = hugetlb
        return data

    def _cpu_stats(self) -> dict:
        usage: dict = {}
        acct = self.paths.get("cpuacct")
        if acct is not None:
            usage["total"] = fs.read_uint(acct, "cpuacct.usage") or 0
            percpu = fs.read_optional(acct, "cpuacct.usage_percpu")
            if percpu is not None:
                usage["percpu"] = [int(value) for value in percpu.split()]
            ticks = fs.read_flat_keyed(acct, "cpuacct.stat") or {}
            nanos_per_tick = 1_000_000_000 // _clock_ticks()
            usage["kernel"] = ticks.get("system", 0) * nanos_per_tick
            usage["user"] = ticks.get("user", 0) * nanos_per_tick
        result: dict = {"usage": usage}
        cpu = self.paths.get("cpu")
        if cpu is not None:
            stat = fs.read_flat_keyed(cpu, "cpu.stat") or {}
            result["throttling"] = {
                "periods": stat.get("nr_periods", 0),
                "throttledPeriods": stat.get("nr_throttled", 0),
                "throttledTime": stat.get("throttled_time", 0),
            }
        return result

    @staticmethod
    def _memory_stats(directory: str) -> dict:
        def entry(prefix: str) -> dict | None:
            usage = fs.read_uint(directory, f"{prefix}usage_in_bytes")
            if usage is None:
                return None
            return {
                "limit": fs.read_uint(directory, f"{prefix}limit_in_bytes") or 0,
                "usage": usage,
                "max": fs.read_uint(directory, f"{prefix}max_usage_in_bytes") or 0,
                "failcnt": fs.read_uint(directory, f"{prefix}failcnt") or 0,
            }
        raw = fs.read_flat_keyed(directory, "memory.stat") or {}
        result: dict = {"cache": raw.get("cache", 0)}
        for key, prefix in (("usage", "memory."), ("swap", "memory.memsw."),
                            ("kernel", "memory.kmem."), ("kernelTCP", "memory.kmem.tcp.")):
            value = entry(prefix)
            if value is not None:
                result[key] = value
        result["raw"] = raw
        return result


def write_unless_default(directory: str, name: str, value: int) -> None:
    """A 0 (the kernel default) for a file this kernel lacks is nothing to do; others are written."""
    if value == 0 and not fs.exists(directory, name):
        return
    fs.write(directory, name, value)


def _clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError):
        return _ticks_per_second


def _fill_cpusets(leaf: str) -> None:
    """Every level down to `leaf` needs cpus and mems, including levels made by others."""
    chain = [leaf]
    while fs.exists(os.path.dirname(chain[-1]), "cpuset.cpus"):
        parent = os.path.dirname(chain[-1])
        if parent == chain[-1]:
            break
        chain.append(parent)
    for level in reversed(chain[:-1]):  # the top one is the hierarchy root: always filled
        _inherit_cpuset(level)


def _inherit_cpuset(directory: str) -> None:
    """A new v1 cpuset starts empty and refuses tasks: copy the parent's cpus and mems."""
    parent = os.path.dirname(directory)
    for name in ("cpuset.cpus", "cpuset.mems"):
        if not (fs.read_optional(directory, name) or "").strip():
            value = (fs.read_optional(parent, name) or "").strip()
            if value:
                fs.write(directory, name, value)


def _enable_unified_hugetlb(directory: str) -> None:
    """Hybrid: enable hugetlb down the unified tree so the container's dir gets its files."""
    root = directory
    ancestors = []
    while True:
        parent = os.path.dirname(root)
        if parent == root or not fs.exists(parent, "cgroup.subtree_control"):
            break
        ancestors.append(parent)
        root = parent
    for ancestor in reversed(ancestors):
        available = (fs.read_optional(ancestor, "cgroup.controllers") or "").split()
        enabled = (fs.read_optional(ancestor, "cgroup.subtree_control") or "").split()
        if "hugetlb" in available and "hugetlb" not in enabled:
            try:
                fs.write(ancestor, "cgroup.subtree_control", "+hugetlb")
            except CgroupError:
                # e.g. an ancestor holding processes (v2's no-internal-process rule); the
                # container still joins the dir, and a hugetlb limit asked for later
                # fails naming the missing hugetlb.<size>.max file
                return


def _blkio_stats(directory: str) -> dict:
    """runc's choice: CFQ's recursive stats, else BFQ's, else the throttle layer's."""
    result: dict = {}
    sources = (("blkio.io_service_bytes_recursive", "blkio.io_serviced_recursive"),
               ("blkio.bfq.io_service_bytes_recursive", "blkio.bfq.io_serviced_recursive"),
               ("blkio.throttle.io_service_bytes_recursive",
                "blkio.throttle.io_serviced_recursive"))
    for bytes_file, ios_file in sources:
        service_bytes = _blkio_entries(fs.read_optional(directory, bytes_file))
        serviced = _blkio_entries(fs.read_optional(directory, ios_file))
        if service_bytes or serviced:
            result["ioServiceBytesRecursive"] = service_bytes
            result["ioServicedRecursive"] = serviced
            break
    return result


def _blkio_entries(text: str | None) -> list[dict]:
    entries = []
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) != 3 or ":" not in parts[0]:
            continue  # the "Total N" line
        major, minor = parts[0].split(":")
        entries.append({"major": int(major), "minor": int(minor), "op": parts[1],
                        "value": int(parts[2])})
    return entries


def _hugetlb_v1_stats(directory: str) -> dict:
    result = {}
    for name in sorted(os.listdir(directory)):
        if name.startswith("hugetlb.") and name.endswith(".usage_in_bytes") and ".rsvd." not in name:
            size = name.split(".")[1]
            result[size] = {
                "usage": fs.read_uint(directory, name) or 0,
                "max": fs.read_uint(directory, f"hugetlb.{size}.max_usage_in_bytes") or 0,
                "failcnt": fs.read_uint(directory, f"hugetlb.{size}.failcnt") or 0,
            }
    return result
