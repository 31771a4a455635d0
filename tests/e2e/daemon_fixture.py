"""Start and stop a real kobakod for end-to-end tests (no pytest dependency).

Each daemon gets its own short temp dir (unix socket paths are limited to 108
bytes) holding its socket, data-root, exec-root, pidfile and log; `stop()` sends
SIGTERM to the daemon's pid and removes the dir.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

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

    def kill(self) -> None:
        """SIGKILL by pid (a crash: no cleanup of its own); `start()` may follow."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._log.close()

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

    def run(self, *args: str, input: str | None = None, check: bool = False,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The docker CLI in text mode; with `check`, a failure shows the daemon's log."""
        result = subprocess.run([DOCKER, *args], capture_output=True, text=True, input=input,
                                timeout=timeout, env=self.env())
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}\n"
                                 f"--- kobakod log ---\n{self.log()}")
        return result

    def inspect(self, name: str) -> dict[str, Any]:
        return json.loads(self.run("inspect", name, check=True).stdout)[0]

    def import_busybox(self, name: str = "busybox:latest") -> str:
        """Import the host's busybox as image `name` (CMD sh); its id."""
        tar = busybox_rootfs_tar(str(self.base / "busybox.tar"))
        return self.run("import", "--change", 'CMD ["sh"]', tar, name,
                        check=True).stdout.strip()

    def remove_all_containers(self, volumes: bool = False) -> None:
        """`docker rm -f` every container (`-v`: with their anonymous volumes)."""
        ids = self.run("ps", "-aq", check=True).stdout.split()
        if ids:
            self.run("rm", "-f", *(["-v"] if volumes else []), *ids, check=True, timeout=120)

    # -- what exists on the host ---------------------------------------------------------

    def mounts(self) -> list[str]:
        """Mount points under this daemon's dir."""
        base = str(self.base) + "/"
        with open("/proc/self/mountinfo") as f:
            return [line.split()[4] for line in f if line.split()[4].startswith(base)]

    def leaks(self) -> list[str]:
        """Mounts and runtime state; with no container left, there should be none."""
        found = self.mounts()
        runtime_root = self.exec_root / "runtime"
        if runtime_root.is_dir():
            # containers' state, not the runtime's cache of compiled seccomp filters
            found += [str(p) for p in runtime_root.iterdir() if not p.name.startswith(".")]
        return found


class Engine:
    """A Daemon driven by the docker CLI in text mode, as a base for modules' helpers;
    `docker()` fails on a non-zero exit unless told `check=False`."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon

    def docker(self, *args: str, input: str | None = None, check: bool = True,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.daemon.run(*args, input=input, check=check, timeout=timeout)

    def inspect(self, name: str) -> dict[str, Any]:
        return self.daemon.inspect(name)


@contextmanager
def busybox_daemon(**kwargs: Any) -> Iterator[Daemon]:
    """A started Daemon(**kwargs) with busybox:latest; at the end (if it still runs) every
    container is removed and nothing may be left mounted or in runtime state."""
    daemon = Daemon(**kwargs).start()
    try:
        daemon.import_busybox()
        yield daemon
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.remove_all_containers()
            assert not daemon.leaks(), daemon.leaks()
    finally:
        daemon.stop()


def wait_until(condition: Callable[[], T], timeout: float = 15, interval: float = 0.1,
               message: Callable[[], object] = lambda: "") -> T:
    """Poll `condition` until it returns something true (which is returned); after
    `timeout` seconds, fail with `message()`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, message()
        time.sleep(interval)


def cgroup_file(pid: int, controller: str, name: str) -> str:
    """File `name` of `pid`'s cgroup of `controller` ("" for the cgroup2 hierarchy)."""
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
