#!/opt/kobako/bin/python
"""Benchmark: `run` of a busybox bundle doing `true`, kobako-runtime against runc and crun.

All three run in one private mount namespace in which /sys/fs/cgroup/unified is
unmounted (crun 1.8 refuses this machine's "hybrid" layout otherwise), so they see
the same host. Prints each runtime's median wall time and its ratio to runc's.

    bench/bench_runtime.py [-n 30]

Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

KOBAKO = "/opt/kobako/bin/kobako-runtime"


def make_bundle(path: str) -> None:
    rootfs = os.path.join(path, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    shutil.copy("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
    for applet in ("sh", "true"):
        os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    for directory in ("proc", "sys", "dev", "tmp"):
        os.makedirs(os.path.join(rootfs, directory))
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
    from kobako.runtime.spec import default_spec

    config = default_spec()
    config["process"]["terminal"] = False
    config["process"]["args"] = ["true"]
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)


def measure(runtime: str, bundle: str, state_root: str, runs: int) -> list[float]:
    times = []
    for i in range(runs):
        start = time.perf_counter()
        subprocess.run([runtime, "--root", state_root, "run", "--bundle", bundle, f"bench-{i}"],
                       check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=30)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    if not args.inside:
        # re-run inside a private mount namespace without the hybrid cgroup2 mount
        script = (f"umount /sys/fs/cgroup/unified 2>/dev/null; "
                  f"exec {sys.executable} {os.path.abspath(__file__)} --inside -n {args.runs}")
        sys.exit(subprocess.call(["unshare", "--mount", "--propagation", "private",
                                  "sh", "-c", script]))

    runtimes = [("kobako-runtime", KOBAKO)]
    runtimes += [(name, path) for name in ("runc", "crun") if (path := shutil.which(name))]
    with tempfile.TemporaryDirectory(prefix="kobako-bench-") as tmp:
        bundle = os.path.join(tmp, "bundle")
        make_bundle(bundle)
        results = {}
        for name, path in runtimes:
            state_root = os.path.join(tmp, f"state-{name}")
            measure(path, bundle, state_root, 3)  # warm caches
            results[name] = statistics.median(measure(path, bundle, state_root, args.runs))
    baseline = results.get("runc")
    print(f"run of `true` in a busybox bundle, median of {args.runs} runs")
    for name, median in results.items():
        ratio = f"  {median / baseline:.2f}x runc" if baseline else ""
        print(f"  {name:15s} {median * 1000:7.1f} ms{ratio}")


if __name__ == "__main__":
    main()
