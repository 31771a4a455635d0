"""Fixtures for end-to-end tests: a kobakod on its own socket and state dirs."""

from __future__ import annotations

import os
import shutil

import pytest
from daemon_fixture import DOCKER, Daemon, busybox_daemon

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="kobakod e2e tests run as root")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(needs_root)
            item.add_marker(pytest.mark.root)


@pytest.fixture
def kobakod():
    daemon = Daemon().start()
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def engine():
    """One kobakod per module with busybox:latest; at the end every container is removed
    and nothing may be left mounted or in runtime state."""
    with busybox_daemon() as daemon:
        yield daemon


@pytest.fixture
def docker_cli():
    if not os.path.exists(DOCKER) and shutil.which("docker") is None:
        pytest.skip("the docker CLI is not installed")
    return DOCKER
