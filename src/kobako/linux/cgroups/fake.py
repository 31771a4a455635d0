"""A fake cgroupfs in a temporary directory, for unit tests of the managers.

It describes a v1, hybrid or v2 host (mountinfo + /proc/self/cgroup files),
fills new directories with the control files the kernel would create, records
every write in order, and imitates the few files with behaviour of their own
(cgroup.subtree_control, cgroup.freeze, cgroup.procs, devices.allow/deny,
freezer.state). `install()` swaps it into the fs layer; `uninstall()` undoes it.
"""

from __future__ import annotations

import errno as _errno
import os
import shutil

from . import fs
from .errors import CgroupError

V1_FILES: dict[str, dict[str, str]] = {
    "cpu": {"cpu.shares": "1024", "cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "-1",
            "cpu.cfs_burst_us": "0", "cpu.rt_period_us": "1000000", "cpu.rt_runtime_us": "0",
            "cpu.idle": "0",
            "cpu.stat": "nr_periods 7\nnr_throttled 2\nthrottled_time 5000\n"},
    "cpuacct": {"cpuacct.usage": "3000", "cpuacct.usage_percpu": "1000 2000 \n",
                "cpuacct.stat": "user 3\nsystem 4\n"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "memory": {"memory.limit_in_bytes": "9223372036854771712",
               "memory.soft_limit_in_bytes": "9223372036854771712",
               "memory.memsw.limit_in_bytes": "9223372036854771712",
               "memory.kmem.limit_in_bytes": "9223372036854771712",
               "memory.usage_in_bytes": "4096", "memory.max_usage_in_bytes": "8192",
               "memory.failcnt": "1", "memory.memsw.usage_in_bytes": "4096",
               "memory.memsw.max_usage_in_bytes": "8192", "memory.memsw.failcnt": "0",
               "memory.swappiness": "60",
               "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
               "memory.stat": "cache 100\nrss 200\n"},
    "devices": {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm\n"},
    "freezer": {"freezer.state": "THAWED\n"},
    "blkio": {"blkio.weight": "500", "blkio.weight_device": "",
              "blkio.throttle.read_bps_device": "", "blkio.throttle.write_bps_device": "",
              "blkio.throttle.read_iops_device": "", "blkio.throttle.write_iops_device": "",
              "blkio.throttle.io_service_bytes_recursive":
                  "8:0 Read 10\n8:0 Write 20\nTotal 30\n",
              "blkio.throttle.io_serviced_recursive": "8:0 Read 1\n8:0 Write 2\nTotal 3\n"},
    "pids": {"pids.max": "max", "pids.current": "2"},
    "hugetlb": {"hugetlb.2MB.limit_in_bytes": "9223372036854771712",
                "hugetlb.2MB.usage_in_bytes": "0", "hugetlb.2MB.max_usage_in_bytes": "0",
                "hugetlb.2MB.failcnt": "0"},
    "name=systemd": {},
}

V2_FILES: dict[str, dict[str, str]] = {
    "cpu": {"cpu.weight": "100", "cpu.max": "max 100000", "cpu.max.burst": "0", "cpu.idle": "0",
            "cpu.stat": "usage_usec 5\nuser_usec 3\nsystem_usec 2\nnr_periods 4\n"
                        "nr_throttled 1\nthrottled_usec 7\n"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "memory": {"memory.max": "max", "memory.low": "0", "memory.high": "max",
               "memory.swap.max": "max", "memory.current": "4096", "memory.peak": "8192",
               "memory.swap.current": "0", "memory.oom.group": "0",
               "memory.events": "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n",
               "memory.stat": "anon 100\nfile 200\n"},
    "io": {"io.weight": "default 100", "io.max": "",
           "io.stat": "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n"},
    "pids": {"pids.max": "max", "pids.current": "2"},
    "hugetlb": {"hugetlb.2MB.max": "max", "hugetlb.2MB.current": "0",
                "hugetlb.2MB.events": "max 0\n"},
}

V2_CORE = {"cgroup.procs": "", "cgroup.subtree_control": "", "cgroup.freeze": "0",
           "cgroup.events": "populated 0\nfrozen 0\n", "cgroup.kill": "", "cgroup.type": "domain"}

V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids")


class FakeCgroupfs:
    def __init__(self, root: str, mode: str = "v2", self_cgroup: str = "/",
                 v1_controllers: tuple[str, ...] = V1_CONTROLLERS,
                 v2_controllers: tuple[str, ...] = ("cpuset", "cpu", "io", "memory", "hugetlb",
                                                    "pids")):
        self.root = root
        self.mode = mode
        self.writes: list[tuple[str, str]] = []  # (path, value) in order
        self.refuse: dict[str, int] = {}  # file name -> errno a write of it fails with
        self.mountpoints: dict[str, str] = {}
        self.mountinfo = os.path.join(root, "mountinfo")
        self.proc_cgroup = os.path.join(root, "proc-self-cgroup")
        mounts, cgroup_lines = [], []
        base = os.path.join(root, "sys/fs/cgroup")
        if mode in ("v1", "hybrid"):
            for index, controller in enumerate((*v1_controllers, "name=systemd"), start=1):
                name = controller.removeprefix("name=")
                point = os.path.join(base, "systemd" if controller == "name=systemd" else name)
                self._mkroot(point, {**V1_FILES[controller], "cgroup.procs": ""})
                if controller == "cpuset":
                    self._set(point, "cpuset.cpus", "0-3")
                    self._set(point, "cpuset.mems", "0")
                self.mountpoints[controller] = point
                mounts.append(f"{30 + index} 25 0:{30 + index} / {point} rw - cgroup cgroup "
                              f"rw,{controller}")
                cgroup_lines.append(f"{index}:{controller}:{self_cgroup}")
            if mode == "hybrid":
                point = os.path.join(base, "unified")
                self._mkroot(point, {**V2_CORE, "cgroup.controllers": "hugetlb"})
                self.mountpoints[""] = point
                mounts.append(f"29 25 0:29 / {point} rw - cgroup2 cgroup2 rw")
                cgroup_lines.append(f"0::{self_cgroup}")
        else:
            self._mkroot(base, {**V2_CORE, "cgroup.controllers": " ".join(v2_controllers)})
            self.mountpoints[""] = base
            mounts.append(f"29 25 0:29 / {base} rw - cgroup2 cgroup2 rw")
            cgroup_lines.append(f"0::{self_cgroup}")
        with open(self.mountinfo, "w") as handle:
            handle.write("25 1 0:1 / / rw - ext4 /dev/vda rw\n" + "\n".join(mounts) + "\n")
        with open(self.proc_cgroup, "w") as handle:
            handle.write("\n".join(cgroup_lines) + "\n")
        self._saved: tuple | None = None

    # -- the tree --------------------------------------------------------------------
    def _mkroot(self, point: str, files: dict[str, str]) -> None:
        os.makedirs(point, exist_ok=True)
        for name, value in files.items():
            self._set(point, name, value)

    @staticmethod
    def _set(directory: str, name: str, value: str) -> None:
        with open(os.path.join(directory, name), "w") as handle:
            handle.write(value)

    def read(self, path: str) -> str:
        with open(path) as handle:
            return handle.read()

    def _hierarchy_of(self, path: str) -> str:
        for controller, point in self.mountpoints.items():
            if path == point or path.startswith(point + "/"):
                return controller
        raise AssertionError(f"{path} is outside the fake cgroupfs")

    def mkdir(self, path: str) -> None:
        os.mkdir(path)
        controller = self._hierarchy_of(path)
        if controller == "":
            parent = os.path.dirname(path)
            enabled = self.read(os.path.join(parent, "cgroup.subtree_control")).split()
            files = {**V2_CORE, "cgroup.controllers": " ".join(enabled)}
            for name in enabled:
                files.update(V2_FILES[name])
        else:
            files = {**V1_FILES[controller], "cgroup.procs": ""}
        for name, value in files.items():
            self._set(path, name, value)

    def rmdir(self, path: str) -> None:
        if not os.path.isdir(path):
            raise FileNotFoundError(_errno.ENOENT, "No such file or directory", path)
        if os.path.isfile(os.path.join(path, "cgroup.procs")) and self.read(
                os.path.join(path, "cgroup.procs")).split():
            raise OSError(_errno.EBUSY, "Device or resource busy", path)
        if any(entry.is_dir() for entry in os.scandir(path)):
            raise OSError(_errno.ENOTEMPTY, "Directory not empty", path)
        shutil.rmtree(path)

    def write(self, directory: str, name: str, value: str | int) -> None:
        path = os.path.join(directory, name)
        text = str(value)
        if not os.path.exists(path):
            self._original_write(directory, name, value)  # raises the real missing-file error
        if name in self.refuse:
            raise CgroupError(f"write {text!r} to {path}: {os.strerror(self.refuse[name])}",
                              path, self.refuse[name])
        self.writes.append((path, text))
        if name == "cgroup.subtree_control":
            available = self.read(os.path.join(directory, "cgroup.controllers")).split()
            enabled = self.read(path).split()
            for token in text.split():
                if token[1:] not in available:
                    raise CgroupError(f"write {text!r} to {path}: Invalid argument", path,
                                      _errno.EINVAL)
                if token[0] == "+" and token[1:] not in enabled:
                    enabled.append(token[1:])
                elif token[0] == "-" and token[1:] in enabled:
                    enabled.remove(token[1:])
            self._set(directory, name, " ".join(enabled))
            # as the kernel does: existing children gain (or lose) the controllers' files
            for child in os.scandir(directory):
                if child.is_dir():
                    self._set(child.path, "cgroup.controllers", " ".join(enabled))
                    for controller in enabled:
                        for file_name, default in V2_FILES[controller].items():
                            if not os.path.exists(os.path.join(child.path, file_name)):
                                self._set(child.path, file_name, default)
        elif name == "cgroup.freeze":
            self._set(directory, "cgroup.events", f"populated 0\nfrozen {text.strip()}\n")
            self._set(directory, name, text)
        elif name in ("cgroup.procs", "devices.allow", "devices.deny"):
            self._set(directory, name, self.read(path) + text + "\n")
        else:
            self._set(directory, name, text)

    def writes_under(self, directory: str) -> list[tuple[str, str]]:
        return [(os.path.relpath(path, directory), value) for path, value in self.writes
                if path.startswith(directory + "/")]

    # -- swapping into the fs layer ----------------------------------------------------
    def install(self) -> FakeCgroupfs:
        self._saved = (fs.write, fs.mkdir, fs.rmdir)
        self._original_write = fs.write
        fs.write, fs.mkdir, fs.rmdir = self.write, self.mkdir, self.rmdir
        return self

    def uninstall(self) -> None:
        if self._saved is not None:
            fs.write, fs.mkdir, fs.rmdir = self._saved
            self._saved = None
