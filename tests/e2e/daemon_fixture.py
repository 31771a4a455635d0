"""Start and stop a real kobakod for end-to-end tests (no pytest dependency).

Each daemon gets its own short temp dir (unix socket paths are limited to 108
bytes) holding its socket, data-root, exec-root, pidfile and log; `stop()` sends
SIGTERM to the daemon's pid and removes the dir.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

KOBAKOD = str(Path(sys.executable).parent / "kobakod")
KOBAKO = str(Path(sys.executable).parent / "kobako")
DOCKER = shutil.which("docker") or "/usr/local/bin/docker"
PREFIX = "kbk-e2e-"


class DaemonError(Exception):
    """kobakod did not come up (its log tail is in the message)."""


class Daemon:
    def __init__(self, base: str | None = None, extra_args: list[str] | None = None,
                 extra_env: dict[str, str] | None = None):
        self.base = Path(base or tempfile.mkdtemp(prefix=PREFIX, dir="/tmp"))
        self.sock = self.base / "kobako.sock"
        self.data_root = self.base / "data"
        self.exec_root = self.base / "exec"
        self.pidfile = self.base / "kobakod.pid"
        self.log_path = self.base / "kobakod.log"
        self.docker_config = self.base / "docker-config"
        self.extra_args = list(extra_args or [])
        self.extra_env = dict(extra_env or {})  # for kobakod only (e.g. KOBAKO_RESOLV_CONF)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    def command(self) -> list[str]:
        return [KOBAKOD, "-H", self.host, "--data-root", str(self.data_root),
                "--exec-root", str(self.exec_root), "--pidfile", str(self.pidfile),
                "--config-file", str(self.base / "daemon.json"), *self.extra_args]

    def start(self, timeout: float = 20.0) -> Daemon:
        (self.base / "daemon.json").write_text("{}")
        self.docker_config.mkdir(exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log = log
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log,
                                     start_new_session=True,
                                     env={**os.environ, **self.extra_env})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DaemonError(f"kobakod exited with {self.proc.returncode}:\n{self.log()}")
            if self.ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise DaemonError(f"kobakod did not answer /_ping within {timeout}s:\n{self.log()}")

    def ping(self) -> bool:
        from kobako.client.api import APIClient
        from kobako.client.errors import ClientError, DaemonUnreachable

        if not self.sock.exists():
            return False
        try:
            APIClient(self.host, timeout=2).request("GET", "/_ping").read()
            return True
        except (DaemonUnreachable, ClientError, OSError):
            return False

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM by pid and wait; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired as exc:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
                raise DaemonError(
                    f"kobakod ignored SIGTERM for {timeout}s:\n{self.log()}") from exc
        return self.proc.returncode

    def stop(self) -> None:
        try:
            if self.proc is not None:
                self.terminate()
        finally:
            if getattr(self, "_log", None):
                self._log.close()
            _unmount_under(self.base)
            shutil.rmtree(self.base, ignore_errors=True)

    # -- clients ---------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"DOCKER_HOST": self.host, "DOCKER_CONFIG": str(self.docker_config),
                    "KOBAKO_HOST": self.host})
        env.pop("DOCKER_API_VERSION", None)
        return env

    def docker(self, *args: str, input: bytes | None = None, check: bool = True,
               env: dict[str, str] | None = None, timeout: float = 120) -> Any:
        proc = subprocess.run([DOCKER, *args], input=input, capture_output=True,
                              env=env or self.env(), timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stderr.decode(errors='replace')}\n"
                                 f"--- kobakod log ---\n{self.log()}")
        return proc

    def kobako(self, *args: str, input: bytes | None = None, check: bool = True,
               timeout: float = 120) -> Any:
        proc = subprocess.run([KOBAKO, *args], input=input, capture_output=True,
                              env=self.env(), timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kobako {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stderr.decode(errors='replace')}")
        return proc

    def docker_py(self, **kwargs: Any) -> Any:
        import docker

        return docker.DockerClient(base_url=self.host, timeout=60, **kwargs)


def _unmount_under(root: Path) -> None:
    """Unmount anything the daemon left mounted under `root` (deepest first)."""
    try:
        with open("/proc/self/mounts") as f:
            points = [line.split()[1] for line in f]
    except OSError:
        return
    prefix = str(root).rstrip("/") + "/"
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def busybox_rootfs_tar(path: str) -> str:
    """A busybox rootfs tar (from the host's busybox-static) at `path`."""
    from kobako.image.bootstrap import bootstrap_busybox

    with open(path, "wb") as f:
        f.write(bootstrap_busybox())
    return path
