"""Live restore: kobakod killed with SIGKILL while containers run, then started again."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from daemon_fixture import Daemon, busybox_daemon


def docker(daemon: Daemon, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return daemon.run(*args, check=check, timeout=120)


@pytest.fixture
def daemon():
    with busybox_daemon() as d:
        yield d


def test_containers_survive_sigkill_of_the_daemon(daemon):
    names = [f"kbt-live{i}" for i in range(10)]
    for i, name in enumerate(names):
        # half of them write a numbered log line every 50 ms
        command = ("i=0; while true; do echo line $i; i=$((i+1)); sleep 0.05; done"
                   if i % 2 == 0 else "exec sleep 1000")
        docker(daemon, "run", "-d", "--name", name, "busybox", "sh", "-c", command)
    docker(daemon, "run", "-d", "--name", "kbt-live-exit", "busybox", "sh", "-c",
           "sleep 1; exit 42")
    pids = {name: daemon.inspect(name)["State"]["Pid"] for name in names}

    daemon.kill()
    time.sleep(2)  # kbt-live-exit ends while the daemon is away
    daemon.start()

    for name in names:
        state = daemon.inspect(name)["State"]
        assert state["Running"] and state["Pid"] == pids[name], name
    exited = daemon.inspect("kbt-live-exit")["State"]
    assert exited["Status"] == "exited" and exited["ExitCode"] == 42
    assert exited["FinishedAt"] > exited["StartedAt"]

    # the logs went on while the daemon was away: consecutive, no gap, no duplicate
    time.sleep(0.5)
    lines = docker(daemon, "logs", names[0]).stdout.splitlines()
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == list(range(len(numbers))) and len(numbers) > 40

    assert docker(daemon, "exec", names[1], "echo", "still here").stdout == "still here\n"
    docker(daemon, "stop", "-t", "1", names[1])
    assert daemon.inspect(names[1])["State"]["Running"] is False


def test_a_killed_monitor_is_noticed(daemon):
    docker(daemon, "run", "-d", "--name", "kbt-orphan", "busybox", "sleep", "1000")
    pid = daemon.inspect("kbt-orphan")["State"]["Pid"]
    with open(f"/proc/{pid}/status") as f:
        monitor = int(next(line for line in f if line.startswith("PPid:")).split()[1])
    with open(f"/proc/{monitor}/comm") as f:
        assert f.read().strip() == "kobako-monitor"
    os.kill(monitor, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while daemon.inspect("kbt-orphan")["State"]["Running"]:
        assert time.monotonic() < deadline, "the engine never noticed its monitor died"
        time.sleep(0.2)
    assert not os.path.exists(f"/proc/{pid}")  # and the container is really gone
    assert "the monitor process died" in daemon.log()
