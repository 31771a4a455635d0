"""API semantics that docker-py (and its own integration suite) relies on, as dockerd has
them: exec framing by the start's Tty, kill waits for the exit, attach replays logs,
restarting containers, JSON field names in any case, link removal, old-API prunes."""

from __future__ import annotations

import io
import secrets
import socket

import docker
import pytest
from daemon_fixture import wait_until

from kobako.api.streams import parse_frames


@pytest.fixture(scope="module")
def client(engine):
    c = engine.docker_py()
    yield c
    c.close()


def _name() -> str:
    return "kbp-" + secrets.token_hex(4)


def test_exec_framing_follows_the_start_tty(client):
    container = client.containers.run("busybox", ["sleep", "1000"], detach=True, name=_name())
    try:
        exec_id = client.api.exec_create(container.id, ["echo", "abc"], tty=True)["Id"]
        sock = client.api.exec_start(exec_id, tty=False, socket=True)
        data = b""
        while chunk := sock._sock.recv(4096):
            data += chunk
        sock.close()
        # multiplexed (stdout frame header) though the process has a terminal
        assert data.startswith(b"\x01\x00\x00\x00") and b"abc" in data
        exec_id = client.api.exec_create(container.id, ["echo", "abc"], tty=True)["Id"]
        assert client.api.exec_start(exec_id, tty=True).startswith(b"abc")
    finally:
        container.remove(force=True)


def test_stdin_without_a_terminal_is_data_and_an_exec_client_leaving_closes_it(engine,
                                                                               client):
    # ctrl-p ctrl-q are detach keys only on a terminal: here they reach the process
    out = engine.docker("run", "-i", "--rm", "busybox", "od", "-An", "-tx1",
                        input=b"\x10\x11\n").stdout
    assert out.split() == [b"10", b"11", b"0a"]
    container = client.containers.run("busybox", ["sleep", "1000"], detach=True, name=_name())
    try:
        exec_id = client.api.exec_create(container.id, ["cat"], stdin=True)["Id"]
        sock = client.api.exec_start(exec_id, socket=True)
        wait_until(lambda: client.api.exec_inspect(exec_id)["Running"], 20)
        sock._sock.close()  # gone, not half-closed: dockerd closes the exec's stdin
        sock.close()
        wait_until(lambda: not client.api.exec_inspect(exec_id)["Running"], 20)
        assert client.api.exec_inspect(exec_id)["ExitCode"] == 0
    finally:
        container.remove(force=True)


def test_kill_returns_once_the_container_is_dead(client):
    container = client.containers.run("busybox", ["sleep", "1000"], detach=True, name=_name())
    container.kill()
    container.reload()
    assert container.status == "exited" and container.attrs["State"]["ExitCode"] == 137
    container.remove()  # no 409: it is not running any more


def test_attach_with_logs_and_no_stream_replays_the_log(engine, client):
    container = client.containers.run("busybox", ["sh", "-c", "echo one; echo two >&2"],
                                      detach=True, name=_name())
    try:
        assert container.wait(timeout=30)["StatusCode"] == 0
        # on a raw connection: docker-py's http.client may read the first frames into
        # its buffer together with the 101 head, and then not hand them on
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(str(engine.sock))
        sock.sendall(f"POST /v1.45/containers/{container.id}/attach?logs=1&stream=0&stdout=1"
                     "&stderr=1 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                     "Upgrade: tcp\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):  # the daemon closes after the log
            data += chunk
        sock.close()
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        frames, rest = parse_frames(body)
        assert sorted(frames) == [(1, b"one\n"), (2, b"two\n")] and rest == b""
    finally:
        container.remove(force=True)


def test_a_restarting_container_is_running_and_removed_only_by_force(client):
    container = client.containers.run("busybox", ["sh", "-c", "exit 1"], detach=True,
                                      name=_name(), restart_policy={"Name": "always"})
    try:
        def restarting() -> dict | None:
            doc = client.api.inspect_container(container.id)
            # by the fourth restart the back-off is 0.8 s: time to look at it
            return doc if doc["State"]["Restarting"] and doc["RestartCount"] >= 3 else None

        doc = wait_until(restarting, timeout=20, interval=0.02)
        assert doc["State"]["Running"] is True and doc["State"]["Status"] == "restarting"
        assert container.id in [c["Id"] for c in client.api.containers()]  # as `docker ps`
        with pytest.raises(docker.errors.APIError) as info:
            container.remove()
        assert info.value.status_code == 409
        assert "cannot remove a restarting container" in str(info.value)
    finally:
        container.remove(force=True)


def test_json_field_names_match_in_any_case(client):
    container = client.containers.run("busybox", ["sleep", "1000"], detach=True, name=_name())
    try:
        resp = client.api._post_json(client.api._url("/containers/{0}/exec", container.id),
                                     data={"cmd": ["true"], "detachKeys": "ctrl-x",
                                           "attachStdout": True})
        exec_id = client.api._result(resp, True)["Id"]
        doc = client.api.exec_inspect(exec_id)
        assert doc["DetachKeys"] == "ctrl-x" and doc["OpenStdout"] is True
        assert doc["ProcessConfig"]["entrypoint"] == "true"
    finally:
        container.remove(force=True)


def test_commit_of_a_container_that_just_exited(client):
    container = client.containers.run("busybox", ["sh", "-c", "echo x > /made"],
                                      detach=True, name=_name())
    try:
        container.wait(timeout=30)
        image = container.commit(repository="kbp-commit", tag="1")  # pause=True by default
        assert client.containers.run(image.id, ["cat", "/made"], remove=True) == b"x\n"
        client.images.remove(image.id)
    finally:
        container.remove(force=True)


def test_removing_a_legacy_link(engine, client):
    target = client.containers.run("busybox", ["sleep", "1000"], detach=True, name=_name())
    parent = client.containers.create("busybox", ["true"], name=_name(),
                                      links={target.name: "db"})
    try:
        assert client.api.inspect_container(parent.id)["HostConfig"]["Links"]
        client.api.remove_container(f"/{parent.name}/db", link=True)
        assert not client.api.inspect_container(parent.id)["HostConfig"]["Links"]
        with pytest.raises(docker.errors.NotFound):
            client.api.remove_container(f"/{parent.name}/db", link=True)
    finally:
        parent.remove(force=True)
        target.remove(force=True)


def test_a_volume_created_without_a_name_is_anonymous_and_pruned(client):
    volume = client.volumes.create()
    assert volume.attrs["Labels"] == {"com.docker.volume.anonymous": ""}
    assert volume.name in (client.volumes.prune().get("VolumesDeleted") or [])


def test_volume_prune_of_an_old_api_client_takes_named_volumes_too(engine):
    new, old = engine.docker_py(), engine.docker_py(version="1.41")
    try:
        name = "kbp-vol-" + secrets.token_hex(4)
        new.volumes.create(name)
        assert name not in (new.volumes.prune().get("VolumesDeleted") or [])
        assert name in (old.volumes.prune().get("VolumesDeleted") or [])
    finally:
        new.close()
        old.close()


def test_build_with_repeated_extra_hosts(client):
    dockerfile = b"FROM busybox\nRUN cat /etc/hosts > /hosts\n"
    image, _ = client.images.build(fileobj=io.BytesIO(dockerfile), tag="kbp-hosts:1",
                                   extra_hosts={"one.test": "10.9.8.7", "two.test": "10.9.8.6"})
    try:
        hosts = client.containers.run(image.id, ["cat", "/hosts"], remove=True).decode()
        assert "one.test" in hosts and "two.test" in hosts
    finally:
        client.images.remove(image.id, force=True)


def test_network_names_ipam_echo_auxiliary_addresses_and_mac(client):
    from docker.types import IPAMConfig, IPAMPool

    ipam = IPAMConfig(pool_configs=[IPAMPool(
        subnet="10.231.0.0/24", iprange="10.231.0.0/28", gateway="10.231.0.254",
        aux_addresses={"router": "10.231.0.1"})])
    net = client.networks.create("kbp net " + secrets.token_hex(2), ipam=ipam)
    try:
        doc = client.api.inspect_network(net.id)
        assert doc["IPAM"]["Options"] is None  # as sent
        assert doc["IPAM"]["Config"] == [{
            "Subnet": "10.231.0.0/24", "IPRange": "10.231.0.0/28",
            "Gateway": "10.231.0.254", "AuxiliaryAddresses": {"router": "10.231.0.1"}}]
        out = client.containers.run(
            "busybox", ["sh", "-c", "cat /sys/class/net/eth0/address; ip -4 -o addr show eth0"],
            network=net.name, mac_address="02:42:0a:e7:00:77", remove=True).decode()
        assert out.splitlines()[0] == "02:42:0a:e7:00:77"
        assert "10.231.0.2/24" in out  # .1 is the auxiliary address: never handed out
    finally:
        net.remove()


def test_build_drops_an_excluded_dockerfile_and_dockerignore(client, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM busybox\nCOPY . /ctx\n")
    (tmp_path / ".dockerignore").write_text("Dockerfile\n.dockerignore\n")
    (tmp_path / "kept").write_text("x")
    image, _ = client.images.build(path=str(tmp_path), tag="kbp-ignore:1")
    try:
        listing = client.containers.run(image.id, ["ls", "-a", "/ctx"], remove=True).split()
        assert b"kept" in listing
        assert b"Dockerfile" not in listing and b".dockerignore" not in listing
    finally:
        client.images.remove(image.id, force=True)


def test_links_of_an_endpoint_resolve_for_that_container(client):
    net = client.networks.create("kbp-links-" + secrets.token_hex(2))
    target = client.containers.run("busybox", ["sleep", "1000"], detach=True, name=_name(),
                                   network=net.name)
    try:
        asking = client.api.create_container(
            "busybox", ["nslookup", "db"], name=_name(),
            networking_config=client.api.create_networking_config({
                net.name: client.api.create_endpoint_config(links={target.name: "db"})}))
        client.api.start(asking["Id"])
        assert client.api.wait(asking["Id"], timeout=30)["StatusCode"] == 0
        client.api.remove_container(asking["Id"])
    finally:
        target.remove(force=True)
        net.remove()


def test_runtime_names_and_prune_reports_what_it_freed(client):
    with pytest.raises(docker.errors.APIError) as info:
        client.containers.create("busybox", ["true"], runtime="no-such-runtime")
    assert info.value.status_code == 400 and "Unknown runtime specified" in str(info.value)
    container = client.containers.create("busybox", ["sh", "-c", "head -c 300000 /dev/zero > /f"],
                                         runtime="runc", name=_name())
    assert container.attrs["HostConfig"]["Runtime"] == "runc"
    container.start()
    container.wait(timeout=30)
    report = client.containers.prune()
    assert container.id in report["ContainersDeleted"]
    if client.info()["Driver"] == "overlay2":  # its writable layer held the file
        assert report["SpaceReclaimed"] >= 300000


def test_build_output_shows_run_stderr_in_red(client):
    dockerfile = b"FROM busybox\nRUN echo out; echo err >&2\n"
    lines = list(client.api.build(fileobj=io.BytesIO(dockerfile), decode=True, rm=True,
                                  tag="kbp-stderr:1"))
    streams = "".join(line.get("stream", "") for line in lines)
    assert "out\n" in streams and "\x1b[91merr\n\x1b[0m" in streams
    client.images.remove("kbp-stderr:1", force=True)


def test_build_steps_are_images_and_cache_from_limits_the_cache(client):
    """As dockerd's classic builder: every step (ENV too) is an image, so a rebuild
    takes each from the cache, and history names them; with cache_from only those
    images' steps are reused."""
    dockerfile = b"FROM busybox\nENV FOO=bar\nRUN touch baz\nRUN touch bax\n"

    def cached_steps(**options) -> int:
        chunks = client.api.build(fileobj=io.BytesIO(dockerfile), decode=True, **options)
        return sum("Using cache" in chunk.get("stream", "") for chunk in chunks)

    try:
        cached_steps(tag="kbp-cache:1")
        assert cached_steps(tag="kbp-cache:2", cache_from=["kbp-cache:1"]) == 3
        assert cached_steps(tag="kbp-cache:3", cache_from=["kbp-nosuchtag"]) == 0
        history = client.api.history("kbp-cache:1")
        assert [h["CreatedBy"].split()[-1] for h in history[:3]] == ["bax", "baz", "FOO=bar"]
        assert all(h["Id"].startswith("sha256:") for h in history[:4])  # busybox's too
        assert history[0]["Tags"] == ["kbp-cache:1", "kbp-cache:2"]
    finally:
        for tag in ("kbp-cache:1", "kbp-cache:2", "kbp-cache:3"):
            client.images.remove(tag, force=True)


def test_loading_what_is_no_archive_is_an_image_load_error(client):
    """dockerd answers 200 and puts the error in the stream: docker-py's ImageLoadError."""
    for data in (b"abc", b"\x1f\x8b" + b"\x00" * 100):  # no tar; a broken gzip
        with pytest.raises(docker.errors.ImageLoadError):
            client.images.load(data)
