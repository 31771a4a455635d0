"""Bad input: one line on stderr, a JSON error record in --log, a non-zero exit, and nothing
half-created (state directory, cgroup, mount, process)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from bundles import leaked_cgroups, processes_in_cgroups, wait_for


def assert_clean_failure(rt, proc, *fragments: str, container_id: str | None = None) -> str:
    assert proc.returncode != 0
    message = proc.stderr.strip()
    assert message and "\n" not in message, f"not one line: {proc.stderr!r}"
    assert "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, message
    record = rt.log_records()[-1]
    assert record["level"] == "error" and record["msg"] == message
    assert record["time"]
    if container_id is not None:
        assert container_id not in rt.state_dirs()
        assert leaked_cgroups(container_id) == []
        assert [p for p in processes_in_cgroups(container_id)
                if _alive(p)] == []
    return message


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def create(rt, bundle, container_id: str):
    return rt("create", "--bundle", bundle.path, container_id, check=False,
              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
              text=True)


def test_missing_config_json(rt, bundle):
    container_id = rt.new_id()
    proc = create(rt, bundle, container_id)
    assert_clean_failure(rt, proc, "config.json", container_id=container_id)


@pytest.mark.parametrize("text", ["{not json", "[]", '{"ociVersion": 5}', ""])
def test_invalid_config_json(rt, bundle, text):
    bundle.write(text)
    container_id = rt.new_id()
    assert_clean_failure(rt, create(rt, bundle, container_id), container_id=container_id)


def test_unknown_namespace_type(rt, bundle):
    bundle.linux["namespaces"].append({"type": "bogus"})
    bundle.write()
    container_id = rt.new_id()
    assert_clean_failure(rt, create(rt, bundle, container_id), "bogus",
                         container_id=container_id)


@pytest.mark.parametrize("mappings", [
    [{"containerID": 0, "hostID": 100000, "size": 0}],
    [{"containerID": 0, "hostID": 100000, "size": 10},
     {"containerID": 5, "hostID": 200000, "size": 10}],
    [{"containerID": 0, "hostID": 100000}],
    [{"containerID": 1, "hostID": 100000, "size": 10}],  # no root in the container
])
def test_invalid_id_mappings(rt, bundle, mappings):
    bundle.namespace("user")
    bundle.linux["uidMappings"] = mappings
    bundle.linux["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    bundle.write()
    container_id = rt.new_id()
    assert_clean_failure(rt, create(rt, bundle, container_id), "uidMappings",
                         container_id=container_id)


def test_id_mappings_without_a_user_namespace(rt, bundle):
    bundle.linux["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    bundle.write()
    container_id = rt.new_id()
    assert_clean_failure(rt, create(rt, bundle, container_id), container_id=container_id)


def test_missing_rootfs(rt, bundle, tmp_path):
    bundle.config["root"]["path"] = str(tmp_path / "no-such-rootfs")
    bundle.write()
    container_id = rt.new_id()
    assert_clean_failure(rt, create(rt, bundle, container_id), "rootfs",
                         container_id=container_id)


def test_invalid_container_id(rt, bundle):
    bundle.write()
    for bad in ("../escape", "a/b", ".."):
        proc = create(rt, bundle, bad)
        assert_clean_failure(rt, proc, "invalid container id")
    assert rt.state_dirs() == []


def test_id_already_in_use(rt, bundle):
    container_id, pid = rt.start_detached(bundle.args("sleep", "60"))
    before = sorted(os.listdir(os.path.join(rt.root, container_id)))
    proc = create(rt, bundle, container_id)
    assert_clean_failure(rt, proc, "exists", container_id)
    # the first container is untouched
    assert rt.state(container_id)["status"] == "running"
    assert rt.state(container_id)["pid"] == pid
    assert sorted(os.listdir(os.path.join(rt.root, container_id))) == before
    rt.delete(container_id)


def test_kill_on_a_stopped_container(rt, bundle):
    container_id, _ = rt.start_detached(bundle.args("true"))
    wait_for(lambda: rt.state(container_id)["status"] == "stopped", what="stopped")
    proc = rt("kill", container_id, "KILL", check=False)
    assert assert_clean_failure(rt, proc) == "container not running"
    rt.delete(container_id)


def test_kill_on_a_missing_container(rt):
    proc = rt("kill", f"{rt.prefix}-missing", "KILL", check=False)
    assert "does not exist" in assert_clean_failure(rt, proc)


def test_start_on_a_running_container(rt, bundle):
    container_id, _ = rt.start_detached(bundle.args("sleep", "60"))
    proc = rt("start", container_id, check=False)
    assert_clean_failure(rt, proc, "running")
    assert rt.state(container_id)["status"] == "running"
    rt.delete(container_id)


def test_unknown_signal(rt, bundle):
    container_id, _ = rt.start_detached(bundle.args("sleep", "60"))
    proc = rt("kill", container_id, "SIGBOGUS", check=False)
    assert_clean_failure(rt, proc, "SIGBOGUS")
    rt.delete(container_id)


def test_a_failing_process_reports_on_start_not_as_a_traceback(rt, bundle):
    bundle.args("/no/such/program")
    bundle.write()
    container_id = rt.new_id()
    proc = create(rt, bundle, container_id)
    assert_clean_failure(rt, proc, "/no/such/program", container_id=container_id)


def test_text_log_format(rt, bundle, tmp_path):
    log = tmp_path / "text.log"
    proc = subprocess.run(
        [*rt.argv()[:1], "--root", rt.root, "--log", str(log), "state", f"{rt.prefix}-x"],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode != 0
    line = log.read_text().strip()
    assert "level=error" in line and "does not exist" in line
    with pytest.raises(ValueError):
        json.loads(line)


def _mutate(bundle, change: str, tmp_path) -> None:
    if change == "missing bind source":
        bundle.add_mount("/mnt/x", "bind", str(tmp_path / "nope"), ["rbind"])
    elif change == "bad sysctl":
        bundle.linux["sysctl"] = {"net.kbt.no_such_key": "1"}
    elif change == "hostname without uts namespace":
        bundle.drop_namespace("uts")
        bundle.config["hostname"] = "kbt"
    elif change == "missing cwd":
        bundle.process["cwd"] = "/no/such/dir"
    elif change == "bad mount type":
        bundle.add_mount("/mnt/x", "kbtfs", "none")
    elif change == "no mount namespace":
        bundle.drop_namespace("mount")
    elif change == "rlimit unknown":
        bundle.process["rlimits"] = [{"type": "RLIMIT_KBT", "soft": 1, "hard": 1}]
    elif change == "bad capability":
        bundle.process["capabilities"]["bounding"].append("CAP_KBT")


@pytest.mark.parametrize("change", [
    "missing bind source", "bad sysctl", "hostname without uts namespace", "missing cwd",
    "bad mount type", "no mount namespace", "rlimit unknown", "bad capability",
])
def test_errors_inside_the_init_are_one_clean_line(rt, bundle, tmp_path, change):
    _mutate(bundle, change, tmp_path)
    bundle.write()
    container_id = rt.new_id()
    proc = create(rt, bundle, container_id)
    message = assert_clean_failure(rt, proc, container_id=container_id)
    assert "sync socket" not in message
    if change in ("bad mount type", "missing bind source"):
        assert "/mnt/x" in message or "nope" in message, message  # names the mount


def test_run_passes_the_exit_code(rt, bundle):
    assert rt.run(bundle.sh("exit 42"), check=False).returncode == 42
    # (the OOM test covers an init killed by a signal: 128 + 9)


def test_wrong_states(rt, bundle):
    container_id, _ = rt.start_detached(bundle.args("sleep", "60"))
    assert_clean_failure(rt, rt("resume", container_id, check=False), "not paused")
    rt("pause", container_id)
    assert_clean_failure(rt, rt("exec", container_id, "true", check=False), "paused")
    rt("resume", container_id)
    rt("kill", container_id, "SIGKILL")
    wait_for(lambda: rt.state(container_id)["status"] == "stopped", what="stopped")
    for args in (("pause", container_id), ("exec", container_id, "true"),
                 ("events", "--stats", container_id), ("start", container_id)):
        assert_clean_failure(rt, rt(*args, check=False))
    rt("delete", container_id)


def test_delete_force_cleans_up_after_a_runtime_killed_during_create(rt, bundle, tmp_path):
    # containerd kills a runtime that takes too long; what it leaves must be deletable
    marker = tmp_path / "hook.pid"
    bundle.config["hooks"] = {"createRuntime": [{
        "path": "/bin/sh", "args": ["sh", "-c", f"echo $$ > {marker}; exec /bin/sleep 30"],
    }]}
    bundle.args("sleep", "60").write()
    container_id = rt.new_id()
    with open(bundle.out, "wb") as out:
        create = subprocess.Popen(rt.argv("create", "--bundle", bundle.path, container_id),
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        wait_for(lambda: marker.exists() and marker.read_text().strip(), what="the hook")
        state = rt.state(container_id)
        assert (state["status"], state["pid"]) == ("creating", 0)
        # no pid yet: kill must not fall back to kill(0, ...), our own process group
        assert_clean_failure(rt, rt("kill", container_id, "KILL", check=False),
                             "container not running")
        assert [d["id"] for d in json.loads(rt("list", "--format", "json").stdout)] == [
            container_id]
        create.kill()
        create.wait()
    finally:
        hook = int(marker.read_text()) if marker.exists() and marker.read_text().strip() else 0
        if hook:
            os.kill(hook, 9)  # the hook we made: it outlives the killed runtime
    rt("delete", "--force", container_id)
    assert rt.state_dirs() == []
    assert leaked_cgroups(container_id) == []


@pytest.mark.parametrize("flags", [["--user", "bogus"], ["--user", "1:x"],
                                   ["--additional-gids", "wheel"], ["--cwd", "relative"]])
def test_bad_exec_flags(rt, bundle, flags):
    container_id, _ = rt.start_detached(bundle.args("sleep", "60"))
    proc = rt("exec", *flags, container_id, "true", check=False)
    assert_clean_failure(rt, proc)
    rt.delete(container_id)


def test_unwritable_pid_file_undoes_create(rt, bundle, tmp_path):
    bundle.args("sleep", "60").write()
    container_id = rt.new_id()
    proc = rt("create", "--bundle", bundle.path, "--pid-file", str(tmp_path / "no" / "pid"),
              container_id, check=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
              stderr=subprocess.PIPE, text=True)
    assert_clean_failure(rt, proc, "pid", container_id=container_id)


def test_a_cgroup_that_refuses_the_init_fails_the_create_without_a_hang(rt, bundle,
                                                                         monkeypatch):
    """Stage 1 waits for "go" until it is in its cgroup: a refusal must end it (a v2
    host's threaded-domain cgroup hung the create forever)."""
    import signal

    from kobako.linux.cgroups.errors import CgroupError
    from kobako.linux.cgroups.v1 import V1Manager
    from kobako.linux.cgroups.v2 import V2Manager
    from kobako.runtime.container import Runtime as InProcessRuntime

    def refuse(self, pid: int) -> None:
        raise CgroupError("cannot add the process: Operation not supported")

    for cls in (V1Manager, V2Manager):
        monkeypatch.setattr(cls, "add", refuse)
    bundle.args("true").write()
    container_id = rt.new_id()
    signal.alarm(30)  # a regression hangs here: let it fail instead
    try:
        with pytest.raises(Exception, match="Operation not supported"):
            InProcessRuntime(rt.root).create(container_id, bundle.path)
    finally:
        signal.alarm(0)
    assert container_id not in rt.state_dirs()
    assert leaked_cgroups(container_id) == []
