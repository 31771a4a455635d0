"""Restart policies with the docker CLI: at exits, across daemon restarts, stop, update."""

from __future__ import annotations

import os
import secrets
import signal
import time

import pytest
from daemon_fixture import Engine as BaseEngine
from daemon_fixture import busybox_daemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

RUN = ("--pull", "never", "--network", "none")


class Engine(BaseEngine):
    def run(self, *args: str) -> str:
        name = "kbr-" + secrets.token_hex(4)
        self.docker("run", "-d", *RUN, "--name", name, *args)
        return name

    def wait_for(self, name: str, what, timeout: float = 15) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            doc = self.inspect(name)
            if what(doc):
                return doc
            assert time.monotonic() < deadline, (doc["State"], doc["RestartCount"],
                                                 self.daemon.log())
            time.sleep(0.1)


@pytest.fixture(scope="module")
def engine():
    with busybox_daemon() as daemon:
        yield Engine(daemon)


def running(doc: dict) -> bool:
    # State.Running is also true while a restart is pending (as dockerd's)
    return doc["State"]["Status"] == "running"


def test_exits_while_the_daemon_is_down_are_restarted_at_its_start(engine):
    always = engine.run("--restart", "always", "busybox", "sleep", "1000")
    unless = engine.run("--restart", "unless-stopped", "busybox", "sleep", "1000")
    never = engine.run("busybox", "sleep", "1000")
    pids = {n: engine.inspect(n)["State"]["Pid"] for n in (always, unless, never)}
    engine.daemon.kill()
    for pid in pids.values():
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    engine.daemon.start()
    for name in (always, unless):
        doc = engine.wait_for(name, running)
        assert doc["RestartCount"] == 1 and doc["State"]["Pid"] != pids[name]
    doc = engine.wait_for(never, lambda d: d["State"]["Status"] == "exited")
    assert doc["State"]["ExitCode"] == 137 and doc["RestartCount"] == 0
    engine.docker("rm", "-f", always, unless, never)


def test_stopped_always_comes_back_at_daemon_start_unless_stopped_does_not(engine):
    always = engine.run("--restart", "always", "busybox", "sleep", "1000")
    unless = engine.run("--restart", "unless-stopped", "busybox", "sleep", "1000")
    engine.docker("stop", "-t", "0", always, unless)
    time.sleep(0.5)  # stopped by hand: no policy restart now
    for name in (always, unless):
        assert not running(engine.inspect(name))
    assert engine.daemon.terminate() == 0
    engine.daemon._log.close()
    engine.daemon.start()
    engine.wait_for(always, running)  # Docker: "always" restarts with the daemon
    time.sleep(0.5)
    doc = engine.inspect(unless)
    assert doc["State"]["Status"] == "exited" and doc["RestartCount"] == 0
    engine.docker("rm", "-f", always, unless)


def test_stop_of_a_restarting_container_stops_it(engine):
    name = engine.run("--restart", "always", "busybox", "sh", "-c", "exit 1")
    engine.wait_for(name, lambda d: d["State"]["Restarting"] and d["RestartCount"] >= 3)
    engine.docker("stop", name)
    doc = engine.inspect(name)
    assert doc["State"]["Status"] == "exited" and not doc["State"]["Restarting"]
    count = doc["RestartCount"]
    time.sleep(1.5)  # longer than the pending back-off was
    doc = engine.inspect(name)
    assert doc["State"]["Status"] == "exited" and doc["RestartCount"] == count
    engine.docker("rm", name)


def test_on_failure_backs_off_and_gives_up_after_its_maximum(engine):
    backing_off = engine.run("--restart", "on-failure", "busybox", "sh", "-c", "exit 2")
    capped = engine.run("--restart", "on-failure:3", "busybox", "sh", "-c", "exit 3")
    clean = engine.run("--restart", "on-failure", "busybox", "true")
    started = time.monotonic()
    doc = engine.wait_for(capped, lambda d: d["State"]["Status"] == "exited"
                          and d["RestartCount"] == 3)
    time.sleep(max(0.0, 3.0 - (time.monotonic() - started)))
    # waits of 0.1, 0.2, 0.4, 0.8, 1.6 s: about 5 restarts in 3 s; without back-off
    # (0.1 s each) it would be 20 or more
    count = engine.inspect(backing_off)["RestartCount"]
    assert 3 <= count <= 7, count
    doc = engine.inspect(capped)
    assert doc["State"]["ExitCode"] == 3 and doc["RestartCount"] == 3
    assert not doc["State"]["Restarting"]
    doc = engine.inspect(clean)
    assert doc["State"]["Status"] == "exited" and doc["RestartCount"] == 0
    engine.docker("rm", "-f", backing_off, capped, clean)


def test_a_restart_pending_when_the_daemon_dies_still_happens(engine):
    name = engine.run("--restart", "on-failure:5", "busybox", "sh", "-c", "exit 1")
    engine.wait_for(name, lambda d: d["State"]["Restarting"] and d["RestartCount"] >= 2)
    engine.daemon.kill()
    engine.daemon.start()
    doc = engine.wait_for(name, lambda d: d["RestartCount"] == 5
                          and d["State"]["Status"] == "exited")
    assert doc["State"]["ExitCode"] == 1 and not doc["State"]["Restarting"]
    engine.docker("rm", name)


def test_update_of_the_restart_policy_of_a_running_container(engine):
    name = engine.run("busybox", "sleep", "1000")
    engine.docker("update", "--restart", "always", name)
    doc = engine.inspect(name)
    assert doc["HostConfig"]["RestartPolicy"]["Name"] == "always"
    os.kill(doc["State"]["Pid"], signal.SIGKILL)
    doc = engine.wait_for(name, lambda d: running(d) and d["RestartCount"] == 1)
    engine.docker("update", "--restart", "no", name)
    os.kill(doc["State"]["Pid"], signal.SIGKILL)
    doc = engine.wait_for(name, lambda d: d["State"]["Status"] == "exited")
    time.sleep(0.5)
    doc = engine.inspect(name)
    assert doc["State"]["Status"] == "exited" and doc["RestartCount"] == 1
    bad = engine.docker("update", "--restart", "sometimes", name, check=False)
    assert bad.returncode != 0
    engine.docker("rm", name)
