"""Session-wide: the shared cgroup parent the runtime and the daemon create.

Containers without a cgroupsPath (the runtime's tests) and the engine's containers live
under /kobako in each hierarchy; like runc's parents, the runtime never removes that
shared parent. The test session removes it at the end when it made it and it is empty.
"""

from __future__ import annotations

import glob
import os

import pytest

PARENTS = ("/sys/fs/cgroup/*/kobako", "/sys/fs/cgroup/kobako")  # v1 and hybrid; pure v2


def _parents() -> set[str]:
    return {path for pattern in PARENTS for path in glob.glob(pattern)}


@pytest.fixture(scope="session", autouse=True)
def _remove_the_shared_cgroup_parent():
    existing = _parents()
    yield
    for parent in _parents() - existing:
        try:
            os.rmdir(parent)  # only an empty one: a container still in it is a leak to see
        except OSError:
            pass
