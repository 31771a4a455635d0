"""Helpers for kobako-runtime's integration tests: a busybox rootfs, bundles, the CLI.

The rootfs is built once from Debian's busybox-static (/bin/busybox plus one symlink per
applet, /etc/passwd and /etc/group) and shared by every bundle: the default config has a
read-only root, so a test that needs to write gets a tmpfs or a bind mount of its own.
"""

from __future__ import annotations

import copy
import glob
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterable
from typing import Any

from kobako.runtime.spec import default_spec

RUNTIME = "/opt/kobako/bin/kobako-runtime"
BUSYBOX = "/bin/busybox"
ID_PREFIX = "kbt-"

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    "kbtuser:x:1000:1000:test user:/home/kbtuser:/bin/sh\n"
)
GROUP = "root:x:0:\ndaemon:x:1:\nkbtgroup:x:1000:\nnogroup:x:65534:\n"


def build_rootfs(path: str) -> str:
    """A busybox root filesystem at path (created); returns path."""
    for directory in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "home/kbtuser",
                      "usr/bin", "usr/sbin", "var", "run", "mnt"):
        os.makedirs(os.path.join(path, directory), exist_ok=True)
    os.chmod(os.path.join(path, "tmp"), 0o1777)
    target = os.path.join(path, "bin", "busybox")
    shutil.copy2(BUSYBOX, target)
    applets = subprocess.run([target, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        link = os.path.join(path, "bin", applet)
        if applet != "busybox" and not os.path.lexists(link):
            os.symlink("busybox", link)
    for name, content in (("passwd", PASSWD), ("group", GROUP), ("hostname", "kbt\n")):
        with open(os.path.join(path, "etc", name), "w") as f:
            f.write(content)
    return path


def new_prefix() -> str:
    """A unique prefix for one test's container ids (and so its cgroups)."""
    return f"{ID_PREFIX}{uuid.uuid4().hex[:8]}"


def base_config(rootfs: str, args: list[str]) -> dict[str, Any]:
    """runc's default config (kobako.runtime.spec.default_spec) run without a terminal."""
    config = default_spec()
    config["root"]["path"] = rootfs
    config["process"]["terminal"] = False
    config["process"]["args"] = list(args)
    return config


class Bundle:
    """A bundle directory whose config.json points at a (shared) rootfs."""

    def __init__(self, path: str, rootfs: str, args: Iterable[str] = ("true",)):
        self.path = path
        self.rootfs = rootfs
        os.makedirs(path, exist_ok=True)
        self.config = base_config(rootfs, list(args))

    @property
    def process(self) -> dict[str, Any]:
        return self.config["process"]

    @property
    def linux(self) -> dict[str, Any]:
        return self.config["linux"]

    def args(self, *args: str) -> Bundle:
        self.config["process"]["args"] = list(args)
        return self

    def sh(self, script: str) -> Bundle:
        return self.args("sh", "-c", script)

    def add_mount(self, destination: str, mtype: str, source: str,
                  options: list[str] | None = None) -> Bundle:
        self.config["mounts"].append({"destination": destination, "type": mtype,
                                      "source": source, "options": options or []})
        return self

    def tmpfs(self, destination: str) -> Bundle:
        return self.add_mount(destination, "tmpfs", "tmpfs", ["nosuid", "nodev", "mode=1777"])

    def namespace(self, kind: str, path: str | None = None) -> Bundle:
        spaces = [ns for ns in self.linux["namespaces"] if ns["type"] != kind]
        spaces.append({"type": kind, **({"path": path} if path else {})})
        self.linux["namespaces"] = spaces
        return self

    def drop_namespace(self, kind: str) -> Bundle:
        self.linux["namespaces"] = [ns for ns in self.linux["namespaces"]
                                    if ns["type"] != kind]
        return self

    def write(self, config: Any = None) -> str:
        """Write config.json (self.config, or the given document/raw text)."""
        doc = self.config if config is None else config
        with open(os.path.join(self.path, "config.json"), "w") as f:
            if isinstance(doc, str):
                f.write(doc)
            else:
                json.dump(doc, f, indent=1)
        return self.path

    @property
    def out(self) -> str:
        return os.path.join(self.path, "stdout")

    @property
    def err(self) -> str:
        return os.path.join(self.path, "stderr")

    def copy_config(self) -> dict[str, Any]:
        return copy.deepcopy(self.config)


class Runtime:
    """kobako-runtime with its own --root (and --log in JSON) for one test."""

    def __init__(self, root: str, log: str, prefix: str):
        self.root = root
        self.log = log
        self.prefix = prefix
        self.ids: list[str] = []

    def new_id(self, tag: str = "c") -> str:
        container_id = f"{self.prefix}-{tag}{len(self.ids)}"
        self.ids.append(container_id)
        return container_id

    def argv(self, *args: str) -> list[str]:
        return [RUNTIME, "--root", self.root, "--log", self.log, "--log-format", "json", *args]

    def __call__(self, *args: str, check: bool = True, timeout: float = 60,
                 input: str | bytes | None = None, **kwargs) -> subprocess.CompletedProcess:
        """Run the CLI; stdout/stderr captured as text unless the caller passes stdout=..."""
        kwargs.setdefault("capture_output", "stdout" not in kwargs and "stderr" not in kwargs)
        kwargs.setdefault("text", not isinstance(input, bytes))
        proc = subprocess.run(self.argv(*args), timeout=timeout, input=input, check=False,
                              **kwargs)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kobako-runtime {' '.join(args)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc

    def run(self, bundle: Bundle, tag: str = "c", check: bool = True, timeout: float = 60,
            **kwargs) -> subprocess.CompletedProcess:
        """`run` in the foreground (the container is deleted when it exits)."""
        bundle.write()
        return self("run", "--bundle", bundle.path, self.new_id(tag), check=check,
                    timeout=timeout, **kwargs)

    def start_detached(self, bundle: Bundle, tag: str = "c") -> tuple[str, int]:
        """create + start; the container's stdout/stderr go to files in the bundle (pipes
        would keep `create` waiting for EOF). Returns (id, init pid)."""
        bundle.write()
        container_id = self.new_id(tag)
        with open(bundle.out, "wb") as out, open(bundle.err, "wb") as err:
            proc = self("create", "--bundle", bundle.path, container_id, check=False,
                        stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        if proc.returncode != 0:
            raise AssertionError(f"create failed ({proc.returncode}): {read(bundle.err)}")
        self("start", container_id)
        return container_id, self.state(container_id)["pid"]

    def state(self, container_id: str) -> dict[str, Any]:
        return json.loads(self("state", container_id).stdout)

    def delete(self, container_id: str) -> None:
        self("delete", "--force", container_id)

    def log_records(self) -> list[dict[str, Any]]:
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            return [json.loads(line) for line in f if line.strip()]

    def state_dirs(self) -> list[str]:
        """Containers' state directories (not the runtime's cache of compiled filters)."""
        if not os.path.isdir(self.root):
            return []
        return sorted(n for n in os.listdir(self.root) if not n.startswith("."))


# a unified (v2) host; a v1 or hybrid one (as here) keeps controllers in their own hierarchies
CGROUP_V2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")


def cgroup_file(pid: int, v1: str, v2: str) -> str:
    """The host path of one of a process's cgroup files: v1 as "controller/file", v2 as
    "file" in the unified hierarchy."""
    if CGROUP_V2:
        return os.path.join(container_cgroup(pid, ""), v2)
    controller, name = v1.split("/")
    return os.path.join(container_cgroup(pid, controller), name)


def container_cgroup(pid: int, controller: str) -> str:
    """The host path of a process's cgroup in a v1 controller's hierarchy ("" for v2)."""
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller == "" and controllers == "" and CGROUP_V2:
                return "/sys/fs/cgroup" + path
            if controller and controller in controllers.split(","):
                for mount in glob.glob(f"/sys/fs/cgroup/{controller}*"):
                    names = os.path.basename(mount).split(",")
                    if controller in names:
                        return mount + path
    raise AssertionError(f"pid {pid} has no {controller} cgroup")


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def status_field(pid: int, field: str) -> str:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == field:
                return value.strip()
    raise AssertionError(f"/proc/{pid}/status has no {field}")


def wait_for(predicate, timeout: float = 10, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def leaked_cgroups(prefix: str) -> list[str]:
    return sorted(set(glob.glob(f"/sys/fs/cgroup/*/kobako/{prefix}*")
                      + glob.glob(f"/sys/fs/cgroup/*/{prefix}*")
                      + glob.glob(f"/sys/fs/cgroup/*/*/{prefix}*")))


def mounts_mentioning(*paths: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.strip() for line in f if any(p in line for p in paths)]


def processes_in_cgroups(prefix: str) -> list[int]:
    """Processes whose cgroup path mentions prefix (a container left running)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cgroup") as f:
                if f"/{prefix}" in f.read():
                    found.append(int(entry))
        except OSError:
            continue  # exited while we looked
    return found
