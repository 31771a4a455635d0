"""A kobakod of the test's own: its own socket, data root and exec root, stopped after.

Used by the container e2e tests; the daemon gets a busybox image imported through
the API (`docker import` of kobako's busybox bootstrap, as the README does).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

KOBAKOD = "/opt/kobako/bin/kobakod"
DOCKER = shutil.which("docker", path="/usr/local/bin:/usr/bin") or "docker"


class Kobakod:
    def __init__(self) -> None:
        self.tag = f"kbt{uuid.uuid4().hex[:8]}"
        self.base = tempfile.mkdtemp(prefix=f"{self.tag}-")
        # unix socket paths are limited to 108 bytes: keep the exec root short
        self.exec_root = f"/run/{self.tag}"
        self.data_root = os.path.join(self.base, "data")
        self.socket = os.path.join(self.base, "kobako.sock")
        self.host = f"unix://{self.socket}"
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(self.base, "kobakod.log")

    def start(self) -> None:
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [KOBAKOD, "-H", self.host, "--data-root", self.data_root, "--exec-root",
             self.exec_root, "--pidfile", os.path.join(self.base, "kobakod.pid")],
            stdout=log, stderr=log,
        )
        deadline = time.monotonic() + 30
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("kobakod did not start:\n" + open(self.log_path).read())
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def docker(self, *args: str, input: str | None = None, timeout: float = 60,
               check: bool = False) -> subprocess.CompletedProcess:
        env = dict(os.environ, DOCKER_HOST=self.host)
        env.pop("DOCKER_CONTEXT", None)
        result = subprocess.run([DOCKER, *args], capture_output=True, text=True, input=input,
                                timeout=timeout, env=env)
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def import_busybox(self, name: str = "busybox:latest") -> None:
        from kobako.image.bootstrap import BUSYBOX_CHANGES, bootstrap_busybox

        tar = os.path.join(self.base, "busybox.tar")
        with open(tar, "wb") as f:
            f.write(bootstrap_busybox())
        changes = []
        for change in BUSYBOX_CHANGES:
            changes += ["--change", change]
        self.docker("import", *changes, tar, name, check=True)

    def cleanup(self) -> None:
        """Remove every container, stop the daemon, and check nothing leaked."""
        if self.proc is not None and self.proc.poll() is None:
            ids = self.docker("ps", "-aq").stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, timeout=120)
        self.stop()
        leaks = self.leaks()
        subprocess.run(["umount", "-R", self.data_root], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)
        shutil.rmtree(self.exec_root, ignore_errors=True)
        assert not leaks, f"left behind: {leaks}"

    def leaks(self) -> list[str]:
        found = []
        with open("/proc/self/mountinfo") as f:
            found += [line.split()[4] for line in f if self.base in line.split()[4]]
        runtime_root = os.path.join(self.exec_root, "runtime")
        if os.path.isdir(runtime_root):
            found += [os.path.join(runtime_root, n) for n in os.listdir(runtime_root)]
        return found
