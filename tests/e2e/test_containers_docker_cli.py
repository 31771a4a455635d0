"""Containers through the real docker CLI and docker-py against a kobakod of the test's own."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from daemon_fixture import DOCKER, Daemon, busybox_rootfs_tar

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


class Engine:
    """A kobakod with a busybox image, driven by the docker CLI in text mode."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.host = daemon.host

    def docker(self, *args: str, input: str | None = None, timeout: float = 60,
               check: bool = False) -> subprocess.CompletedProcess:
        result = subprocess.run([DOCKER, *args], capture_output=True, text=True, input=input,
                                timeout=timeout, env=self.daemon.env())
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}\n{self.daemon.log()}")
        return result

    def leaks(self) -> list[str]:
        """Mounts and runtime state that no container owns any more."""
        with open("/proc/self/mountinfo") as f:
            found = [line.split()[4] for line in f if str(self.daemon.base) in line.split()[4]]
        runtime_root = self.daemon.exec_root / "runtime"
        if runtime_root.is_dir():
            found += [str(p) for p in runtime_root.iterdir()]
        return found


@pytest.fixture(scope="module")
def kobakod():
    daemon = Daemon().start()
    engine = Engine(daemon)
    try:
        tar = busybox_rootfs_tar(str(daemon.base / "busybox.tar"))
        engine.docker("import", "--change", 'CMD ["sh"]', tar, "busybox:latest", check=True)
        yield engine
        ids = engine.docker("ps", "-aq").stdout.split()
        if ids:
            engine.docker("rm", "-f", *ids, timeout=120)
        assert not engine.leaks(), engine.leaks()
    finally:
        daemon.stop()


def cgroup_file(pid: int, controller: str, name: str) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                mount = "/sys/fs/cgroup/" + controllers if controllers else "/sys/fs/cgroup"
                if not os.path.isdir(mount):
                    mount = "/sys/fs/cgroup/" + controller
                with open(os.path.join(mount + path, name)) as g:
                    return g.read().strip()
    raise AssertionError(f"no {controller} cgroup for {pid}")


def test_run_rm_prints_output(kobakod):
    result = kobakod.docker("run", "--rm", "busybox", "echo", "hello", "world", check=True)
    assert result.stdout == "hello world\n"
    assert kobakod.docker("ps", "-aq").stdout.strip() == ""


def test_exit_code_and_wait(kobakod):
    result = kobakod.docker("run", "--name", "kbt-exit", "busybox", "sh", "-c", "exit 3")
    assert result.returncode == 3
    assert kobakod.docker("wait", "kbt-exit", check=True).stdout.strip() == "3"
    state = json.loads(kobakod.docker("inspect", "kbt-exit", check=True).stdout)[0]["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 3
    kobakod.docker("rm", "kbt-exit", check=True)


def test_detached_lifecycle_with_exec_and_logs(kobakod):
    kobakod.docker("run", "-d", "--name", "kbt-life", "--cpu-shares", "512", "busybox", "sh",
                   "-c", "echo started; exec sleep 1000", check=True)
    pid = int(kobakod.docker("inspect", "--format", "{{.State.Pid}}", "kbt-life",
                             check=True).stdout)
    assert os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    assert cgroup_file(pid, "cpu", "cpu.shares") == "512"
    assert "kbt-life" in kobakod.docker("ps", check=True).stdout

    exe = kobakod.docker("exec", "kbt-life", "sh", "-c", "ps -o pid,args; exit 5")
    assert exe.returncode == 5
    assert "1 sleep 1000" in " ".join(exe.stdout.split())
    piped = kobakod.docker("exec", "-i", "kbt-life", "cat", input="through stdin\n")
    assert piped.stdout == "through stdin\n"

    deadline = time.monotonic() + 5
    while "started" not in kobakod.docker("logs", "kbt-life").stdout:
        assert time.monotonic() < deadline
        time.sleep(0.1)

    kobakod.docker("pause", "kbt-life", check=True)
    assert kobakod.docker("inspect", "--format", "{{.State.Paused}}", "kbt-life").stdout.strip() == "true"
    kobakod.docker("unpause", "kbt-life", check=True)

    top = kobakod.docker("top", "kbt-life", check=True).stdout
    assert "sleep 1000" in top

    kobakod.docker("stop", "-t", "1", "kbt-life", check=True)
    state = json.loads(kobakod.docker("inspect", "kbt-life").stdout)[0]["State"]
    assert state["Running"] is False and state["ExitCode"] == 137
    kobakod.docker("rm", "kbt-life", check=True)
    assert not os.path.exists(f"/proc/{pid}")


def test_tty_run_through_a_real_pty(kobakod):
    env = kobakod.daemon.env()
    result = subprocess.run(
        ["script", "-qec", "docker run -it --rm busybox sh -c 'tty; exit 4'", "/dev/null"],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )
    assert "/dev/pts/0" in result.stdout
    assert result.returncode == 4


def test_pid_namespace_of_another_container(kobakod):
    kobakod.docker("run", "-d", "--name", "kbt-pidx", "busybox", "sleep", "1001", check=True)
    try:
        result = kobakod.docker("run", "--rm", "--pid", "container:kbt-pidx", "busybox",
                                "ps", "-o", "args", check=True)
        assert "sleep 1001" in result.stdout
    finally:
        kobakod.docker("rm", "-f", "kbt-pidx", check=True)


def test_default_capabilities_and_seccomp(kobakod):
    status = kobakod.docker("run", "--rm", "busybox", "cat", "/proc/self/status",
                            check=True).stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["CapEff"].strip() == "00000000a80425fb"  # Docker's 14 default caps
    assert fields["CapInh"].strip() == "0000000000000000"
    assert fields["Seccomp"].strip() == "2"
    denied = kobakod.docker("run", "--rm", "busybox", "unshare", "-n", "true")
    assert denied.returncode != 0
    assert "Operation not permitted" in denied.stderr + denied.stdout


def test_oom_killed(kobakod):
    result = kobakod.docker("run", "--name", "kbt-oom", "-m", "32m", "--memory-swap", "32m",
                            "busybox", "sh", "-c",
                            "dd if=/dev/zero of=/dev/shm/fill bs=1M count=200")
    try:
        assert result.returncode == 137
        state = json.loads(kobakod.docker("inspect", "kbt-oom").stdout)[0]["State"]
        assert state["OOMKilled"] is True
    finally:
        kobakod.docker("rm", "-f", "kbt-oom")


def test_errors_have_docker_status_and_wording(kobakod):
    missing = kobakod.docker("run", "--rm", "busybox", "/no/such/binary")
    assert missing.returncode == 127
    assert "executable file not found" in missing.stderr or "no such file" in missing.stderr

    kobakod.docker("run", "-d", "--name", "kbt-err", "busybox", "sleep", "1000", check=True)
    try:
        clash = kobakod.docker("run", "-d", "--name", "kbt-err", "busybox", "true")
        assert clash.returncode != 0 and "already in use" in clash.stderr
        running = kobakod.docker("rm", "kbt-err")
        assert running.returncode != 0 and "cannot remove a running container" in running.stderr
    finally:
        kobakod.docker("rm", "-f", "kbt-err", check=True)
    gone = kobakod.docker("kill", "kbt-nope")
    assert gone.returncode != 0
    assert "Error response from daemon: No such container: kbt-nope" in gone.stderr


def test_docker_py(kobakod):
    client = kobakod.daemon.docker_py()
    try:
        container = client.containers.run("busybox", ["sh", "-c", "echo py; exit 2"],
                                          detach=True, name="kbt-py")
        assert container.wait(timeout=30)["StatusCode"] == 2
        assert container.logs() == b"py\n"
        container.remove()
        assert client.containers.run("busybox", ["echo", "hi"], remove=True) == b"hi\n"
    finally:
        client.close()


def wait_for(predicate, timeout: float = 30, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(interval)


def test_on_failure_restart_policy_stops_after_max_retries(kobakod):
    kobakod.docker("run", "-d", "--name", "kbt-onfail", "--restart", "on-failure:3", "busybox",
                   "sh", "-c", "exit 7", check=True)

    def settled() -> bool:
        state = json.loads(kobakod.docker("inspect", "kbt-onfail").stdout)[0]
        return state["RestartCount"] == 3 and state["State"]["Status"] == "exited"

    wait_for(settled)
    time.sleep(1.0)  # no fourth restart comes
    doc = json.loads(kobakod.docker("inspect", "kbt-onfail").stdout)[0]
    assert doc["RestartCount"] == 3 and doc["State"]["ExitCode"] == 7
    kobakod.docker("rm", "kbt-onfail", check=True)


def test_healthcheck_turns_unhealthy_then_healthy(kobakod):
    kobakod.docker("run", "-d", "--name", "kbt-health", "--health-cmd", "test -e /tmp/ok",
                   "--health-interval", "300ms", "--health-retries", "2",
                   "busybox", "sleep", "1000", check=True)

    def status() -> str:
        return kobakod.docker("inspect", "--format", "{{.State.Health.Status}}",
                              "kbt-health").stdout.strip()

    try:
        wait_for(lambda: status() == "unhealthy")
        assert "(unhealthy)" in kobakod.docker("ps", "--filter", "name=kbt-health").stdout
        kobakod.docker("exec", "kbt-health", "touch", "/tmp/ok", check=True)
        wait_for(lambda: status() == "healthy")
        health = json.loads(kobakod.docker("inspect", "kbt-health").stdout)[0]["State"]["Health"]
        assert health["FailingStreak"] == 0 and health["Log"][-1]["ExitCode"] == 0
    finally:
        kobakod.docker("rm", "-f", "kbt-health", check=True)


def test_events_in_order(kobakod):
    since = time.time() - 1
    kobakod.docker("run", "--rm", "--name", "kbt-events", "busybox", "true", check=True)
    result = kobakod.docker("events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}",
                            "--filter", "container=kbt-events", "--format", "{{.Action}}",
                            check=True)
    actions = [a for a in result.stdout.split() if a in ("create", "start", "die", "destroy")]
    assert actions == ["create", "start", "die", "destroy"]


def test_init_reaps_as_pid_1(kobakod):
    result = kobakod.docker("run", "--rm", "--init", "busybox", "ps", "-o", "pid,args",
                            check=True)
    first = result.stdout.splitlines()[1].split(None, 1)
    assert first[0] == "1" and "docker-init" in first[1]


def test_host_network_and_ipc_of_another_container(kobakod):
    hostname = kobakod.docker("run", "--rm", "--network", "host", "busybox", "hostname",
                              check=True).stdout.strip()
    assert hostname == open("/etc/hostname").read().strip()
    kobakod.docker("run", "-d", "--name", "kbt-ipc", "busybox", "sleep", "1000", check=True)
    try:
        pid = int(kobakod.docker("inspect", "--format", "{{.State.Pid}}", "kbt-ipc").stdout)
        inside = kobakod.docker("run", "--rm", "--ipc", "container:kbt-ipc", "busybox",
                                "readlink", "/proc/self/ns/ipc", check=True).stdout.strip()
        assert inside == os.readlink(f"/proc/{pid}/ns/ipc")
    finally:
        kobakod.docker("rm", "-f", "kbt-ipc", check=True)
