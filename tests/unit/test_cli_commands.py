"""The kobako CLI end to end against the real API app with fake services."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
from test_api_fakes import FakeContainers, ServerThread
from test_api_images import FakeImages

from kobako.api.context import Context
from kobako.api.services import UnavailableContainerService
from kobako.cli.main import main


@pytest.fixture
def daemon(tmp_path):
    fake, images = FakeContainers(), FakeImages()
    ctx = Context(containers=fake, images=images)  # type: ignore[arg-type]
    sock = str(tmp_path / "api.sock")
    with ServerThread(ctx, sock) as srv:
        yield srv, fake, images, f"unix://{sock}"


def kobako(host: str, *argv: str) -> int:
    return main(["-H", host, *argv])


def test_images_table_and_quiet(daemon, capsys):
    srv, fake, images, host = daemon
    assert kobako(host, "images") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert out[0].startswith("REPOSITORY   TAG       IMAGE ID       CREATED")
    assert out[1].split()[:3] == ["busybox", "latest", "111111111111"]
    assert kobako(host, "image", "ls", "-q") == 0
    assert capsys.readouterr().out == "111111111111\n"
    assert kobako(host, "images", "--format", "{{.Repository}}:{{.Tag}}") == 0
    assert capsys.readouterr().out == "busybox:latest\n"


def test_image_inspect_format_and_missing(daemon, capsys):
    srv, fake, images, host = daemon
    assert kobako(host, "image", "inspect", "--format", "{{json .RepoTags}}", "busybox") == 0
    assert capsys.readouterr().out == '["busybox:latest"]\n'
    assert kobako(host, "image", "inspect", "busybox", "nope") == 1
    cap = capsys.readouterr()
    assert '"RepoTags"' in cap.out and "Error: No such image: nope" in cap.err


def test_tag_rmi_pull_output(daemon, capsys, monkeypatch, tmp_path):
    srv, fake, images, host = daemon
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dockercfg"))
    assert kobako(host, "tag", "busybox", "127.0.0.1:5000/x/y:v1") == 0
    assert images.calls[-1] == ("tag", "busybox", "127.0.0.1:5000/x/y:v1")
    assert kobako(host, "rmi", "busybox") == 0
    assert capsys.readouterr().out.splitlines() == [
        "Untagged: busybox", "Deleted: sha256:" + "1" * 64]
    assert kobako(host, "pull", "busybox") == 0
    out = capsys.readouterr().out
    assert "Using default tag: latest" in out and "Pull complete" in out
    assert out.rstrip().endswith("docker.io/library/busybox:latest")


def test_container_inspect_format_ps_and_logs(daemon, capsys):
    srv, fake, images, host = daemon
    assert kobako(host, "create", "--name", "web1", "busybox", "true") == 0
    assert capsys.readouterr().out.strip() == "c" * 64
    assert kobako(host, "inspect", "--format", "{{.State.Pid}}", "web1") == 0
    assert capsys.readouterr().out == "42\n"
    assert kobako(host, "ps", "-a") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("CONTAINER ID   IMAGE     COMMAND   CREATED   STATUS")
    assert lines[1].split()[0] == "c" * 12
    assert kobako(host, "ps", "-aq") == 0
    assert capsys.readouterr().out == "c" * 12 + "\n"
    assert kobako(host, "logs", "web1") == 0
    cap = capsys.readouterr()
    assert cap.out == "out line\n" and cap.err == "err line\n"


def test_errors_are_one_line_and_nonzero(daemon, capsys):
    srv, fake, images, host = daemon
    assert kobako(host, "stop", "nope") == 1
    assert capsys.readouterr().err == "Error response from daemon: No such container: nope\n"
    assert kobako(host, "inspect", "nope") == 1
    assert "No such object: nope" in capsys.readouterr().err


def test_run_detached_and_attached_exit_code(daemon, capsys):
    srv, fake, images, host = daemon
    assert kobako(host, "run", "-d", "--name", "bg1", "busybox", "sleep", "1") == 0
    assert capsys.readouterr().out.strip() == "c" * 64
    create = [c for c in fake.calls if c[0] == "create"][-1]
    assert create[1][0]["Cmd"] == ["sleep", "1"]
    threading.Timer(0.5, lambda: srv.loop.call_soon_threadsafe(fake.exit_event.set)).start()
    rc = kobako(host, "run", "--name", "fg1", "busybox", "echo", "hi")
    assert rc == 3  # the container's exit code (fake wait answers 3)
    assert "hello" in capsys.readouterr().out


def test_exec_streams_output(daemon, capsys):
    srv, fake, images, host = daemon
    kobako(host, "create", "--name", "ex1", "busybox")
    capsys.readouterr()
    threading.Timer(0.5, lambda: srv.loop.call_soon_threadsafe(fake.exit_event.set)).start()
    assert kobako(host, "exec", "ex1", "ls", "-l") == 0
    assert "hello" in capsys.readouterr().out
    assert [c for c in fake.calls if c[0] == "exec_create"][-1][1][1]["Cmd"] == ["ls", "-l"]


def test_run_against_engine_without_containers_is_125(tmp_path, capsys):
    ctx = Context(containers=UnavailableContainerService())  # type: ignore[arg-type]
    sock = str(tmp_path / "api.sock")
    with ServerThread(ctx, sock):
        assert main(["-H", f"unix://{sock}", "run", "--rm", "busybox", "true"]) == 125
    err = capsys.readouterr().err
    assert err == "Error response from daemon: containers are not available in this build yet\n"


def test_unreachable_daemon(tmp_path, capsys):
    assert main(["-H", f"unix://{tmp_path}/none.sock", "images"]) == 1
    assert "Cannot connect to the kobako daemon" in capsys.readouterr().err


def test_host_from_environment(daemon, capsys, monkeypatch):
    srv, fake, images, host = daemon
    monkeypatch.setenv("KOBAKO_HOST", host)
    assert main(["images", "-q"]) == 0
    assert capsys.readouterr().out == "111111111111\n"


def test_completion_script(capsys):
    assert main(["completion", "bash"]) == 0
    assert "_KOBAKO_COMPLETE" in capsys.readouterr().out


def test_help_does_not_import_command_modules():
    code = ("import sys\nfrom kobako.cli.main import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "bad = [m for m in sys.modules if m.startswith('kobako.cli.commands.')"
            " or m in ('rich', 'aiohttp')]\nprint(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_every_command_has_help(capsys):
    from kobako.cli.main import COMMANDS

    for name in COMMANDS:
        assert main([name, "--help"]) == 0, name
        assert "Usage:" in capsys.readouterr().out
