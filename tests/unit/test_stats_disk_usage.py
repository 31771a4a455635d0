"""GET /system/df's document from fake image/container/volume services."""

from __future__ import annotations

import asyncio
import os
from types import SimpleNamespace

import pytest

from kobako.engine import disk_usage
from kobako.engine.errors import InvalidParameter


def write(path, size: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"x" * size)


def test_directory_size_counts_files_once_and_not_directories(tmp_path):
    write(tmp_path / "a" / "one", 1000)
    write(tmp_path / "a" / "b" / "two", 24)
    os.link(tmp_path / "a" / "one", tmp_path / "hard")  # same inode: once
    os.symlink("a/one", tmp_path / "link")  # the link itself: 5 bytes
    (tmp_path / "empty").mkdir()
    assert disk_usage.directory_size(str(tmp_path)) == 1000 + 24 + len("a/one")
    assert disk_usage.directory_size(str(tmp_path / "missing")) == 0


class FakeDB:
    def __init__(self):
        self.rows = {"sha256:img1": ["l1", "l2"], "sha256:img2": ["l1", "l3"]}

    def snapshots(self, driver):
        return [{"chain_id": "l1", "size": 100}, {"chain_id": "l2", "size": 20},
                {"chain_id": "l3", "size": 3}]

    def images(self):
        return [SimpleNamespace(id=i) for i in self.rows]

    def layers(self, image_id):
        return [SimpleNamespace(chain_id=c) for c in self.rows[image_id]]


class FakeImages:
    driver = "overlay"
    db = FakeDB()

    def list(self, filters, all):
        return [{"Id": "sha256:img1", "Size": 120, "SharedSize": -1, "Containers": -1},
                {"Id": "sha256:img2", "Size": 103, "SharedSize": -1, "Containers": -1}]


class FakeContainers:
    def __init__(self, upper: str, volumes=None):
        rec = SimpleNamespace(doc={"Image": "sha256:img1", "Mounts": [
            {"Type": "volume", "Name": "kbt-vol"}]}, private={"rootfs": {"upper": upper}})
        self.containers = {"c1": rec}
        self.volumes = volumes

    async def list(self, all, limit, size, filters):
        return [{"Id": "c1", "Image": "busybox", "State": "running"}]


class FakeVolumes:
    def __init__(self, mountpoint: str):
        self.mountpoint = mountpoint

    async def list(self):
        return {"Volumes": [{"Name": "kbt-vol", "Driver": "local",
                             "Mountpoint": self.mountpoint}], "Warnings": None}


def test_document(tmp_path):
    write(tmp_path / "upper" / "etc" / "new", 4096)
    write(tmp_path / "vol" / "data", 777)
    service = FakeContainers(str(tmp_path / "upper"), FakeVolumes(str(tmp_path / "vol")))
    doc = asyncio.run(disk_usage.disk_usage(service, FakeImages()))
    assert doc["LayersSize"] == 123
    img1, img2 = doc["Images"]
    assert (img1["Containers"], img1["SharedSize"]) == (1, 100)
    assert (img2["Containers"], img2["SharedSize"]) == (0, 100)
    [container] = doc["Containers"]
    assert (container["SizeRw"], container["SizeRootFs"]) == (4096, 4096 + 120)
    [volume] = doc["Volumes"]
    assert volume["UsageData"] == {"Size": 777, "RefCount": 1}
    assert doc["BuildCache"] == []


def test_type_filter_and_no_volume_service(tmp_path):
    service = FakeContainers(str(tmp_path))
    doc = asyncio.run(disk_usage.disk_usage(service, FakeImages(), ["volume"]))
    assert doc == {"Volumes": []}
    with pytest.raises(InvalidParameter, match="unknown object type"):
        asyncio.run(disk_usage.disk_usage(service, FakeImages(), ["bogus"]))


def test_daemon_without_container_engine():
    from kobako.api.services import UnavailableContainerService

    doc = asyncio.run(disk_usage.disk_usage(UnavailableContainerService(), None))
    assert doc == {"LayersSize": 0, "Images": [], "Containers": [], "Volumes": [],
                   "BuildCache": []}
