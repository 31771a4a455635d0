#!/opt/kobako/bin/python
"""Benchmark: the docker CLI against kobakod and, in the same run, against a real dockerd.

Each engine gets its own socket, data root, exec root and pidfile under a fresh
directory in /tmp, the same busybox image (kobako's busybox bootstrap tar through
`docker import`), and the same measurements, one engine after the other:

  run      `docker run --rm --network none busybox true` latency (median of N)
  exec     `docker exec <running container> true` latency (median of N)
  start    50 `docker run -d --network none busybox sleep 1000`, 8 at a time:
           total time and containers per second
  memory   PSS (/proc/<pid>/smaps_rollup) of everything the engine adds, with 20 idle
           containers, divided by 20; and the increment per container (PSS at 20
           minus PSS at 0, divided by 20). kobako: kobakod, its reaper, the monitor.
           dockerd: dockerd, its containerd, every containerd-shim.
  stats    `docker stats --no-stream` latency with those 20 containers (median)
  restart  SIGKILL of the daemon, start again, until `docker ps` shows all 20
           running. dockerd runs with "live-restore": true so its containers survive too.

dockerd runs with --bridge=none --iptables=false --ip-forward=false --ip-masq=false
and its own cgroup parent, so it changes nothing on the host. Everything started
here is removed at the end (containers, daemons, shims, mounts, cgroups, dirs), also
on Ctrl-C. Not a test: nothing here asserts a time; targets are printed for reading.

    bench/bench_engine.py [-n 20] [--containers 50] [--parallel 8] [--idle 20]
                          [--no-dockerd]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

DOCKER = shutil.which("docker", path="/usr/local/bin") or shutil.which("docker") or "docker"
KOBAKOD = str(Path(sys.executable).parent / "kobakod")
DOCKERD = shutil.which("dockerd", path="/usr/sbin:/usr/bin:/sbin:/bin") or "/usr/sbin/dockerd"
PREFIX = "kbkb-"
IMAGE = "busybox:latest"
T = TypeVar("T")


class BenchError(Exception):
    """An engine misbehaved: what was run and what it said."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- processes ----------------------------------------------------------------------------

def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0  # exited meanwhile
    return 0


def uss_kib(pid: int) -> int:
    """Pages only this process maps (Private_Clean + Private_Dirty)."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return total


def ppid_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return 0


def children_of(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else []:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(x) for x in f.read().split()]
        except FileNotFoundError:
            continue
    return found


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except FileNotFoundError:
        return "?"


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [x.decode(errors="replace") for x in f.read().split(b"\0") if x]
    except FileNotFoundError:
        return []


def alive(pid: int) -> bool:
    """Running: neither gone nor a zombie (an orphan's zombie stays under a PID 1 that
    does not reap, as on some CI machines)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid) or comm(pid) == "?":
            return True
        time.sleep(0.05)
    return False


def unmount_under(root: str) -> None:
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    prefix = root.rstrip("/") + "/"
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


# -- engines ------------------------------------------------------------------------------

class Engine:
    """One daemon under its own directory, driven by the docker CLI."""

    name = ""

    def __init__(self) -> None:
        self.base = tempfile.mkdtemp(prefix=PREFIX, dir="/tmp")
        self.sock = os.path.join(self.base, "d.sock")
        self.data_root = os.path.join(self.base, "data")
        self.exec_root = os.path.join(self.base, "exec")
        self.pidfile = os.path.join(self.base, "d.pid")
        self.log_path = os.path.join(self.base, "daemon.log")
        self.config_dir = os.path.join(self.base, "cli")
        os.makedirs(self.config_dir)
        self.proc: subprocess.Popen | None = None
        self.problems: list[str] = []  # what went wrong on this engine's side
        self.container_pids: dict[str, int] = {}
        self.monitors: set[int] = set()  # kobako's monitor processes seen
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{self.sock}",
                        DOCKER_CONFIG=self.config_dir)
        self.env.pop("DOCKER_API_VERSION", None)
        self.env.pop("DOCKER_CONTEXT", None)

    # -- the daemon --
    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 60.0) -> float:
        """Start the daemon; seconds until `docker version` answers."""
        out = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the daemon
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=out,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode}:\n"
                                 f"{self.log_tail()}")
            if os.path.exists(self.sock) and self.docker(
                    "version", "--format", "{{.Server.Version}}", check=False).returncode == 0:
                return time.perf_counter() - t0
            time.sleep(0.02)
        raise BenchError(f"{self.name} did not answer within {timeout}s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, n: int = 3000) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def sigkill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop_daemon(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.problems.append(f"{self.name} ignored SIGTERM for 30 s; killed")
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    # -- the CLI --
    def docker(self, *args: str, check: bool = True,
               timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run([DOCKER, *args], capture_output=True, text=True,
                                env=self.env, timeout=timeout)
        if check and result.returncode != 0:
            raise BenchError(f"{self.name}: docker {' '.join(args)} failed "
                             f"({result.returncode}): {result.stderr.strip()}")
        return result

    def timed(self, *args: str) -> float:
        t0 = time.perf_counter()
        self.docker(*args)
        return time.perf_counter() - t0

    def running_ids(self) -> list[str]:
        return self.docker("ps", "-q", "--no-trunc", "--filter", "status=running").stdout.split()

    def remove_all(self) -> None:
        ids = self.docker("ps", "-aq", check=False).stdout.split()
        chunks = [ids[i:i + 10] for i in range(0, len(ids), 10)]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for result in pool.map(lambda c: self.docker("rm", "-f", *c, check=False,
                                                         timeout=300), chunks):
                if result.returncode != 0:
                    self.problems.append(f"docker rm -f failed: {result.stderr.strip()}")
        left = self.docker("ps", "-aq", check=False).stdout.split()
        if left:
            self.problems.append(f"{len(left)} containers left after rm -f: {left}")

    def load_image(self, tar: str) -> None:
        self.docker("import", "--change", 'CMD ["sh"]', tar, IMAGE)

    # -- what the engine adds --
    def init_pids(self) -> list[int]:
        ids = self.running_ids()
        if not ids:
            return []
        out = self.docker("inspect", "--format", "{{.State.Pid}}", *ids).stdout.split()
        return [int(x) for x in out if int(x) > 0]

    def engine_pids(self) -> dict[str, list[int]]:
        raise NotImplementedError

    def cleanup(self) -> None:
        """Containers, daemon, leftover processes, mounts, cgroups, the directory."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.remove_all()
        except Exception as err:  # noqa: BLE001 - cleanup goes on whatever failed
            self.problems.append(f"removing containers: {err}")
        self.stop_daemon()
        self.extra_cleanup()
        unmount_under(self.base)
        shutil.rmtree(self.base, ignore_errors=True)
        if os.path.exists(self.base):
            self.problems.append(f"{self.base} could not be removed")

    def extra_cleanup(self) -> None:
        pass


class Kobako(Engine):
    name = "kobakod"

    def command(self) -> list[str]:
        config = os.path.join(self.base, "daemon.json")
        if not os.path.exists(config):
            with open(config, "w") as f:
                f.write("{}")
        return [KOBAKOD, "-H", f"unix://{self.sock}", "--data-root", self.data_root,
                "--exec-root", self.exec_root, "--pidfile", self.pidfile,
                "--config-file", config, "--log-level", "warn"]

    def engine_pids(self) -> dict[str, list[int]]:
        reapers = [p for p in children_of(self.pid) if comm(p) == "kobako-reaper"]
        monitors = {p for r in reapers for p in children_of(r) if comm(p) == "kobako-monitor"}
        parents = {ppid_of(pid) for pid in self.init_pids()}
        bad = [p for p in parents if comm(p) != "kobako-monitor"]
        if bad:
            self.problems.append(f"container inits whose parent is not a monitor: "
                                 f"{[(p, comm(p)) for p in bad]}")
        monitors |= parents
        self.monitors |= monitors
        others = [p for p in children_of(self.pid) if p not in reapers]
        return {"kobakod": [self.pid], "reaper": reapers, "other children": others,
                "monitor": sorted(monitors)}

    def extra_cleanup(self) -> None:
        # a monitor ends once its daemon is gone and its last container has ended; any
        # left would be ours to report and end
        for pid in self.container_pids.values():
            if alive(pid):
                self.problems.append(f"container init {pid} outlived its removal")
        for mon in self.monitors:
            if comm(mon) == "kobako-monitor" and not wait_gone(mon, 5):
                self.problems.append(f"monitor {mon} outlived its daemon and containers")
                os.kill(mon, signal.SIGKILL)


class Dockerd(Engine):
    """dockerd with a containerd of its own started beside it, as Debian's units run them
    (a dockerd-managed containerd does not survive a SIGKILLed dockerd usably: the next
    dockerd times out connecting to it)."""

    name = "dockerd"

    def __init__(self) -> None:
        super().__init__()
        self.cgroup_parent = f"/{PREFIX}docker-{secrets.token_hex(3)}"
        self.shims: set[int] = set()
        self.containerd_sock = os.path.join(self.base, "c.sock")
        self.containerd: subprocess.Popen | None = None

    def start_containerd(self) -> None:
        config = os.path.join(self.base, "containerd.toml")
        with open(config, "w") as f:
            f.write(f'version = 2\nroot = "{self.base}/containerd-root"\n'
                    f'state = "{self.base}/containerd-state"\n'
                    'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                    f'[grpc]\n  address = "{self.containerd_sock}"\n'
                    f'[ttrpc]\n  address = "{self.containerd_sock}.ttrpc"\n'
                    '[debug]\n  address = ""\n[metrics]\n  address = ""\n')
        out = open(os.path.join(self.base, "containerd.log"), "ab")  # noqa: SIM115
        self.containerd = subprocess.Popen(["containerd", "--config", config], stdout=out,
                                           stderr=out, stdin=subprocess.DEVNULL,
                                           start_new_session=True)
        out.close()
        deadline = time.monotonic() + 30
        while not os.path.exists(self.containerd_sock):
            if self.containerd.poll() is not None or time.monotonic() > deadline:
                raise BenchError("containerd did not start")
            time.sleep(0.02)

    def start(self, timeout: float = 60.0) -> float:
        if self.containerd is None:
            self.start_containerd()
        return super().start(timeout)

    def command(self) -> list[str]:
        config = os.path.join(self.base, "daemon.json")
        with open(config, "w") as f:
            json.dump({"live-restore": True}, f)
        return [DOCKERD, "-H", f"unix://{self.sock}", "--data-root", self.data_root,
                "--exec-root", self.exec_root, "--pidfile", self.pidfile,
                "--config-file", config, "--containerd", self.containerd_sock,
                "--bridge=none", "--iptables=false", "--ip-forward=false", "--ip-masq=false",
                "--userland-proxy=false", "--cgroup-parent", self.cgroup_parent,
                "--log-level", "warn"]

    def engine_pids(self) -> dict[str, list[int]]:
        shims = sorted({ppid_of(pid) for pid in self.init_pids()})
        self.shims.update(shims)
        bad = [p for p in shims if not comm(p).startswith("containerd-shim")]
        if bad:
            self.problems.append(f"inits whose parent is not a shim: {bad}")
        assert self.containerd is not None
        return {"dockerd": [self.pid], "containerd": [self.containerd.pid],
                "other children": children_of(self.pid), "shims": shims}

    def extra_cleanup(self) -> None:
        for shim in sorted(self.shims):
            if comm(shim).startswith("containerd-shim") and not wait_gone(shim, 5):
                self.problems.append(f"containerd-shim {shim} outlived its container; killed")
                os.kill(shim, signal.SIGKILL)
        if self.containerd is not None and self.containerd.poll() is None:
            os.kill(self.containerd.pid, signal.SIGTERM)
            try:
                self.containerd.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.containerd.pid, signal.SIGKILL)
                self.containerd.wait(10)
        sweep_cgroups(self.cgroup_parent, self.problems)


def sweep_cgroups(parent: str, problems: list[str]) -> None:
    """Kill whatever still lives under our cgroup parent (containers of a daemon that
    died), then remove its directories bottom-up in every hierarchy."""
    dirs = [f"/sys/fs/cgroup/{h}{parent}" for h in os.listdir("/sys/fs/cgroup")]
    dirs = [d for d in dirs if os.path.isdir(d)]
    leftovers: set[int] = set()
    for top in dirs:
        for root, _, files in os.walk(top):
            if "cgroup.procs" in files:
                with open(os.path.join(root, "cgroup.procs")) as f:
                    leftovers.update(int(x) for x in f.read().split())
    if leftovers:
        problems.append(f"processes left in {parent}: {sorted(leftovers)}; killed")
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        time.sleep(0.5)
    for top in dirs:
        for root, _, _ in sorted(os.walk(top), key=lambda w: len(w[0]), reverse=True):
            try:
                os.rmdir(root)
            except OSError as err:
                problems.append(f"cgroup {root} not removed: {err.strerror}")


# -- measurements -------------------------------------------------------------------------

def median_of(runs: int, measure: Callable[[], float], warmup: int = 2) -> float:
    for _ in range(warmup):
        measure()
    return statistics.median(measure() for _ in range(runs))


def bench_engine(engine: Engine, tar: str, args: argparse.Namespace) -> dict[str, float]:
    r: dict[str, float] = {}
    log(f"{engine.name}: starting ({engine.base})")
    r["daemon start (s)"] = engine.start()
    engine.load_image(tar)

    log(f"{engine.name}: run latency x{args.runs}")
    r["run --rm true (s)"] = median_of(args.runs, lambda: engine.timed(
        "run", "--rm", "--network", "none", IMAGE, "true"))

    log(f"{engine.name}: exec latency x{args.runs}")
    engine.docker("run", "-d", "--name", "bench-exec", "--network", "none", IMAGE,
                  "sleep", "100000")
    r["exec true (s)"] = median_of(args.runs, lambda: engine.timed("exec", "bench-exec", "true"))
    engine.docker("rm", "-f", "bench-exec")

    log(f"{engine.name}: {args.containers} containers, {args.parallel} at a time")
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
        results = list(pool.map(lambda _: engine.docker(
            "run", "-d", "--network", "none", IMAGE, "sleep", "1000", check=False),
            range(args.containers)))
    elapsed = time.perf_counter() - t0
    failed = [x.stderr.strip() for x in results if x.returncode != 0]
    if failed:
        engine.problems.append(f"{len(failed)} of {args.containers} parallel starts failed: "
                               f"{failed[0]}")
    running = len(engine.running_ids())
    if running != args.containers - len(failed):
        engine.problems.append(f"after the parallel starts {running} run, expected "
                               f"{args.containers - len(failed)}")
    r[f"start {args.containers} total (s)"] = elapsed
    r["start throughput (/s)"] = (args.containers - len(failed)) / elapsed
    engine.remove_all()

    log(f"{engine.name}: memory at 0 and {args.idle} idle containers")
    time.sleep(1.0)
    at_zero = {k: sum(pss_kib(p) for p in v) for k, v in engine.engine_pids().items()}
    for _ in range(args.idle):
        cid = engine.docker("run", "-d", "--network", "none", IMAGE, "sleep", "100000"
                            ).stdout.strip()
        engine.container_pids[cid] = 0
    for line in engine.docker("inspect", "--format", "{{.Id}} {{.State.Pid}}",
                              *engine.container_pids).stdout.splitlines():
        cid, pid = line.split()
        engine.container_pids[cid] = int(pid)
    time.sleep(2.0)
    groups = engine.engine_pids()
    at_idle = {k: sum(pss_kib(p) for p in v) for k, v in groups.items()}
    total_zero, total_idle = sum(at_zero.values()), sum(at_idle.values())
    r[f"PSS total at {args.idle} (MiB)"] = total_idle / 1024
    r["PSS per container (MiB)"] = total_idle / 1024 / args.idle
    r["PSS increment per container (MiB)"] = (total_idle - total_zero) / 1024 / args.idle
    detail = ", ".join(
        f"{k} x{len(groups[k])} PSS {at_idle[k] / 1024:.1f} MiB "
        f"(USS {sum(uss_kib(p) for p in groups[k]) / 1024:.1f})" for k in groups if groups[k])
    log(f"{engine.name}: PSS at 0: {total_zero / 1024:.1f} MiB; at {args.idle}: {detail}")
    engine.detail = detail  # type: ignore[attr-defined]

    log(f"{engine.name}: docker stats --no-stream with {args.idle} containers")
    r[f"stats --no-stream, {args.idle} ctrs (s)"] = median_of(
        max(3, args.runs // 4), lambda: engine.timed("stats", "--no-stream"), warmup=1)

    log(f"{engine.name}: SIGKILL and restart with {args.idle} running")
    before = set(engine.running_ids())
    engine.sigkill()
    t0 = time.perf_counter()
    engine.start()
    while True:
        ids = set(engine.running_ids())
        if ids >= before:
            break
        if time.perf_counter() - t0 > 120:
            engine.problems.append(f"after restart only {len(ids & before)} of {len(before)} "
                                   "containers run again (gave up after 120 s)")
            break
        time.sleep(0.02)
    r[f"restart, {args.idle} running (s)"] = time.perf_counter() - t0
    still = {cid: pid for cid, pid in engine.container_pids.items() if pid}
    moved = [cid[:12] for cid, pid in still.items() if not alive(pid)]
    if moved:
        engine.problems.append(f"containers whose init died across the restart: {moved}")
    log(f"{engine.name}: done; cleaning up")
    return r


# -- main ---------------------------------------------------------------------------------

TARGETS = {  # kobako / dockerd must be at most (or, for throughput, at least) this
    "run --rm true (s)": ("<=", 0.5), "exec true (s)": ("<=", 0.5),
    "start throughput (/s)": (">=", 2.0), "PSS per container (MiB)": ("<=", 0.5),
    "PSS increment per container (MiB)": ("<=", 0.5),
}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:10.3f}"


def print_table(results: dict[str, dict[str, float]], idle: int) -> None:
    keys = list(next(iter(results.values())))
    TARGETS[f"stats --no-stream, {idle} ctrs (s)"] = ("<=", 0.5)
    TARGETS[f"restart, {idle} running (s)"] = ("<=", 0.5)
    kob, dock = results.get("kobakod"), results.get("dockerd")
    print()
    print(f"{'measure':<38} {'kobakod':>10} {'dockerd':>10} {'ratio':>7}  target")
    print("-" * 80)
    for key in keys:
        k = kob.get(key) if kob else None
        d = dock.get(key) if dock else None
        ratio = f"{k / d:7.2f}" if k is not None and d else "      -"
        target = ""
        if key in TARGETS and k is not None and d:
            op, bound = TARGETS[key]
            met = k / d <= bound if op == "<=" else k / d >= bound
            target = f"{op} {bound:g}  {'met' if met else 'MISSED'}"
        print(f"{key:<38} {_fmt(k):>10} {_fmt(d):>10} {ratio}  {target}")
    print()


def engine_classes(no_dockerd: bool, dockerd: type[Engine]) -> list[type[Engine]]:
    """kobakod, then `dockerd` (a Dockerd class) unless told not to or not installed."""
    engines: list[type[Engine]] = [Kobako]
    if not no_dockerd:
        if os.path.exists(DOCKERD):
            engines.append(dockerd)
        else:
            log(f"{DOCKERD} is not installed: kobakod only")
    return engines


def measure_engines(engines: list[type[Engine]], measure: Callable[[Engine, str], T],
                    after: Callable[[Engine], None] = lambda engine: None,
                    ) -> tuple[dict[str, T], dict[str, list[str]]]:
    """`measure(engine, busybox_tar)` on each engine in turn, each cleaned up (and then
    checked by `after`) whatever happened; the results and each engine's problems."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    from kobako.image.bootstrap import bootstrap_busybox

    # Ctrl-C and SIGTERM unwind through the finally blocks below
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    results: dict[str, T] = {}
    problems: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix=PREFIX) as scratch:
        tar = os.path.join(scratch, "busybox.tar")
        with open(tar, "wb") as f:
            f.write(bootstrap_busybox())
        for cls in engines:
            engine = cls()
            try:
                results[engine.name] = measure(engine, tar)
            except BenchError as err:
                engine.problems.append(str(err))
            except KeyboardInterrupt:
                log("interrupted: cleaning up")
                raise
            finally:
                engine.cleanup()
                after(engine)
                problems[engine.name] = engine.problems
    return results, problems


def print_problems(problems: dict[str, list[str]]) -> int:
    """Print every engine's problems; the exit status (1 if there was any)."""
    for name, found in problems.items():
        for problem in found:
            print(f"PROBLEM ({name}): {problem}")
    return 1 if any(problems.values()) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=20)
    parser.add_argument("--containers", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--idle", type=int, default=20)
    parser.add_argument("--no-dockerd", action="store_true", help="measure kobakod only")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_engine: needs root", file=sys.stderr)
        return 2
    details: dict[str, str] = {}

    def measure(engine: Engine, tar: str) -> dict[str, float]:
        result = bench_engine(engine, tar, args)
        details[engine.name] = getattr(engine, "detail", "")
        return result

    results, problems = measure_engines(engine_classes(args.no_dockerd, Dockerd), measure)
    if results:
        print_table(results, args.idle)
        for name, detail in details.items():
            print(f"{name} PSS at {args.idle} idle containers: {detail}")
        if "dockerd" in results:
            print("dockerd ran with live-restore (its containers survive the SIGKILL too), "
                  "--bridge=none --iptables=false; both engines used --network none.")
    return print_problems(problems)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
