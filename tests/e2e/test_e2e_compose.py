"""Debian's docker-compose (1.29, docker-py underneath) against kobakod: a two-service
project whose services reach each other by service name on the project's network.

Traffic stays on the project's bridge and on loopback (a published 127.0.0.1 port).
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request

import pytest
from daemon_fixture import Daemon
from test_e2e_network import free_port, kernel_state

COMPOSE = shutil.which("docker-compose")

PROJECT = """\
version: "3.8"
services:
  web:
    image: busybox:latest
    command: sh -c "mkdir -p /www && echo hello-compose > /www/index.html
                    && httpd -f -p 80 -h /www"
    ports:
      - "127.0.0.1:{port}:80"
  client:
    image: busybox:latest
    # busybox wget -T crashes; timeout(1) bounds each try instead
    command: sh -c "for i in $$(seq 1 50); do timeout 3 wget -q -O - http://web/ && exit 0;
                    sleep 0.2; done; exit 1"
    depends_on:
      - web
"""


@pytest.mark.skipif(COMPOSE is None, reason="Debian's docker-compose is not installed")
def test_two_service_project(tmp_path):
    port = free_port()
    (tmp_path / "docker-compose.yml").write_text(PROJECT.format(port=port))
    daemon = Daemon().start()

    def compose(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([COMPOSE, "--no-ansi", "-p", "kbcproj", *args], cwd=tmp_path,
                              env=daemon.env(), capture_output=True, text=True, timeout=180)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed:\n{proc.stderr}\n"
                                 f"--- kobakod log ---\n{daemon.log()}")
        return proc

    try:
        daemon.import_busybox()
        compose("up", "-d")
        for _ in range(100):
            state = daemon.docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}",
                                  "kbcproj_client_1").stdout.decode().split()
            if state[0] == "exited":
                break
            time.sleep(0.2)
        assert state == ["exited", "0"], compose("logs").stdout
        assert "hello-compose" in compose("logs", "client").stdout
        # one-off runs join the project's network and resolve the service too
        assert "hello-compose" in compose("run", "--rm", "client").stdout
        # the container's own name resolves as well, and exec works through compose
        out = compose("exec", "-T", "web", "sh", "-c",
                      "timeout 3 wget -q -O - http://kbcproj_web_1/").stdout
        assert "hello-compose" in out
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            assert resp.read().decode().strip() == "hello-compose"
        ps = compose("ps").stdout
        assert "kbcproj_web_1" in ps and "Up" in ps
        # `up` again with nothing changed keeps the running service
        web_id = daemon.docker("inspect", "-f", "{{.Id}}", "kbcproj_web_1").stdout
        compose("up", "-d", "web")
        assert daemon.docker("inspect", "-f", "{{.Id}}", "kbcproj_web_1").stdout == web_id
        compose("down")
        assert daemon.docker("ps", "-aq").stdout.strip() == b""
        nets = daemon.docker("network", "ls", "--format", "{{.Name}}").stdout.decode().split()
        assert "kbcproj_default" not in nets
        assert kernel_state(daemon) == {"veths": [], "netns": []}
    finally:
        compose("down", "-t", "0", check=False)
        daemon.stop()
