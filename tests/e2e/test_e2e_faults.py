"""Faults: kobakod SIGKILLed in the middle of operations, full disks, followers of exits.

Each crash test starts operations with the docker CLI in the background, kills the
daemon by pid after a short random delay, starts it again and checks that what the
daemon reports agrees with what exists: container records against their directories
and rootfs, running containers against their processes, and nothing left behind for
containers that do not run (mounts under the daemon's dirs, cgroups, runtime state,
monitor processes).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest
from daemon_fixture import DOCKER, Daemon, busybox_daemon
from daemon_fixture import Engine as BaseEngine

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

RUN = ("--pull", "never", "--network", "none")
CGROUP_ROOT = Path("/sys/fs/cgroup")


class Engine(BaseEngine):
    def __init__(self, daemon: Daemon):
        super().__init__(daemon)
        self.seen: set[str] = set()  # every container id this module's daemon ever had

    def background(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([DOCKER, *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=self.daemon.env())

    def inspect_all(self) -> dict[str, dict]:
        ids = self.docker("ps", "-aq", "--no-trunc").stdout.split()
        if not ids:
            return {}
        docs = json.loads(self.docker("inspect", *ids).stdout)
        self.seen.update(ids)
        return {d["Id"]: d for d in docs}

    def crash(self, delay: float, *commands: tuple[str, ...]) -> None:
        """Start the docker `commands` in the background, SIGKILL the daemon `delay`
        seconds later, check its reaper went too, restart it."""
        assert self.daemon.proc is not None
        pid = self.daemon.proc.pid
        reapers = [p for p in _children(pid) if _comm(p) == "kobako-reaper"]
        assert reapers, "no kobako-reaper under the daemon"
        clients = [self.background(*command) for command in commands]
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        self.daemon.proc.wait()
        self.daemon._log.close()
        deadline = time.monotonic() + 10
        while any(_alive(r) for r in reapers):
            assert time.monotonic() < deadline, "the reaper outlived its daemon"
            time.sleep(0.05)
        for client in clients:
            client.wait(30)
        self.daemon.start()

    # -- what exists on the host ----------------------------------------------------------

    def on_disk_ids(self) -> set[str]:
        found = set()
        containers = self.daemon.data_root / "containers"
        if containers.is_dir():
            found |= {p.name for p in containers.iterdir()}
        for snapshots in (self.daemon.data_root / "snapshots").glob("*"):
            if snapshots.is_dir():
                found |= {p.name[2:] for p in snapshots.iterdir() if p.name.startswith("c-")}
        runtime = self.daemon.exec_root / "runtime"
        if runtime.is_dir():
            # containers' state; not the runtime's cache of compiled filters (".seccomp")
            found |= {p.name for p in runtime.iterdir() if not p.name.startswith(".")}
        return found

    def monitors(self) -> dict[int, str]:
        """kobako-monitor processes of this daemon -> the files under our data root they
        hold (their containers' logs; not their own monitor.log)."""
        found = {}
        base = str(self.daemon.base) + "/"
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or _comm(int(entry)) != "kobako-monitor":
                continue
            try:
                targets = [os.readlink(f"/proc/{entry}/fd/{fd}")
                           for fd in os.listdir(f"/proc/{entry}/fd")]
            except OSError:
                continue
            held = [t for t in targets if t.startswith(base) and not t.endswith("/monitor.log")]
            if held:
                found[int(entry)] = " ".join(held)
        return found

    def check_consistent(self, pids_before: dict[str, int] | None = None) -> dict[str, dict]:
        """The daemon's account agrees with the host; returns the inspect documents."""
        docs = self.inspect_all()
        running = {cid for cid, d in docs.items() if d["State"]["Running"]}
        problems = []
        for cid, d in docs.items():
            state = d["State"]
            cdir = self.daemon.data_root / "containers" / cid
            if not cdir.is_dir():
                problems.append(f"{cid[:12]}: recorded but its directory is gone")
            upper = d["GraphDriver"]["Data"].get("UpperDir")
            if upper and not os.path.isdir(upper):
                problems.append(f"{cid[:12]}: recorded but its rootfs is gone")
            if state["Status"] in ("removing", "dead"):
                problems.append(f"{cid[:12]}: left in state {state['Status']}")
            if cid in running:
                pid = state["Pid"]
                if not _alive(pid) or cid not in _read(f"/proc/{pid}/cgroup"):
                    problems.append(f"{cid[:12]}: running with pid {pid}, which is not its")
                if pids_before and cid in pids_before and pids_before[cid] != pid:
                    problems.append(f"{cid[:12]}: pid {pids_before[cid]} became {pid}")
                if not (self.daemon.exec_root / "runtime" / cid).is_dir():
                    problems.append(f"{cid[:12]}: running without runtime state")
        self.seen |= self.on_disk_ids()
        for cid in self.on_disk_ids() - set(docs):
            problems.append(f"{cid[:12]}: files exist but no container is reported")
        for cid in self.seen - running:
            if (self.daemon.exec_root / "runtime" / cid).exists():
                problems.append(f"{cid[:12]}: runtime state of a container not running")
            for cgroup in CGROUP_ROOT.glob(f"*/kobako/{cid}"):
                problems.append(f"{cid[:12]}: cgroup {cgroup} left")
            problems += [f"{cid[:12]}: process {p} left" for p in _processes_in_cgroup(cid)]
        for point in self.daemon.mounts():
            if not any(cid in point for cid in running):
                problems.append(f"mount {point} left")
        for pid, held in self.monitors().items():
            if not any(cid in held for cid in running):
                problems.append(f"monitor {pid} left (holding {held})")
        assert not problems, "\n".join(problems) + "\n--- kobakod log ---\n" + self.daemon.log()
        return docs

    def purge(self) -> None:
        """After a failure: end the processes and cgroups our containers left behind."""
        for cid in self.seen:
            for pid in _processes_in_cgroup(cid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
        time.sleep(0.2)
        for cid in self.seen:
            for cgroup in CGROUP_ROOT.glob(f"*/kobako/{cid}"):
                try:
                    cgroup.rmdir()
                except OSError:
                    continue

    def remove_all(self) -> None:
        ids = self.docker("ps", "-aq").stdout.split()
        if ids:
            self.docker("rm", "-f", *ids, timeout=120)
        names = self.docker("volume", "ls", "-q").stdout.split()
        if names:
            self.docker("volume", "rm", "-f", *names)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _comm(pid: int) -> str:
    return _read(f"/proc/{pid}/comm").strip()


def _alive(pid: int) -> bool:
    status = _read(f"/proc/{pid}/status")
    return bool(status) and "\nState:\tZ" not in status


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            for line in _read(f"/proc/{entry}/status").splitlines():
                if line.startswith("PPid:") and int(line.split()[1]) == pid:
                    found.append(int(entry))
    return found


def _processes_in_cgroup(cid: str) -> list[int]:
    return [int(e) for e in os.listdir("/proc")
            if e.isdigit() and cid in _read(f"/proc/{e}/cgroup")]


@pytest.fixture(scope="module")
def engine():
    engine = None
    try:
        with busybox_daemon() as daemon:
            engine = Engine(daemon)
            yield engine
            engine.remove_all()
            engine.check_consistent()
    finally:
        if engine is not None:
            engine.purge()


def _name(kind: str) -> str:
    return f"kbf-{kind}-{secrets.token_hex(3)}"


# -- SIGKILL of the daemon in the middle of operations ----------------------------------------

ROUNDS = 4


def test_kill_during_create(engine):
    rng = random.Random()
    for _ in range(ROUNDS):
        engine.crash(rng.uniform(0.0, 0.15), *[
            ("create", *RUN, "--name", _name("create"), "busybox", "sleep", "1000")
            for _ in range(4)])
        docs = engine.check_consistent()
        for cid, d in docs.items():  # whatever was created can be started and removed
            if d["State"]["Status"] == "created":
                engine.docker("start", cid)
    engine.check_consistent()
    engine.remove_all()


def test_kill_during_start(engine):
    rng = random.Random()
    for _ in range(ROUNDS):
        names = [_name("start") for _ in range(4)]
        for i, name in enumerate(names):
            # half of them on the default bridge: a netns and a veth to undo or keep
            run = RUN if i % 2 else ("--pull", "never")
            engine.docker("create", *run, "--name", name, "busybox", "sleep", "1000")
        engine.crash(rng.uniform(0.0, 0.2), *[("start", name) for name in names])
        docs = engine.check_consistent()
        for d in docs.values():  # stopped or running, each can be started and stopped again
            if not d["State"]["Running"]:
                engine.docker("start", d["Id"])
        engine.check_consistent()
        engine.remove_all()
        engine.check_consistent()


def test_kill_during_rm(engine):
    rng = random.Random()
    for _ in range(ROUNDS):
        names = [_name("rm") for _ in range(4)]
        for name in names[:2]:
            engine.docker("run", "-d", *RUN, "--name", name, "busybox", "sleep", "1000")
        for name in names[2:]:
            engine.docker("create", *RUN, "--name", name, "busybox", "true")
        pids = {d["Id"]: d["State"]["Pid"] for d in engine.inspect_all().values()
                if d["State"]["Running"]}
        engine.crash(rng.uniform(0.0, 0.2), *[("rm", "-f", name) for name in names])
        engine.check_consistent(pids)
        engine.remove_all()
        engine.check_consistent()


def test_kill_during_volume_create(engine):
    rng = random.Random()
    for _ in range(ROUNDS):
        names = [_name("vol") for _ in range(6)]
        engine.crash(rng.uniform(0.0, 0.1), *[("volume", "create", name) for name in names])
        listed = set(engine.docker("volume", "ls", "-q").stdout.split())
        on_disk = {p.name for p in (engine.daemon.data_root / "volumes").iterdir()
                   if p.is_dir()}
        assert listed == on_disk, (listed, on_disk)
        for name in listed:
            mountpoint = engine.docker("volume", "inspect", "-f", "{{.Mountpoint}}",
                                       name).stdout.strip()
            assert os.path.isdir(mountpoint)
        for name in names:  # each name can be created (again) and used
            engine.docker("volume", "create", name)
        out = engine.docker("run", "--rm", *RUN, "-v", f"{names[0]}:/v", "busybox", "sh", "-c",
                            "echo ok > /v/f && cat /v/f").stdout
        assert out == "ok\n"
        engine.remove_all()
        engine.check_consistent()


def test_kill_while_containers_write_logs(engine):
    names = [_name("log") for _ in range(3)]
    for name in names:
        engine.docker("run", "-d", *RUN, "--name", name, "busybox", "sh", "-c",
                      "i=0; while true; do echo line $i; i=$((i+1)); usleep 2000; done")
    pids = {d["Id"]: d["State"]["Pid"] for d in engine.inspect_all().values()}
    rng = random.Random()
    for _ in range(3):
        engine.crash(rng.uniform(0.05, 0.3), *[("logs", "-f", name) for name in names])
        engine.check_consistent(pids)
    for name in names:
        lines = engine.docker("logs", name).stdout.splitlines()
        numbers = [int(line.split()[1]) for line in lines]
        assert numbers == list(range(len(numbers))) and len(numbers) > 100, name
    engine.remove_all()
    engine.check_consistent()


# -- other faults ---------------------------------------------------------------------------

def test_follow_returns_when_the_container_exits(engine):
    name = _name("follow")
    engine.docker("run", "-d", *RUN, "--name", name, "busybox", "sh", "-c",
                  "sleep 0.5; i=0; while [ $i -lt 500 ]; do echo line $i; echo err $i >&2; "
                  "i=$((i+1)); done; exit 3")
    started = time.monotonic()
    result = engine.docker("logs", "-f", name, timeout=30)
    assert time.monotonic() - started < 15
    assert result.stdout.splitlines() == [f"line {i}" for i in range(500)]
    assert result.stderr.splitlines() == [f"err {i}" for i in range(500)]
    assert engine.docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "3"
    engine.docker("rm", name)


def test_a_full_disk_under_the_log_is_reported_and_the_container_goes_on(engine):
    """The container's directory (its json log) on a 256 KiB tmpfs: logging fails, the
    container does not notice, the daemon logs Docker's "Error writing log message" once,
    and stop/exit codes still work though exit.json cannot be written there either."""
    name = _name("full")
    cid = engine.docker("create", *RUN, "--name", name, "busybox", "sh", "-c",
                        "i=0; while [ $i -lt 4000 ]; do "
                        "echo line $i xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; "
                        "i=$((i+1)); done; echo done > /marker; exec sleep 1000"
                        ).stdout.strip()
    cdir = engine.daemon.data_root / "containers" / cid
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", f"kbf-full-{cid[:8]}",
                    str(cdir)], check=True)
    try:
        engine.docker("start", name)
        deadline = time.monotonic() + 20
        while engine.docker("exec", name, "cat", "/marker", check=False).stdout != "done\n":
            assert time.monotonic() < deadline, "the container stopped making progress"
            time.sleep(0.2)
        assert engine.docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() == "true"
        lines = engine.docker("logs", name).stdout.splitlines()
        # what fitted: whole lines, in order; once the disk is full, a later write small
        # enough for the space left may still fit
        numbers = [int(line.split()[1]) for line in lines]
        assert 100 < len(numbers) < 4000 and numbers == sorted(set(numbers))
        assert numbers[:100] == list(range(100))
        deadline = time.monotonic() + 10
        while "Error writing log message" not in engine.daemon.log():
            assert time.monotonic() < deadline, engine.daemon.log()
            time.sleep(0.1)
        # once per burst of failures (a write that fits ends a burst), not per line lost
        reports = engine.daemon.log_path.read_text().count("Error writing log message")
        assert 1 <= reports <= 20 and reports < 4000 - len(numbers)
        assert cid in engine.daemon.log()
        assert engine.docker("version").returncode == 0  # the daemon is fine
        engine.docker("stop", "-t", "1", name)
        state = json.loads(engine.docker("inspect", name).stdout)[0]["State"]
        assert state["Status"] == "exited" and state["ExitCode"] == 137, state
        engine.docker("rm", name)
    finally:
        subprocess.run(["umount", "-l", str(cdir)], check=False)
        subprocess.run(["rm", "-rf", str(cdir)], check=False)
    engine.check_consistent()
