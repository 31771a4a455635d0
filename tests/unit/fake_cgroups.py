"""A FakeCgroupfs installed for one test, and cgroup managers opened on it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kobako.linux import cgroups
from kobako.linux.cgroups.fake import FakeCgroupfs


@contextmanager
def installed_fake(root: str, **kwargs: Any) -> Iterator[FakeCgroupfs]:
    """FakeCgroupfs(root, **kwargs) in place of the real cgroupfs writes until the end."""
    tree = FakeCgroupfs(root, **kwargs).install()
    try:
        yield tree
    finally:
        tree.uninstall()


def open_on(tree: FakeCgroupfs, path: str | None = "/kbt/c1", **kwargs: Any) -> Any:
    """The manager of container "c1" at `path` on the fake tree."""
    return cgroups.open_manager(path, "c1", mountinfo=tree.mountinfo,
                                proc_cgroup=tree.proc_cgroup, **kwargs)
