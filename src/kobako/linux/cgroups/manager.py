"""The interface every cgroup manager (v1/hybrid, v2) implements, and what they share."""

from __future__ import annotations

import os
import signal
import time
from abc import ABC, abstractmethod

from . import fs
from .errors import CgroupError

FREEZE_TIMEOUT = 10.0


class CgroupManager(ABC):
    """One container's cgroup, across every hierarchy of the host.

    `paths` maps a controller name ("" for the unified hierarchy) to the
    container's absolute directory; it is all a manager needs, so the runtime
    saves it and rebuilds the manager later with `manager_for_paths`.
    """

    mode: str

    def __init__(self, paths: dict[str, str]):
        self.paths = dict(paths)
        self._created: list[str] = []  # directories this instance made, top-down

    # -- lifecycle -------------------------------------------------------------------
    @abstractmethod
    def create(self) -> None: ...

    @abstractmethod
    def apply(self, resources: dict) -> None: ...

    def directories(self) -> list[str]:
        """Each distinct directory once (co-mounted v1 controllers share one)."""
        return sorted(set(self.paths.values()))

    def add(self, pid: int) -> None:
        for directory in self.directories():
            fs.write(directory, "cgroup.procs", pid)

    def procs(self) -> list[int]:
        return fs.read_pids(self._procs_dir())

    @abstractmethod
    def _procs_dir(self) -> str: ...

    @abstractmethod
    def freeze(self) -> None: ...

    @abstractmethod
    def thaw(self) -> None: ...

    @abstractmethod
    def frozen(self) -> bool: ...

    def kill_all(self, sig: int) -> None:
        """Signal every process; frozen first (when we can) so none forks out of reach."""
        can_freeze = self._can_freeze()
        was_frozen = can_freeze and self.frozen()
        if can_freeze and not was_frozen:
            self.freeze()
        try:
            for pid in self.procs():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    continue  # exited since we listed it: nothing to signal
        finally:
            # a frozen task cannot act on a signal; thaw unless it was paused by the user
            # (SIGKILL is delivered even to frozen tasks once thawed, or by the kernel)
            if can_freeze and (not was_frozen or sig == signal.SIGKILL):
                self.thaw()

    @abstractmethod
    def _can_freeze(self) -> bool: ...

    def destroy(self) -> None:
        """Remove every directory of the container (and child cgroups); idempotent."""
        errors: list[str] = []
        for directory in self.directories():
            try:
                fs.remove_tree(directory)
            except CgroupError as err:
                errors.append(str(err))
        # parents this instance created (e.g. a fresh /kobako): remove if nobody uses them
        leaves = set(self.directories())
        for directory in reversed(self._created):
            if directory in leaves or not os.path.isdir(directory):
                continue
            try:
                fs.rmdir(directory)
            except OSError:
                break  # shared with another container (not empty): it stays, as runc leaves it
        if errors:
            raise CgroupError("; ".join(errors))

    @abstractmethod
    def stats(self) -> dict: ...

    @abstractmethod
    def oom_kill_count(self) -> int: ...


def wait_until(predicate, what: str, timeout: float = FREEZE_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not predicate():
        if time.monotonic() > deadline:
            raise CgroupError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
