"""OCI hooks: each gets the state JSON on stdin; a failing or slow one fails create cleanly."""

from __future__ import annotations

import json
import os
import time

import pytest

HOST_HOOKS = ("prestart", "createRuntime", "createContainer", "poststart", "poststop")


def capture_hook(directory: str, kind: str) -> dict:
    """A hook that saves its stdin to <directory>/<kind>.json (an empty env: absolute paths)."""
    return {"path": "/bin/sh", "args": ["sh", "-c", f"/bin/cat > {directory}/{kind}.json"]}


def test_every_hook_gets_the_state_on_stdin(rt, bundle, tmp_path):
    out = tmp_path / "hooks"
    out.mkdir()
    bundle.add_mount("/mnt/hooks", "bind", str(out), ["rbind", "rw"])
    hooks = {kind: [capture_hook(str(out), kind)] for kind in HOST_HOOKS}
    # startContainer runs inside the container, after pivot_root: container paths
    hooks["startContainer"] = [capture_hook("/mnt/hooks", "startContainer")]
    bundle.config["hooks"] = hooks
    bundle.config["annotations"] = {"kbt.test": "hooks"}
    rt.run(bundle.args("true"))
    container_id = rt.ids[-1]
    seen = {}
    for kind in (*HOST_HOOKS, "startContainer"):
        path = out / f"{kind}.json"
        assert path.exists(), f"{kind} hook did not run"
        seen[kind] = json.loads(path.read_text())
    for kind, state in seen.items():
        assert state["id"] == container_id, kind
        assert state["bundle"] == bundle.path, kind
        assert state["annotations"] == {"kbt.test": "hooks"}, kind
        assert state["ociVersion"], kind
    for kind in ("prestart", "createRuntime", "createContainer", "startContainer", "poststart"):
        assert seen[kind]["pid"] > 0, kind
    assert seen["poststart"]["status"] == "running"
    assert seen["poststop"]["status"] == "stopped"
    assert seen["createRuntime"]["status"] == "creating"
    # hooks run in order: each file was written after the previous one (startContainer,
    # run by the init once `start` has released it, races poststart, as in runc)
    for order in (["createRuntime", "createContainer", "startContainer", "poststop"],
                  ["createRuntime", "createContainer", "poststart", "poststop"]):
        times = [os.stat(out / f"{kind}.json").st_mtime_ns for kind in order]
        assert times == sorted(times), order


@pytest.mark.parametrize("kind", ["prestart", "createRuntime", "createContainer"])
def test_a_failing_hook_fails_create_and_leaves_nothing(rt, bundle, kind):
    bundle.config["hooks"] = {kind: [{"path": "/bin/false"}]}
    container_id = rt.new_id()
    bundle.write()
    proc = rt("create", "--bundle", bundle.path, container_id, check=False)
    assert proc.returncode != 0
    assert kind in proc.stderr and "/bin/false" in proc.stderr, proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert rt.state_dirs() == []
    assert rt("state", container_id, check=False).returncode != 0


def test_a_hook_past_its_timeout_is_killed_and_fails_create(rt, bundle, tmp_path):
    late = tmp_path / "late"
    bundle.config["hooks"] = {"prestart": [{
        "path": "/bin/sh", "args": ["sh", "-c", f"/bin/sleep 2; echo > {late}"], "timeout": 1,
    }]}
    container_id = rt.new_id()
    bundle.write()
    started = time.monotonic()
    proc = rt("create", "--bundle", bundle.path, container_id, check=False)
    assert proc.returncode != 0
    assert time.monotonic() - started < 1.9
    assert "timed out" in proc.stderr, proc.stderr
    assert rt.state_dirs() == []
    time.sleep(1.5)
    assert not late.exists()  # the hook was killed, not left to run on


def test_a_start_container_hook_alone_runs_inside_the_container(rt, bundle, tmp_path):
    # nothing else has run a hook before pivot_root: the init must still be able to
    out = tmp_path / "hooks"
    out.mkdir()
    bundle.add_mount("/mnt/hooks", "bind", str(out), ["rbind", "rw"])
    bundle.config["hooks"] = {"startContainer": [capture_hook("/mnt/hooks", "startContainer")]}
    rt.run(bundle.args("true"))
    assert json.loads((out / "startContainer.json").read_text())["id"] == rt.ids[-1]


def test_a_missing_hook_binary_fails_create_cleanly(rt, bundle):
    bundle.config["hooks"] = {"createRuntime": [{"path": "/no/such/hook"}]}
    bundle.write()
    proc = rt("create", "--bundle", bundle.path, rt.new_id(), check=False)
    assert proc.returncode != 0
    assert "/no/such/hook" in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert rt.state_dirs() == []


def test_a_failing_poststop_hook_does_not_stop_delete(rt, bundle):
    bundle.config["hooks"] = {"poststop": [{"path": "/bin/false"}],
                              "poststart": [{"path": "/bin/false"}]}
    container_id, _ = rt.start_detached(bundle.args("sleep", "60"))
    rt("delete", "--force", container_id)
    assert rt.state_dirs() == []
    levels = [record["level"] for record in rt.log_records()]
    assert "warning" in levels and "error" not in levels
