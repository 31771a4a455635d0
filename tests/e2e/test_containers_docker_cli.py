"""Containers through the real docker CLI and docker-py against a kobakod of the test's own."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time

import aiohttp
import pytest
from daemon_fixture import cgroup_file, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def test_run_rm_prints_output(engine):
    result = engine.run("run", "--rm", "busybox", "echo", "hello", "world", check=True)
    assert result.stdout == "hello world\n"
    assert engine.run("ps", "-aq").stdout.strip() == ""


def test_exit_code_and_wait(engine):
    result = engine.run("run", "--name", "kbt-exit", "busybox", "sh", "-c", "exit 3")
    assert result.returncode == 3
    assert engine.run("wait", "kbt-exit", check=True).stdout.strip() == "3"
    state = json.loads(engine.run("inspect", "kbt-exit", check=True).stdout)[0]["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 3
    engine.run("rm", "kbt-exit", check=True)


def test_detached_lifecycle_with_exec_and_logs(engine):
    engine.run("run", "-d", "--name", "kbt-life", "--cpu-shares", "512", "busybox", "sh",
               "-c", "echo started; exec sleep 1000", check=True)
    pid = int(engine.run("inspect", "--format", "{{.State.Pid}}", "kbt-life",
                         check=True).stdout)
    assert os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    assert cgroup_file(pid, "cpu", "cpu.shares") == "512"
    assert "kbt-life" in engine.run("ps", check=True).stdout

    exe = engine.run("exec", "kbt-life", "sh", "-c", "ps -o pid,args; exit 5")
    assert exe.returncode == 5
    assert "1 sleep 1000" in " ".join(exe.stdout.split())
    piped = engine.run("exec", "-i", "kbt-life", "cat", input="through stdin\n")
    assert piped.stdout == "through stdin\n"
    # a process that cannot start: dockerd's message in the stream, 126 as exit (its
    # exec start sets 126 for every start failure; only `run` tells 127 apart)
    missing = engine.run("exec", "kbt-life", "no-such-command")
    assert missing.returncode == 126
    assert 'exec: "no-such-command": executable file not found' in missing.stdout
    assert engine.run("exec", "kbt-life", "/etc").returncode == 126
    client = engine.docker_py()
    try:
        result = client.containers.get("kbt-life").exec_run("no-such-command")
        assert result.exit_code == 126 and b"executable file not found" in result.output
    finally:
        client.close()

    wait_until(lambda: "started" in engine.run("logs", "kbt-life").stdout, timeout=5)

    engine.run("pause", "kbt-life", check=True)
    assert engine.run("inspect", "--format", "{{.State.Paused}}", "kbt-life").stdout.strip() == "true"
    engine.run("unpause", "kbt-life", check=True)

    top = engine.run("top", "kbt-life", check=True).stdout
    assert "sleep 1000" in top

    engine.run("stop", "-t", "1", "kbt-life", check=True)
    state = json.loads(engine.run("inspect", "kbt-life").stdout)[0]["State"]
    assert state["Running"] is False and state["ExitCode"] == 137
    engine.run("rm", "kbt-life", check=True)
    assert not os.path.exists(f"/proc/{pid}")


def test_tty_run_through_a_real_pty(engine):
    env = engine.env()
    result = subprocess.run(
        ["script", "-qec", "docker run -it --rm busybox sh -c 'tty; exit 4'", "/dev/null"],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )
    assert "/dev/pts/0" in result.stdout
    assert result.returncode == 4


def test_pid_namespace_of_another_container(engine):
    engine.run("run", "-d", "--name", "kbt-pidx", "busybox", "sleep", "1001", check=True)
    try:
        result = engine.run("run", "--rm", "--pid", "container:kbt-pidx", "busybox",
                            "ps", "-o", "args", check=True)
        assert "sleep 1001" in result.stdout
    finally:
        engine.run("rm", "-f", "kbt-pidx", check=True)


def test_default_capabilities_and_seccomp(engine):
    status = engine.run("run", "--rm", "busybox", "cat", "/proc/self/status",
                        check=True).stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["CapEff"].strip() == "00000000a80425fb"  # Docker's 14 default caps
    assert fields["CapInh"].strip() == "0000000000000000"
    assert fields["Seccomp"].strip() == "2"
    denied = engine.run("run", "--rm", "busybox", "unshare", "-n", "true")
    assert denied.returncode != 0
    assert "Operation not permitted" in denied.stderr + denied.stdout


def test_oom_killed(engine):
    result = engine.run("run", "--name", "kbt-oom", "-m", "32m", "--memory-swap", "32m",
                        "busybox", "sh", "-c",
                        "dd if=/dev/zero of=/dev/shm/fill bs=1M count=200")
    try:
        assert result.returncode == 137
        state = json.loads(engine.run("inspect", "kbt-oom").stdout)[0]["State"]
        assert state["OOMKilled"] is True
    finally:
        engine.run("rm", "-f", "kbt-oom")


def test_limits_the_kernel_cannot_enforce_are_discarded_with_a_warning(engine):
    """As dockerd: a kernel without BFQ/CFQ has no blkio weight files; the container runs
    without the weight and the CLI prints the warning. Where the kernel has them, the
    weight reaches the container's cgroup."""
    from kobako.linux.cgroups.sysinfo import probe

    result = engine.run("run", "-d", "--name", "kbt-weight", "--blkio-weight", "300",
                        "busybox", "sleep", "1000", check=True)
    try:
        weight = engine.run("inspect", "--format", "{{.HostConfig.BlkioWeight}}",
                            "kbt-weight", check=True).stdout.strip()
        limits = probe()
        if limits.blkio_weight:
            assert weight == "300" and "Weight discarded" not in result.stderr
            pid = int(engine.run("inspect", "--format", "{{.State.Pid}}", "kbt-weight",
                                 check=True).stdout)
            if limits.version == "2":
                assert cgroup_file(pid, "", "io.weight") == "default 300"
            else:
                try:
                    assert cgroup_file(pid, "blkio", "blkio.weight") == "300"
                except FileNotFoundError:
                    assert cgroup_file(pid, "blkio", "blkio.bfq.weight").split()[-1] == "300"
        else:
            assert weight == "0"
            assert ("WARNING: Your kernel does not support Block I/O weight or the cgroup is "
                    "not mounted. Weight discarded.") in result.stderr
    finally:
        engine.run("rm", "-f", "kbt-weight")


def test_errors_have_docker_status_and_wording(engine):
    missing = engine.run("run", "--rm", "busybox", "/no/such/binary")
    assert missing.returncode == 127
    assert "executable file not found" in missing.stderr or "no such file" in missing.stderr
    assert "Error waiting for container" not in missing.stderr  # only the start's error

    engine.run("run", "-d", "--name", "kbt-err", "busybox", "sleep", "1000", check=True)
    try:
        clash = engine.run("run", "-d", "--name", "kbt-err", "busybox", "true")
        assert clash.returncode != 0 and "already in use" in clash.stderr
        running = engine.run("rm", "kbt-err")
        assert running.returncode != 0 and "cannot remove a running container" in running.stderr
        user = engine.run("exec", "-u", "nosuch", "kbt-err", "true")
        assert user.returncode == 126 and "unable to find user nosuch" in user.stdout
        cwd = engine.run("exec", "-w", "/nonexist", "kbt-err", "pwd")
        assert 'chdir to cwd ("/nonexist") set in config.json failed: no such file' in cwd.stdout
        listed = engine.run("ps", "--no-trunc", "--format", "{{.Command}}", "--filter",
                            "name=kbt-err", check=True).stdout
        assert listed.strip() == '"sleep 1000"'
    finally:
        engine.run("rm", "-f", "kbt-err", check=True)
    gone = engine.run("kill", "kbt-nope")
    assert gone.returncode != 0
    assert ("Error response from daemon: Cannot kill container: kbt-nope: No such container: "
            "kbt-nope") in gone.stderr
    engine.run("create", "--name", "kbt-err", "busybox", "sh", "-c", "echo a b", check=True)
    try:
        stopped = engine.run("kill", "kbt-err")
        assert "Cannot kill container: kbt-err: Container " in stopped.stderr
        listed = engine.run("ps", "-a", "--no-trunc", "--format", "{{.Command}}", "--filter",
                            "name=kbt-err", check=True).stdout
        assert listed.strip() == "\"sh -c 'echo a b'\""  # as dockerd quotes them
    finally:
        engine.run("rm", "-f", "kbt-err", check=True)


def test_docker_py(engine):
    client = engine.docker_py()
    try:
        container = client.containers.run("busybox", ["sh", "-c", "echo py; exit 2"],
                                          detach=True, name="kbt-py")
        assert container.wait(timeout=30)["StatusCode"] == 2
        assert container.logs() == b"py\n"
        container.remove()
        assert client.containers.run("busybox", ["echo", "hi"], remove=True) == b"hi\n"
    finally:
        client.close()


def test_on_failure_restart_policy_stops_after_max_retries(engine):
    engine.run("run", "-d", "--name", "kbt-onfail", "--restart", "on-failure:3", "busybox",
               "sh", "-c", "exit 7", check=True)

    def settled() -> bool:
        state = json.loads(engine.run("inspect", "kbt-onfail").stdout)[0]
        return state["RestartCount"] == 3 and state["State"]["Status"] == "exited"

    wait_until(settled, timeout=30, interval=0.2)
    time.sleep(1.0)  # no fourth restart comes
    doc = json.loads(engine.run("inspect", "kbt-onfail").stdout)[0]
    assert doc["RestartCount"] == 3 and doc["State"]["ExitCode"] == 7
    engine.run("rm", "kbt-onfail", check=True)


def test_healthcheck_turns_unhealthy_then_healthy(engine):
    engine.run("run", "-d", "--name", "kbt-health", "--health-cmd", "test -e /tmp/ok",
               "--health-interval", "300ms", "--health-retries", "2",
               "busybox", "sleep", "1000", check=True)

    def status() -> str:
        return engine.run("inspect", "--format", "{{.State.Health.Status}}",
                          "kbt-health").stdout.strip()

    try:
        wait_until(lambda: status() == "unhealthy", timeout=30, interval=0.2)
        assert "(unhealthy)" in engine.run("ps", "--filter", "name=kbt-health").stdout
        engine.run("exec", "kbt-health", "touch", "/tmp/ok", check=True)
        wait_until(lambda: status() == "healthy", timeout=30, interval=0.2)
        health = json.loads(engine.run("inspect", "kbt-health").stdout)[0]["State"]["Health"]
        assert health["FailingStreak"] == 0 and health["Log"][-1]["ExitCode"] == 0
    finally:
        engine.run("rm", "-f", "kbt-health", check=True)


def test_events_in_order(engine):
    since = time.time() - 1
    engine.run("run", "--rm", "--name", "kbt-events", "busybox", "true", check=True)
    result = engine.run("events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}",
                        "--filter", "container=kbt-events", "--format", "{{.Action}}",
                        check=True)
    actions = [a for a in result.stdout.split() if a in ("create", "start", "die", "destroy")]
    assert actions == ["create", "start", "die", "destroy"]


def test_init_reaps_as_pid_1(engine):
    result = engine.run("run", "--rm", "--init", "busybox", "ps", "-o", "pid,args",
                        check=True)
    first = result.stdout.splitlines()[1].split(None, 1)
    assert first[0] == "1" and "docker-init" in first[1]


def test_host_network_and_ipc_of_another_container(engine):
    hostname = engine.run("run", "--rm", "--network", "host", "busybox", "hostname",
                          check=True).stdout.strip()
    assert hostname == open("/etc/hostname").read().strip()
    engine.run("run", "-d", "--name", "kbt-ipc", "busybox", "sleep", "1000", check=True)
    try:
        pid = int(engine.run("inspect", "--format", "{{.State.Pid}}", "kbt-ipc").stdout)
        inside = engine.run("run", "--rm", "--ipc", "container:kbt-ipc", "busybox",
                            "readlink", "/proc/self/ns/ipc", check=True).stdout.strip()
        assert inside == os.readlink(f"/proc/{pid}/ns/ipc")
    finally:
        engine.run("rm", "-f", "kbt-ipc", check=True)


def test_attach_over_a_websocket(engine):
    """GET /containers/{id}/attach/ws: output as binary messages, messages as stdin."""
    engine.run("run", "-d", "-i", "--name", "kbt-ws", "busybox", "sh", "-c",
               "echo ready; read line; echo got:$line", check=True)
    wait_until(lambda: "ready" in engine.run("logs", "kbt-ws").stdout, timeout=5)

    async def talk() -> bytes:
        connector = aiohttp.UnixConnector(path=engine.host.removeprefix("unix://"))
        async with aiohttp.ClientSession(connector=connector) as session:
            url = "http://docker/containers/kbt-ws/attach/ws?stream=1&stdin=1&stdout=1"
            async with session.ws_connect(url) as ws:
                await ws.send_bytes(b"hello\n")
                received = b""
                async for message in ws:
                    received += message.data
                return received

    assert b"got:hello" in asyncio.run(talk())
    assert engine.run("wait", "kbt-ws", check=True).stdout.strip() == "0"
    engine.run("rm", "kbt-ws", check=True)


def test_ps_filters_as_dockerd(engine):
    engine.run("volume", "create", "kbt-fvol", check=True)
    engine.run("create", "--name", "kbt-fpub", "-p", "127.0.0.1::8080", "--expose", "9000",
               "-v", "kbt-fvol:/data", "busybox", "true", check=True)
    engine.run("create", "--name", "kbt-fnone", "--network", "none", "--label", "tier=db",
               "busybox", "true", check=True)
    try:
        def names(*filters: str) -> set[str]:
            args = [arg for f in filters for arg in ("--filter", f)]
            out = engine.run("ps", "-a", "--format", "{{.Names}}", *args, check=True).stdout
            return {name for name in out.split() if name.startswith("kbt-f")}

        assert names("publish=8080") == {"kbt-fpub"}
        assert names("publish=8000-8090/tcp") == {"kbt-fpub"}
        assert names("publish=8080/udp") == set()
        assert names("expose=9000") == {"kbt-fpub"} == names("expose=8080")
        assert names("volume=kbt-fvol") == {"kbt-fpub"} == names("volume=/data")
        assert names("network=none") == {"kbt-fnone"}
        assert names("health=none") == {"kbt-fpub", "kbt-fnone"}
        assert names("is-task=true") == set()
        assert names("label=tier") == {"kbt-fnone"} == names("label=tier=db")
        assert names("label=tier=web") == set()
        assert names("status=created", "name=kbt-fnone") == {"kbt-fnone"}
        assert names("name=^/?kbt-fp") == {"kbt-fpub"}
        assert names("name=kbt-f[") == set()  # no regular expression: dockerd matches nothing
        for bad, message in (("bogus=1", "invalid filter 'bogus'"),
                             ("status=bogus", "invalid filter 'status=bogus'"),
                             ("publish=1:2", "should not contain ':'")):
            result = engine.run("ps", "--filter", bad)
            assert result.returncode != 0 and message in result.stderr, result.stderr
    finally:
        engine.run("rm", "-f", "kbt-fpub", "kbt-fnone", check=True)
        engine.run("volume", "rm", "kbt-fvol", check=True)


def test_cli_answers_as_dockerd(engine):
    """Found by running the same docker CLI commands against kobakod and a dockerd."""
    engine.run("create", "--name", "kbt-last", "busybox", "true", check=True)
    try:
        # -n/-l list every state
        assert engine.run("ps", "-l", "--format", "{{.Names}}", check=True).stdout == "kbt-last\n"
        assert "kbt-last" in engine.run("ps", "-n", "3", "--format", "{{.Names}}").stdout
        # a network that does not exist fails the start, without a pull
        missing = engine.run("run", "--rm", "--network", "kbt-nosuchnet", "busybox", "true")
        assert missing.returncode == 125
        assert "network kbt-nosuchnet not found" in missing.stderr
        assert "Unable to find image" not in missing.stderr
        # an address only on user networks
        static = engine.run("run", "--rm", "--network", "none", "--ip", "10.1.1.1",
                            "busybox", "true")
        assert static.returncode == 125 and "user defined networks only" in static.stderr
        # an image of another platform is not the one asked for
        other = engine.run("create", "--platform", "linux/s390x", "--pull", "never", "busybox",
                           "true")
        assert other.returncode != 0
        assert "does not match the specified platform: wanted linux/s390x" in other.stderr
        # a created container has its host name
        doc = engine.inspect("kbt-last")
        assert doc["Config"]["Hostname"] == doc["Id"][:12]
        # a tail that is no count means everything
        engine.run("start", "-a", "kbt-last", check=True)
        assert engine.run("logs", "--tail", "abc", "kbt-last").returncode == 0
        # a commit's history names the container's command
        engine.run("commit", "kbt-last", "kbt-evt:2", check=True)
        history = engine.run("history", "--no-trunc", "--format", "{{.CreatedBy}}",
                             "kbt-evt:2", check=True).stdout
        assert history.splitlines()[0] == "true"
        engine.run("rmi", "kbt-evt:2", check=True)
        # image events as dockerd names them
        engine.run("tag", "busybox", "kbt-evt:1", check=True)
        image_id = engine.inspect("busybox")["Id"]
        engine.run("rmi", "kbt-evt:1", check=True)
        time.sleep(1.1)  # --until counts in whole seconds
        events = engine.run("events", "--since", "30s", "--until", "0s", "--filter",
                            "event=untag", "--format", "{{.Actor.ID}}", check=True).stdout
        assert image_id in events.split()
    finally:
        engine.run("rm", "-f", "kbt-last")


def test_network_none_has_a_sandbox_and_network_events(engine):
    """As dockerd: a --network none container's namespace is a file (SandboxKey) with lo
    up; network connect/disconnect events come around its start and its end."""
    engine.run("run", "-d", "--name", "kbt-sandbox", "--network", "none", "busybox",
               "sleep", "300", check=True)
    try:
        doc = engine.inspect("kbt-sandbox")
        key = doc["NetworkSettings"]["SandboxKey"]
        assert key and len(doc["NetworkSettings"]["SandboxID"]) == 64
        assert doc["NetworkSettings"]["Networks"]["none"]["EndpointID"]
        pid = doc["State"]["Pid"]
        assert os.stat(key).st_ino == os.stat(f"/proc/{pid}/ns/net").st_ino
        links = engine.run("exec", "kbt-sandbox", "ip", "-o", "link", check=True).stdout
        assert len(links.splitlines()) == 1 and "lo:" in links and "UP" in links
        engine.run("stop", "-t", "0", "kbt-sandbox", check=True)
        assert not os.path.exists(key)
        assert engine.inspect("kbt-sandbox")["NetworkSettings"]["SandboxKey"] == ""
        time.sleep(1.1)  # --until counts in whole seconds
        events = engine.run("events", "--since", "30s", "--until", "0s", "--filter",
                            "type=network", "--format", "{{.Action}} {{.Actor.Attributes.name}}"
                            " {{.Actor.Attributes.container}}", check=True).stdout.splitlines()
        assert [e for e in events if e.endswith(doc["Id"])] == [
            f"connect none {doc['Id']}", f"disconnect none {doc['Id']}"]
    finally:
        engine.run("rm", "-f", "kbt-sandbox")


def test_rename_errors_and_a_signal_to_a_paused_container(engine):
    engine.run("run", "-d", "--name", "kbt-paused", "busybox", "sh", "-c",
               "trap 'echo got TERM; exit 7' TERM; while true; do sleep 0.1; done", check=True)
    try:
        same = engine.run("rename", "kbt-paused", "kbt-paused")
        assert same.returncode != 0 and "with the same name as its current name" in same.stderr
        bad = engine.run("rename", "kbt-paused", "bad/name")
        assert "Error when allocating new name: Invalid container name (/bad/name)" in bad.stderr
        bad = engine.run("create", "--name", "bad/name", "busybox")
        assert bad.returncode != 0 and "Invalid container name (bad/name)" in bad.stderr
        engine.run("pause", "kbt-paused", check=True)
        # as dockerd: a stop signal to a paused container unpauses it, so it is acted on
        engine.run("kill", "-s", "TERM", "kbt-paused", check=True)
        assert engine.run("wait", "kbt-paused", check=True).stdout.strip() == "7"
        assert "got TERM" in engine.run("logs", "kbt-paused", check=True).stdout
    finally:
        engine.run("rm", "-f", "kbt-paused", check=True)
