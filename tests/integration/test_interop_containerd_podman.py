"""containerd (through its runc.v2 shim) and podman (through conmon) driving kobako-runtime.

Each test starts its own containerd with its own socket, root and state dirs, or
runs podman with its own --root/--runroot, uses a unique cgroup parent and removes
everything it made.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

import pytest

RUNTIME = shutil.which("kobako-runtime", path="/opt/kobako/bin") or "kobako-runtime"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]


def _busybox_rootfs(path: str) -> str:
    os.makedirs(os.path.join(path, "bin"))
    shutil.copy("/bin/busybox", os.path.join(path, "bin", "busybox"))
    applets = subprocess.run(
        ["/bin/busybox", "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        link = os.path.join(path, "bin", applet)
        if not os.path.exists(link):
            os.symlink("busybox", link)
    for directory in ("proc", "sys", "dev", "tmp", "etc"):
        os.makedirs(os.path.join(path, directory), exist_ok=True)
    with open(os.path.join(path, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    return path


def _remove_cgroup_tree(name: str) -> None:
    """Remove a test's cgroup parent; podman's own conmon cgroup may take a moment to empty."""
    deadline = time.monotonic() + 10
    for hierarchy in os.listdir("/sys/fs/cgroup"):
        top = os.path.join("/sys/fs/cgroup", hierarchy, name)
        if not os.path.isdir(top):
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            while True:
                try:
                    os.rmdir(dirpath)
                    break
                except OSError as err:
                    if err.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)


def _leftover_cgroups(name: str) -> list[str]:
    found = []
    for hierarchy in os.listdir("/sys/fs/cgroup"):
        top = os.path.join("/sys/fs/cgroup", hierarchy, name)
        if os.path.isdir(top):
            found += [d for d, _subdirs, _files in os.walk(top) if d != top]
    return found


@pytest.fixture
def rootfs(tmp_path):
    return _busybox_rootfs(str(tmp_path / "rootfs"))


@pytest.fixture
def containerd(tmp_path):
    if not shutil.which("containerd") or not shutil.which("ctr"):
        pytest.skip("containerd is not installed")
    base = tmp_path / "containerd"
    base.mkdir()
    sock = base / "containerd.sock"
    config = base / "config.toml"
    config.write_text(
        "version = 2\n"
        f'root = "{base}/root"\nstate = "{base}/state"\n'
        f'[grpc]\n  address = "{sock}"\n'
        f'[ttrpc]\n  address = "{sock}.ttrpc"\n'
        '[debug]\n  address = ""\n[metrics]\n  address = ""\n'
        '[plugins."io.containerd.grpc.v1.cri"]\n  disable = true\n'
    )
    log = open(base / "containerd.log", "w")
    proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=log)
    namespace = f"kbtest-{uuid.uuid4().hex[:8]}"
    ctr = ["ctr", "--address", str(sock), "--namespace", namespace]
    deadline = time.monotonic() + 20
    while subprocess.run(ctr + ["version"], capture_output=True).returncode != 0:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("containerd did not start: " + (base / "containerd.log").read_text())
        time.sleep(0.1)
    try:
        yield ctr, namespace
    finally:
        for task in subprocess.run(
            ctr + ["task", "ls", "-q"], capture_output=True, text=True
        ).stdout.split():
            subprocess.run(ctr + ["task", "kill", "-s", "SIGKILL", task], capture_output=True)
            subprocess.run(ctr + ["task", "rm", "-f", task], capture_output=True)
        for container in subprocess.run(
            ctr + ["container", "ls", "-q"], capture_output=True, text=True
        ).stdout.split():
            subprocess.run(ctr + ["container", "rm", container], capture_output=True)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        # the shim keeps runtime state under /run/containerd/runc/<namespace>
        shutil.rmtree(f"/run/containerd/runc/{namespace}", ignore_errors=True)
        leftovers = _leftover_cgroups(namespace)
        _remove_cgroup_tree(namespace)
        assert not leftovers, f"cgroups left behind: {leftovers}"


def _ctr_run(ctr, namespace, rootfs, name, *args, extra=(), timeout=60):
    return subprocess.run(
        ctr
        + [
            "run",
            "--runc-binary",
            RUNTIME,
            "--cgroup",
            f"/{namespace}/{name}",
            *extra,
            "--rootfs",
            rootfs,
            name,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_containerd_runs_a_container(containerd, rootfs):
    ctr, namespace = containerd
    result = _ctr_run(
        ctr,
        namespace,
        rootfs,
        "kbt-one",
        "/bin/sh",
        "-c",
        "echo hello; hostname; ps -o pid,args",
        extra=["--rm"],
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "hello"
    # PID 1 is the user's process: ps sees only the container
    pids = [line.split()[0] for line in lines[3:]]
    assert pids[0] == "1" and all(int(p) < 10 for p in pids)


def test_containerd_exec_pause_kill_lifecycle(containerd, rootfs):
    ctr, namespace = containerd
    result = _ctr_run(ctr, namespace, rootfs, "kbt-life", "/bin/sleep", "1000", extra=["-d"])
    assert result.returncode == 0, result.stderr
    tasks = subprocess.run(ctr + ["task", "ls"], capture_output=True, text=True).stdout
    assert "kbt-life" in tasks and "RUNNING" in tasks

    exe = subprocess.run(
        ctr
        + [
            "task",
            "exec",
            "--exec-id",
            "e1",
            "kbt-life",
            "/bin/sh",
            "-c",
            "ps -o pid,args; exit 7",
        ],
        capture_output=True,
        text=True,
    )
    assert exe.returncode == 7
    assert "sleep 1000" in exe.stdout

    assert subprocess.run(ctr + ["task", "pause", "kbt-life"]).returncode == 0
    assert "PAUSED" in subprocess.run(ctr + ["task", "ls"], capture_output=True, text=True).stdout
    assert subprocess.run(ctr + ["task", "resume", "kbt-life"]).returncode == 0

    pids = subprocess.run(ctr + ["task", "ps", "kbt-life"], capture_output=True, text=True).stdout
    assert len(pids.splitlines()) == 2  # header + the init

    subprocess.run(ctr + ["task", "kill", "-s", "SIGKILL", "kbt-life"], check=True)
    deadline = time.monotonic() + 10
    while (
        "STOPPED" not in subprocess.run(ctr + ["task", "ls"], capture_output=True, text=True).stdout
    ):
        assert time.monotonic() < deadline, "task did not stop"
        time.sleep(0.1)
    assert subprocess.run(ctr + ["task", "rm", "kbt-life"]).returncode == 0
    assert subprocess.run(ctr + ["container", "rm", "kbt-life"]).returncode == 0
    assert not os.path.exists(f"/run/containerd/runc/{namespace}/kbt-life")


def test_containerd_reports_runtime_errors(containerd, rootfs):
    ctr, namespace = containerd
    result = _ctr_run(ctr, namespace, rootfs, "kbt-err", "/bin/no-such-binary", extra=["--rm"])
    assert result.returncode != 0
    # the shim read our JSON error line from --log and shows it as runc's would be shown
    assert "OCI runtime create failed" in result.stderr
    assert 'exec: "/bin/no-such-binary"' in result.stderr
    subprocess.run(ctr + ["container", "rm", "kbt-err"], capture_output=True)


@pytest.fixture
def podman():
    if not shutil.which("podman"):
        pytest.skip("podman is not installed")
    parent = f"kbtest-{uuid.uuid4().hex[:8]}"
    # podman refuses a runroot path longer than 50 characters
    state = tempfile.mkdtemp(prefix="kbp-", dir="/tmp")
    base = [
        "podman",
        "--root",
        f"{state}/root",
        "--runroot",
        f"{state}/run",
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "file",
        "--runtime",
        RUNTIME,
    ]
    run_flags = [
        "--network",
        "none",
        "--cgroup-parent",
        f"/{parent}",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ]
    try:
        yield base, run_flags
    finally:
        subprocess.run(base + ["rm", "-af", "-t", "0"], capture_output=True, timeout=60)
        # podman puts conmon in <parent>/conmon itself; that one is not ours to count
        leftovers = [d for d in _leftover_cgroups(parent) if not d.endswith("/conmon")]
        _remove_cgroup_tree(parent)
        subprocess.run(base + ["system", "reset", "--force"], capture_output=True, timeout=60)
        shutil.rmtree(state, ignore_errors=True)
        assert not leftovers, f"cgroups left behind: {leftovers}"


def test_podman_runs_a_container(podman, rootfs):
    base, flags = podman
    result = subprocess.run(
        base
        + [
            "run",
            "--rm",
            *flags,
            "--rootfs",
            rootfs,
            "/bin/sh",
            "-c",
            "echo hello from podman; cat /proc/self/status",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("hello from podman")
    status = dict(line.split(":\t", 1) for line in result.stdout.splitlines()[1:] if ":\t" in line)
    assert status["CapInh"].strip() == "0000000000000000"


def test_podman_detached_exec_stop(podman, rootfs):
    base, flags = podman
    run = subprocess.run(
        base + ["run", "-d", *flags, "--rootfs", rootfs, "/bin/sleep", "1000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    cid = run.stdout.strip()
    exe = subprocess.run(
        base + ["exec", cid, "/bin/sh", "-c", "ps -o pid,args"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert exe.returncode == 0, exe.stderr
    assert "sleep 1000" in exe.stdout
    inspect = json.loads(
        subprocess.run(base + ["inspect", cid], capture_output=True, text=True).stdout
    )
    pid = inspect[0]["State"]["Pid"]
    assert os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    stop = subprocess.run(
        base + ["stop", "-t", "1", cid], capture_output=True, text=True, timeout=60
    )
    assert stop.returncode == 0, stop.stderr
    state = json.loads(
        subprocess.run(base + ["inspect", cid], capture_output=True, text=True).stdout
    )[0]["State"]
    assert state["Status"] == "exited"
    assert subprocess.run(base + ["rm", cid], capture_output=True).returncode == 0


def test_podman_reports_runtime_errors(podman, rootfs):
    base, flags = podman
    result = subprocess.run(
        base + ["run", "--rm", *flags, "--rootfs", rootfs, "/bin/nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "/bin/nope" in result.stderr


def test_version_and_features_as_runc_prints_them():
    version = subprocess.run([RUNTIME, "--version"], capture_output=True, text=True, check=True)
    lines = version.stdout.splitlines()
    assert lines[0].startswith("kobako-runtime version ")
    assert lines[1].startswith("commit: ") and lines[2].startswith("spec: ")
    features = json.loads(
        subprocess.run([RUNTIME, "features"], capture_output=True, text=True, check=True).stdout
    )
    assert features["ociVersionMin"] == "1.0.0"
    assert "pid" in features["linux"]["namespaces"]
