#!/usr/bin/env python3
"""Pull benchmark: kobako vs dockerd, same image, same local registry.

A ~100 MB image of 5 layers of incompressible data (random files, gzip) is pushed to
Debian's docker-registry on 127.0.0.1; kobako pulls it N times into a fresh image
root (download + unpack through ImageService, as the daemon does), and, when Debian's
docker.io is installed (or --install-docker installs it), a private dockerd with its
own socket, data root and exec root pulls it N times too (`docker rmi` between runs).
Prints medians and the throughput ratio. Everything started here is stopped by pid.

    sudo /opt/kobako/bin/python bench/bench_pull.py --runs 5 [--install-docker]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "src"))

from registry_fixtures import Registry, make_layer, put_image  # noqa: E402

from kobako.image.push import push  # noqa: E402
from kobako.image.store import ContentStore  # noqa: E402

DOCKER_CLI = shutil.which("docker") or "/usr/local/bin/docker"


def build_image(store: ContentStore, total_mb: int, layers: int, files_per_layer: int):
    per_file = total_mb * 1_000_000 // (layers * files_per_layer)
    built = []
    for i in range(layers):
        files = {f"layer{i}/file{j}.bin": os.urandom(per_file) for j in range(files_per_layer)}
        built.append(make_layer(files))
    return put_image(store, built)


async def kobako_pull_once(workdir: pathlib.Path, ref: str) -> float:
    """One cold pull: download, verify and unpack every layer."""
    root = workdir / f"kobako-{time.monotonic_ns()}"
    try:
        from kobako.image.images import ImageService
    except ImportError:
        ImageService = None  # noqa: N806 - fall back to pull + sequential unpack below
    try:
        if ImageService is not None:
            svc = ImageService(root, root / "state.db")
            try:
                t0 = time.perf_counter()
                await svc.pull(ref)
                return time.perf_counter() - t0
            finally:
                svc.close()
        return await _pull_and_untar(root, ref)
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _pull_and_untar(root: pathlib.Path, ref: str) -> float:
    import tarfile

    from kobako.image.pull import pull

    store = ContentStore(root / "content")
    loop = asyncio.get_running_loop()

    def untar(digest: str) -> None:
        with tarfile.open(store.path(digest), "r:*") as tar:
            tar.extractall(root / "layers" / digest.split(":")[1], filter="tar")

    async def on_layer(desc: dict) -> None:
        await loop.run_in_executor(None, untar, desc["digest"])

    t0 = time.perf_counter()
    await pull(store, ref, on_layer=on_layer)
    return time.perf_counter() - t0


class Dockerd:
    """A private dockerd: own socket, data root, exec root, pidfile; stopped by pid."""

    def __init__(self, workdir: pathlib.Path, registry_host: str):
        self.dir = workdir / "dockerd"
        self.dir.mkdir()
        self.sock = self.dir / "docker.sock"
        self.host = f"unix://{self.sock}"
        self.registry_host = registry_host
        self.proc: subprocess.Popen | None = None

    def start(self) -> Dockerd:
        log = open(self.dir / "dockerd.log", "wb")  # noqa: SIM115 - for the daemon's life
        self.proc = subprocess.Popen(
            ["dockerd", "--host", self.host, "--data-root", str(self.dir / "data"),
             "--exec-root", str(self.dir / "exec"), "--pidfile", str(self.dir / "dockerd.pid"),
             "--bridge", "none", "--iptables=false", "--ip6tables=false",
             "--insecure-registry", self.registry_host],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("dockerd exited:\n" + (self.dir / "dockerd.log").read_text())
            if self.docker("version", check=False).returncode == 0:
                return self
            time.sleep(0.2)
        raise RuntimeError("dockerd did not come up")

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([DOCKER_CLI, "-H", self.host, *args], capture_output=True,
                              text=True, check=check)

    def pull_once(self, ref: str) -> float:
        t0 = time.perf_counter()
        self.docker("pull", "-q", ref)
        elapsed = time.perf_counter() - t0
        self.docker("rmi", ref)
        return elapsed

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        # dockerd leaves its data root's mounts behind only if killed; be sure.
        subprocess.run(["umount", "-R", str(self.dir / "data")], capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--files-per-layer", type=int, default=20)
    ap.add_argument("--install-docker", action="store_true",
                    help="apt-get install docker.io if dockerd is missing")
    ap.add_argument("--no-docker", action="store_true")
    args = ap.parse_args()

    if args.install_docker and shutil.which("dockerd") is None:
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "docker.io"],
                       check=True)
    with_docker = not args.no_docker and shutil.which("dockerd") is not None

    work = pathlib.Path(tempfile.mkdtemp(prefix="kobako-bench-pull-", dir="/var/tmp"))
    registry = Registry(work)
    dockerd: Dockerd | None = None
    try:
        registry.start()
        src = ContentStore(work / "src")
        t0 = time.perf_counter()
        img = build_image(src, args.size_mb, args.layers, args.files_per_layer)
        size = sum(src.size(d) for d in img.layers)
        ref = f"{registry.host}/kobako-bench/pull:latest"
        asyncio.run(push(src, ref, img.manifest_digest))
        shutil.rmtree(work / "src")
        print(f"image: {len(img.layers)} layers, {size / 1e6:.1f} MB compressed "
              f"(built and pushed in {time.perf_counter() - t0:.1f}s), {args.runs} runs each")

        kobako_times = [asyncio.run(kobako_pull_once(work, ref)) for _ in range(args.runs)]
        k_med = statistics.median(kobako_times)
        print(f"kobako : median {k_med:.2f}s  {size / 1e6 / k_med:7.1f} MB/s  "
              f"runs {[round(t, 2) for t in kobako_times]}")

        if with_docker:
            dockerd = Dockerd(work, registry.host).start()
            docker_times = [dockerd.pull_once(ref) for _ in range(args.runs)]
            d_med = statistics.median(docker_times)
            print(f"dockerd: median {d_med:.2f}s  {size / 1e6 / d_med:7.1f} MB/s  "
                  f"runs {[round(t, 2) for t in docker_times]}")
            print(f"throughput ratio kobako/dockerd: {d_med / k_med:.2f}x (target >= 1.25x)")
        else:
            print("dockerd: not installed (Debian docker.io); use --install-docker to compare")
    finally:
        if dockerd is not None:
            dockerd.stop()
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
