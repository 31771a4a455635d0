"""Fixtures for kobako-runtime's integration tests (tests/integration/test_runtime_*.py).

Each test gets its own --root, --log and container-id prefix; afterwards every container
it left is force-deleted and the test fails if anything leaked: a state directory, a
cgroup or a process carrying its prefix, or a host mount mentioning its bundle.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import threading

import pytest
from bundles import (
    ID_PREFIX,
    Bundle,
    Runtime,
    build_rootfs,
    leaked_cgroups,
    mounts_mentioning,
    new_prefix,
    processes_in_cgroups,
)

RUNTIME_TESTS = "test_runtime_"
PR_SET_CHILD_SUBREAPER = 36


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="kobako-runtime tests need root and a real kernel")
    for item in items:
        if item.path.name.startswith(RUNTIME_TESTS):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory) -> str:
    """One busybox rootfs shared by all bundles (the default root is read-only)."""
    return build_rootfs(str(tmp_path_factory.mktemp("kbt-rootfs") / "rootfs"))


@pytest.fixture(scope="session")
def subreaper():
    """Play the shim's part: orphaned container processes are reparented to us (not to the
    host's PID 1, which in some sandboxes never reaps), and a thread reaps those of our
    containers. Until a pid namespace's processes are reaped its init cannot finish dying,
    and `delete` waits for it."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    stop = threading.Event()
    thread = threading.Thread(target=_reap_our_orphans, args=(stop,), daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join()


def _reap_our_orphans(stop: threading.Event) -> None:
    me = os.getpid()
    while not stop.wait(0.02):
        for pid in _zombie_children(me):
            try:
                with open(f"/proc/{pid}/cgroup") as f:
                    ours = f"/{ID_PREFIX}" in f.read()
            except OSError:
                continue
            if ours:  # never someone else's child: its Popen must get the status
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass  # reaped by its own waiter meanwhile


def _zombie_children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == parent:
            found.append(int(entry))
    return found


@pytest.fixture
def rt(tmp_path, rootfs, subreaper) -> Runtime:
    prefix = new_prefix()
    root = tmp_path / "state"
    runtime = Runtime(str(root), str(tmp_path / "runtime-log.json"), prefix)
    yield runtime
    problems = []
    for name in runtime.state_dirs():
        proc = runtime("delete", "--force", name, check=False)
        if proc.returncode != 0:
            problems.append(f"delete --force {name}: {proc.stderr.strip()}")
    for pid in processes_in_cgroups(prefix):
        if _reap_zombie(pid):
            continue  # dead already: an orphaned init that only needed reaping
        problems.append(f"process {pid} left in a cgroup of {prefix}")
        os.kill(pid, signal.SIGKILL)
    if runtime.state_dirs():
        problems.append(f"state directories left: {runtime.state_dirs()}")
    if leaked_cgroups(prefix):
        problems.append(f"cgroups left: {leaked_cgroups(prefix)}")
        for path in leaked_cgroups(prefix):
            _remove_cgroup(path)
    if mounts_mentioning(str(tmp_path), rootfs):
        problems.append(f"mounts left: {mounts_mentioning(str(tmp_path), rootfs)}")
    assert not problems, "; ".join(problems)


@pytest.fixture
def bundle(tmp_path, rootfs) -> Bundle:
    return Bundle(str(tmp_path / "bundle"), rootfs)


@pytest.fixture
def make_bundle(tmp_path, rootfs):
    """Factory for more bundles in one test: make_bundle("name", args...)."""
    def make(name: str, *args: str) -> Bundle:
        return Bundle(str(tmp_path / name), rootfs, args or ("true",))
    return make


@pytest.fixture
def private_rootfs(tmp_path) -> str:
    """A rootfs of the test's own, for tests that change it (symlinks, writes)."""
    path = build_rootfs(str(tmp_path / "own-rootfs"))
    yield path
    assert not mounts_mentioning(path)
    shutil.rmtree(path, ignore_errors=True)


def _reap_zombie(pid: int) -> bool:
    """Reap pid if it is a dead child of ours; True if it was dead."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    if state not in ("Z", "X"):
        return False
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: someone else's zombie, but dead all the same
    return True


def _remove_cgroup(path: str) -> None:
    for directory, _dirs, _files in sorted(os.walk(path), key=lambda w: -len(w[0])):
        freezer = os.path.join(directory, "freezer.state")
        if os.path.exists(freezer):
            with open(freezer, "w") as f:
                f.write("THAWED")
        try:
            os.rmdir(directory)
        except OSError as err:
            print(f"cannot remove leaked cgroup {directory}: {err}")
