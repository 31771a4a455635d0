"""kobakod driven by the real docker CLI and docker-py: system endpoints and lifecycle."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import time

import docker
import pytest
from daemon_fixture import KOBAKOD, Daemon


def test_docker_version_negotiates_down(kobakod, docker_cli):
    out = kobakod.docker("version", "--format", "{{json .}}").stdout
    doc = json.loads(out)
    assert doc["Server"]["ApiVersion"] == "1.47"
    assert doc["Server"]["MinAPIVersion"] == "1.24"
    assert doc["Client"]["ApiVersion"] == "1.47"  # negotiated down from the CLI's own
    plain = kobakod.docker("version").stdout.decode()
    assert "kobako Engine" in plain


def test_too_old_api_version_is_refused(kobakod, docker_cli):
    env = kobakod.env()
    env["DOCKER_API_VERSION"] = "1.12"
    proc = kobakod.docker("version", env=env, check=False)
    assert proc.returncode != 0
    assert b"too old" in proc.stderr


def test_docker_info_fields(kobakod, docker_cli):
    doc = json.loads(kobakod.docker("info", "--format", "{{json .}}").stdout)
    assert doc["OSType"] == "linux"
    assert doc["DockerRootDir"] == str(kobakod.data_root)
    assert doc["CgroupDriver"] == "cgroupfs" and doc["CgroupVersion"] in ("1", "2")
    assert doc["DefaultRuntime"] == "kobako-runtime"
    assert doc["NCPU"] == os.cpu_count()
    assert doc["KernelVersion"] == os.uname().release
    assert doc["LoggingDriver"] == "json-file"
    text = kobakod.docker("info").stdout.decode()
    assert "Security Options:" in text and "seccomp" in text
    assert "Cgroup Driver: cgroupfs" in text


def test_docker_py_ping_version_info(kobakod):
    client = kobakod.docker_py()
    try:
        assert client.ping() is True
        assert client.version()["ApiVersion"] == "1.47"
        assert client.info()["Driver"] in ("overlay2", "vfs")
        pinned = docker.DockerClient(base_url=kobakod.host, version="1.41")
        assert pinned.version()["Os"] == "linux"
        pinned.close()
        # docker-py's test teardown: a forced leave on a 503 counts as done
        assert client.api.leave_swarm(force=True) is True
        with pytest.raises(docker.errors.APIError) as info:
            client.api.leave_swarm(force=False)
        assert info.value.status_code == 503
        assert "not part of a swarm" in str(info.value)
    finally:
        client.close()


def _raw(sock_path: str, request: bytes) -> bytes:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(sock_path)
    s.sendall(request)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return data


def test_malformed_requests_are_answered_and_the_daemon_goes_on(kobakod):
    sock = str(kobakod.sock)
    bad_json = b"{nope"
    resp = _raw(sock, b"POST /v1.45/containers/create HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\nConnection: close\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(bad_json), bad_json))
    assert resp.startswith(b"HTTP/1.1 400")
    assert b'"message"' in resp
    wrong = b'{"Image": 5}'
    resp = _raw(sock, b"POST /containers/create HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(wrong), wrong))
    assert resp.startswith(b"HTTP/1.1 400")
    resp = _raw(sock, b"GARBAGE\r\n\r\n")
    assert resp.startswith(b"HTTP/1.") and b" 400 " in resp.split(b"\r\n")[0]
    huge = b"X-Big: " + b"a" * 200_000
    resp = _raw(sock, b"GET /_ping HTTP/1.1\r\nHost: x\r\n" + huge + b"\r\n\r\n")
    assert b" 4" in resp.split(b"\r\n")[0]  # refused with a 4xx
    # a client that disconnects in the middle of a request body
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock)
    s.sendall(b"POST /images/load HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc")
    s.close()
    assert kobakod.ping()
    assert kobakod.docker_py().ping()


def test_socket_permissions_and_pidfile(kobakod):
    st = os.stat(kobakod.sock)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_uid == 0
    assert int(kobakod.pidfile.read_text()) == kobakod.proc.pid


def test_sigterm_stops_cleanly(docker_cli):
    daemon = Daemon().start()
    try:
        assert daemon.sock.exists() and daemon.pidfile.exists()
        assert daemon.terminate() == 0
        assert not daemon.sock.exists()
        assert not daemon.pidfile.exists()
        assert "Traceback" not in daemon.log()
        # and it starts again on the same state
        daemon.start()
        assert daemon.ping()
    finally:
        daemon.stop()


def test_two_daemons_side_by_side(docker_cli):
    a, b = Daemon().start(), None
    try:
        b = Daemon().start()
        ia = json.loads(a.docker("info", "--format", "{{json .}}").stdout)
        ib = json.loads(b.docker("info", "--format", "{{json .}}").stdout)
        assert ia["ID"] != ib["ID"]
        assert ia["DockerRootDir"] != ib["DockerRootDir"]
    finally:
        a.stop()
        if b is not None:
            b.stop()


def test_second_daemon_on_same_data_root_is_refused(kobakod):
    other = Daemon()
    try:
        cmd = [KOBAKOD, "-H", other.host, "--data-root", str(kobakod.data_root),
               "--exec-root", str(other.exec_root), "--pidfile", str(other.pidfile)]
        proc = subprocess.run(cmd, capture_output=True, timeout=30)
        assert proc.returncode == 1
        assert b"already using data-root" in proc.stderr
        assert not other.sock.exists()
        assert kobakod.ping()
    finally:
        other.stop()


def test_tcp_without_tls_is_refused():
    other = Daemon()
    try:
        cmd = [KOBAKOD, "-H", "tcp://127.0.0.1:23750", "--data-root", str(other.data_root),
               "--exec-root", str(other.exec_root), "--pidfile", str(other.pidfile)]
        proc = subprocess.run(cmd, capture_output=True, timeout=30)
        assert proc.returncode == 1
        assert b"TLS" in proc.stderr and b"client certificates" in proc.stderr
    finally:
        other.stop()


def test_run_through_the_api_with_docker_and_kobako(kobakod, docker_cli):
    """Attach, wait and start wired to the engine: output, stdin and exit codes."""
    from daemon_fixture import busybox_rootfs_tar

    tar = busybox_rootfs_tar(str(kobakod.base / "bb.tar"))
    kobakod.docker("import", "--change", 'CMD ["sh"]', tar, "kbk-e2e-run:1")
    # --pull never: a test must never reach out to a public registry
    proc = kobakod.docker("run", "--pull", "never", "--rm", "kbk-e2e-run:1", "echo", "hello")
    assert proc.stdout == b"hello\n"
    proc = kobakod.docker("run", "--pull", "never", "--rm", "kbk-e2e-run:1", "sh", "-c",
                          "echo oops >&2; exit 3", check=False)
    assert proc.returncode == 3 and proc.stderr == b"oops\n"
    proc = kobakod.docker("run", "--pull", "never", "-i", "--rm", "kbk-e2e-run:1", "cat",
                          input=b"piped\n")
    assert proc.stdout == b"piped\n"
    proc = kobakod.kobako("run", "--rm", "kbk-e2e-run:1", "echo", "from-kobako")
    assert proc.stdout == b"from-kobako\n"
    proc = kobakod.kobako("run", "--rm", "kbk-e2e-run:1", "sh", "-c", "exit 7", check=False)
    assert proc.returncode == 7
    proc = kobakod.kobako("run", "--pull", "never", "--rm", "kbk-e2e-no-such-image:1", "true",
                          check=False)
    assert proc.returncode == 125
    assert proc.stderr.decode().startswith("Error response from daemon:")


def test_events_stream_with_since_until_and_filter(kobakod, docker_cli, tmp_path):
    from daemon_fixture import busybox_rootfs_tar

    since = time.time() - 1
    tar = busybox_rootfs_tar(str(kobakod.base / "bb.tar"))
    kobakod.docker("import", tar, "kbk-e2e-ev:1")
    kobakod.docker("tag", "kbk-e2e-ev:1", "kbk-e2e-ev:2")
    until = time.time() + 1
    out = kobakod.docker("events", "--since", f"{since:.3f}", "--until", f"{until:.3f}",
                         "--filter", "type=image", "--filter", "event=tag",
                         "--format", "{{json .}}").stdout.decode()
    events = [json.loads(x) for x in out.splitlines() if x.strip()]
    assert [e["Action"] for e in events] == ["tag"]
    assert events[0]["Actor"]["Attributes"]["name"] == "kbk-e2e-ev:2"


def test_sigint_also_stops(docker_cli):
    daemon = Daemon().start()
    try:
        os.kill(daemon.proc.pid, signal.SIGINT)
        assert daemon.proc.wait(15) == 0
        assert not daemon.sock.exists()
    finally:
        daemon.stop()


def test_systemd_socket_activation_fd_host():
    """-H fd:// serves the sockets systemd passes (LISTEN_PID/LISTEN_FDS), as the unit does."""
    other = Daemon()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        path = str(other.base / "activated.sock")
        listener.bind(path)
        listener.listen(16)

        def as_fd3() -> None:
            os.dup2(listener.fileno(), 3)

        cmd = ["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"', "sh", KOBAKOD, "-H", "fd://",
               "--data-root", str(other.data_root), "--exec-root", str(other.exec_root),
               "--pidfile", str(other.pidfile)]
        proc = subprocess.Popen(cmd, preexec_fn=as_fd3, pass_fds=(3,),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        other.proc = proc
        from kobako.client.api import APIClient
        from kobako.client.errors import DaemonUnreachable

        client = APIClient(f"unix://{path}", timeout=5)
        deadline = time.monotonic() + 20
        version = None
        while time.monotonic() < deadline and version is None:
            try:
                version = client.get_json("/version")
            except DaemonUnreachable:
                time.sleep(0.1)
        assert version is not None and version["Os"] == "linux"
        assert other.terminate() == 0
        assert os.path.exists(path)  # the socket belongs to systemd: left in place
    finally:
        listener.close()
        other.stop()
