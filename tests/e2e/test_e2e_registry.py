"""Pull, push and login through kobakod against a real loopback docker-registry."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import docker
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from registry_fixtures import REGISTRY_BIN, Registry, htpasswd_auth  # noqa: E402

pytestmark = pytest.mark.skipif(not Path(REGISTRY_BIN).exists(),
                                reason="docker-registry is not installed")


@pytest.fixture
def registry(kobakod):
    with Registry(kobakod.base) as reg:
        yield reg


@pytest.fixture
def auth_registry(kobakod):
    auth = htpasswd_auth(kobakod.base, {"kbkuser": "kbk-secret"})
    with Registry(kobakod.base, auth=auth) as reg:
        yield reg


def _imported(kobakod, ref: str) -> str:
    return kobakod.import_busybox(ref)


def test_docker_push_rmi_pull_round_trip(kobakod, docker_cli, registry):
    ref = f"{registry.host}/kbk-e2e/busybox:1"
    image_id = _imported(kobakod, ref)
    out = kobakod.docker("push", ref).stdout.decode()
    assert "1: digest: sha256:" in out or "digest: sha256:" in out
    kobakod.docker("rmi", ref)
    out = kobakod.docker("pull", ref).stdout.decode()
    assert "Pull complete" in out or "Already exists" in out
    assert out.rstrip().endswith(ref)
    again = kobakod.docker("image", "inspect", "--format", "{{.Id}} {{json .RepoDigests}}",
                           ref).stdout.decode()
    got_id, digests = again.split(" ", 1)
    assert got_id == image_id
    assert json.loads(digests)[0].startswith(f"{registry.host}/kbk-e2e/busybox@sha256:")
    proc = kobakod.docker("pull", f"{registry.host}/kbk-e2e/missing:1", check=False)
    assert proc.returncode != 0 and b"manifest unknown" in proc.stderr
    assert b"Pulling from" not in proc.stdout  # the 404 is the response, as dockerd's
    # run of an image that is nowhere: not found locally, the pull's 404, exit 125
    proc = kobakod.docker("run", "--rm", f"{registry.host}/kbk-e2e/missing:1", "true",
                          check=False)
    assert proc.returncode == 125, proc
    assert b"Unable to find image" in proc.stderr and b"manifest unknown" in proc.stderr


def test_pull_progress_is_docker_json(kobakod, registry):
    ref = f"{registry.host}/kbk-e2e/progress:1"
    _imported(kobakod, ref)
    kobakod.docker("push", ref)
    kobakod.docker("rmi", ref)
    client = kobakod.docker_py()
    try:
        messages = list(client.api.pull(f"{registry.host}/kbk-e2e/progress", tag="1",
                                        stream=True, decode=True))
    finally:
        client.close()
    statuses = [m.get("status", "") for m in messages]
    assert any(s.startswith("Pulling from kbk-e2e/progress") for s in statuses), statuses
    assert any(s.startswith("Digest: sha256:") for s in statuses)
    assert any(s.startswith("Status: Downloaded newer image") for s in statuses)
    layer_msgs = [m for m in messages if m.get("id") and "progressDetail" in m]
    assert layer_msgs, messages
    assert not any("error" in m for m in messages)


def test_login_and_authenticated_push_pull(kobakod, docker_cli, auth_registry):
    host = auth_registry.host
    proc = kobakod.docker("login", "-u", "kbkuser", "--password-stdin", host,
                          input=b"wrong", check=False)
    assert proc.returncode != 0
    proc = kobakod.docker("login", "-u", "kbkuser", "--password-stdin", host,
                          input=b"kbk-secret")
    assert b"Login Succeeded" in proc.stdout
    ref = f"{host}/kbk-e2e/private:1"
    _imported(kobakod, ref)
    kobakod.docker("push", ref)
    kobakod.docker("rmi", ref)
    kobakod.docker("pull", ref)
    # kobako's own CLI reads the same docker config.json for its X-Registry-Auth
    kobakod.docker("rmi", ref)
    out = kobakod.kobako("pull", ref).stdout.decode()
    assert out.rstrip().endswith(ref)
    kobakod.docker("logout", host)
    kobakod.docker("rmi", ref)
    proc = kobakod.docker("pull", ref, check=False)
    assert proc.returncode != 0
    # the daemon's answer names the refusal; it is no 401, which would make the CLI
    # ask for a password ("Cannot perform an interactive login from a non TTY device")
    assert b"unauthorized" in proc.stderr, proc.stderr
    assert b"interactive login" not in proc.stderr


def test_kobako_cli_login_push_pull(kobakod, auth_registry):
    host = auth_registry.host
    out = kobakod.kobako("login", "-u", "kbkuser", "--password-stdin", host,
                         input=b"kbk-secret\n").stdout.decode()
    assert out.strip() == "Login Succeeded"
    cfg = json.loads((kobakod.docker_config / "config.json").read_text())
    assert host in cfg["auths"]
    ref = f"{host}/kbk-e2e/cli:1"
    kobakod.kobako("image", "bootstrap", "busybox", "--tag", ref)
    kobakod.kobako("push", ref)
    kobakod.kobako("rmi", ref)
    kobakod.kobako("pull", "-q", ref)
    assert kobakod.kobako("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.decode() \
        .split() == [ref]
    out = kobakod.kobako("logout", host).stdout.decode()
    assert out.strip() == f"Removing login credentials for {host}"
    proc = kobakod.kobako("login", "-u", "kbkuser", "--password-stdin", host,
                          input=b"nope\n", check=False)
    assert proc.returncode == 1
    assert proc.stderr.decode().startswith("Error response from daemon:")


def test_distribution_inspect(kobakod, registry):
    """GET /distribution/{name}/json (docker-py's get_registry_data): the registry's
    descriptor and platforms, without pulling; a missing image is a 404."""
    ref = f"{registry.host}/kbk-e2e/dist"
    _imported(kobakod, f"{ref}:1")
    kobakod.docker("push", f"{ref}:1")
    digest = kobakod.docker("image", "inspect", "--format", "{{index .RepoDigests 0}}",
                            f"{ref}:1").stdout.decode().strip().split("@")[1]
    client = kobakod.docker_py()
    try:
        data = client.images.get_registry_data(f"{ref}:1")
        assert data.id == digest
        assert data.has_platform("linux/amd64") or data.has_platform("linux/arm64")
        with pytest.raises(docker.errors.NotFound):
            client.images.get_registry_data(f"{ref}:nope")
    finally:
        client.close()


def test_docker_py_pull(kobakod, registry):
    ref = f"{registry.host}/kbk-e2e/py"
    _imported(kobakod, f"{ref}:1")
    kobakod.docker("push", f"{ref}:1")
    kobakod.docker("rmi", f"{ref}:1")
    client = kobakod.docker_py()
    try:
        img = client.images.pull(ref, tag="1")
        assert f"{ref}:1" in img.tags
        with pytest.raises(docker.errors.NotFound):
            client.images.pull(f"{registry.host}/kbk-e2e/nothing", tag="1")
    finally:
        client.close()
