"""Pulls through a misbehaving connection: drops mid-blob, endless drops, SIGKILL."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from registry_fixtures import FaultProxy, Faults, Registry, put_image, random_layer

from kobako.image.pull import PullError, pull
from kobako.image.push import push
from kobako.image.store import ContentStore

pytestmark = pytest.mark.root


@pytest.fixture
def registry(tmp_path: pathlib.Path):
    with Registry(tmp_path) as reg:
        yield reg


@pytest.fixture
def proxy(registry: Registry):
    p = FaultProxy(registry.host).start()
    yield p
    p.stop()


def _publish(registry: Registry, tmp_path: pathlib.Path, size: int, repo: str):
    src = ContentStore(tmp_path / "src")
    img = put_image(src, [random_layer(size)])
    asyncio.run(push(src, f"{registry.host}/{repo}:1", img.manifest_digest))
    return src, img


def test_dropped_connection_is_resumed_with_range(
    registry: Registry, proxy: FaultProxy, tmp_path: pathlib.Path
) -> None:
    src, img = _publish(registry, tmp_path, 600_000, "kobako-test/drop")
    proxy.faults = Faults(drop_after=150_000, drops=2)
    dst = ContentStore(tmp_path / "dst")
    result = asyncio.run(pull(dst, f"{proxy.host}/kobako-test/drop:1", backoff=0.01))
    assert result.manifest_digest == img.manifest_digest
    assert dst.read(img.layers[0]) == src.read(img.layers[0])
    resumed = [r for r in proxy.faults.ranges if r.startswith("bytes=") and r != "bytes=0-"]
    assert len(resumed) == 2, proxy.faults.ranges
    offsets = [int(r[6:].rstrip("-")) for r in resumed]
    assert offsets[0] > 0 and offsets[1] > offsets[0]


def test_always_dropping_gives_clear_error_and_no_partial_blob(
    registry: Registry, proxy: FaultProxy, tmp_path: pathlib.Path
) -> None:
    _, img = _publish(registry, tmp_path, 400_000, "kobako-test/alwaysdrop")
    proxy.faults = Faults(drop_after=100_000, drops=-1)
    dst = ContentStore(tmp_path / "dst")
    with pytest.raises(PullError) as e:
        asyncio.run(pull(dst, f"{proxy.host}/kobako-test/alwaysdrop:1", retries=3,
                         backoff=0.01))
    msg = str(e.value)
    assert img.layers[0] in msg and "after 4 attempts" in msg
    assert not dst.has(img.layers[0])
    assert not dst.has(img.manifest_digest)
    assert list(dst.ingest.iterdir()) == []  # no half blob anywhere


_PULL_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from kobako.image.pull import pull
    from kobako.image.store import ContentStore
    asyncio.run(pull(ContentStore(sys.argv[1]), sys.argv[2]))
    print("done")
""")


def test_sigkill_during_pull_then_next_process_completes(
    registry: Registry, proxy: FaultProxy, tmp_path: pathlib.Path
) -> None:
    size = 6 << 20
    src, img = _publish(registry, tmp_path, size, "kobako-test/killed")
    proxy.faults = Faults(rate=3 << 20)  # slow enough to be killed mid-layer
    root = tmp_path / "dst"
    ref = f"{proxy.host}/kobako-test/killed:1"
    child = subprocess.Popen([sys.executable, "-c", _PULL_SCRIPT, str(root), ref])
    try:
        ingest = root / "ingest" / img.layers[0].split(":")[1]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if ingest.exists() and ingest.stat().st_size >= (1 << 20):
                break
            assert child.poll() is None, "the pull finished before it could be killed"
            time.sleep(0.02)
        else:
            pytest.fail("the child pull never wrote 1 MiB")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    partial = ingest.stat().st_size
    assert 0 < partial < len(src.read(img.layers[0]))

    proxy.faults = Faults()
    dst = ContentStore(root)  # opens cleanly: the dead writer's lock is free
    assert not dst.has(img.layers[0]) and not dst.has(img.manifest_digest)
    result = asyncio.run(pull(dst, ref))
    assert result.manifest_digest == img.manifest_digest
    assert dst.read(img.layers[0]) == src.read(img.layers[0])
    layer_ranges = proxy.faults.ranges
    assert any(r.startswith("bytes=") and int(r[6:].rstrip("-")) > 0 for r in layer_ranges), \
        layer_ranges
    assert list(dst.ingest.iterdir()) == []


def test_downloads_are_concurrent_and_bounded(
    registry: Registry, proxy: FaultProxy, tmp_path: pathlib.Path
) -> None:
    src = ContentStore(tmp_path / "src")
    img = put_image(src, [random_layer(300_000) for _ in range(6)])
    asyncio.run(push(src, f"{registry.host}/kobako-test/conc:1", img.manifest_digest))
    proxy.faults = Faults(rate=3 << 20)  # ~0.1 s per layer: downloads overlap
    dst = ContentStore(tmp_path / "dst")
    msgs: list[dict] = []
    asyncio.run(pull(dst, f"{proxy.host}/kobako-test/conc:1", max_concurrent=2,
                     progress=msgs.append))
    assert proxy.faults.max_inflight == 2
    assert [m["status"] for m in msgs].count("Waiting") == 4
    assert all(dst.has(d) for d in img.layers)
