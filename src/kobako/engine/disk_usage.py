"""GET /system/df: what images, containers, volumes and the build cache take on disk.

The document is dockerd's (daemon/disk_usage.go): LayersSize (every unpacked layer
once), Images as in `docker images` plus Containers (how many use each) and
SharedSize (its layers other images use too), Containers as in `docker ps -a` plus
SizeRw (the writable layer) and SizeRootFs (that plus the image), Volumes with
UsageData {Size, RefCount}, BuildCache (none: kobako has no builder cache).
`types` limits the answer to those sections, as the API's `type` parameter does.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections import Counter
from typing import Any

ALL_TYPES = ("image", "container", "volume", "build-cache")


def directory_size(path: str) -> int:
    """Bytes of the files under `path`, as moby's directory.Size counts them:
    directories left out, each inode (hard links) once, symlinks as themselves."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except FileNotFoundError:
            continue  # removed while we walked
        except NotADirectoryError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
                continue
            key = (st.st_dev, st.st_ino)
            if st.st_size == 0 or key in seen:
                continue
            seen.add(key)
            total += st.st_size
    return total


def container_sizes(container: Any, image_size: int) -> tuple[int, int]:
    """(SizeRw, SizeRootFs) of one container (kobako.engine.containers.Container)."""
    rootfs = (container.private or {}).get("rootfs") or {}
    upper = rootfs.get("upper")
    if upper:
        size_rw = directory_size(upper)
    elif rootfs.get("source"):
        # vfs: the container's rootfs is a full copy; its own bytes are what the image lacks
        size_rw = max(0, directory_size(rootfs["source"]) - image_size)
    else:
        size_rw = 0
    return size_rw, size_rw + image_size


def _records(containers: Any) -> dict[str, Any]:
    """The service's containers by id ({} for a daemon without a container engine)."""
    records = getattr(containers, "containers", None)
    return records if isinstance(records, dict) else {}


def _image_layers(images: Any) -> tuple[dict[str, list[str]], dict[str, int], int]:
    """image id -> its layers' chain ids, chain id -> size, LayersSize."""
    db = getattr(images, "db", None)
    driver = getattr(images, "driver", "")
    if db is None:
        return {}, {}, 0
    sizes = {row["chain_id"]: int(row["size"] or 0) for row in db.snapshots(driver)}
    chains = {row.id: [layer.chain_id for layer in db.layers(row.id)] for row in db.images()}
    return chains, sizes, sum(sizes.values())


def _images_section(images: Any, containers: Any) -> tuple[list[dict], int]:
    summaries = images.list({}, False)
    chains, sizes, layers_size = _image_layers(images)
    users = Counter(c.doc["Image"] for c in _records(containers).values())
    refs = Counter(chain for image_chains in chains.values() for chain in set(image_chains))
    for summary in summaries:
        image_chains = chains.get(summary["Id"])
        if image_chains is not None:
            summary["SharedSize"] = sum(sizes.get(chain, 0) for chain in set(image_chains)
                                        if refs[chain] > 1)
        summary["Containers"] = users.get(summary["Id"], 0)
    if not chains:
        layers_size = sum(int(s.get("Size") or 0) for s in summaries)
    return summaries, layers_size


async def _containers_section(containers: Any, image_sizes: dict[str, int]) -> list[dict]:
    summaries = await containers.list(all=True, limit=None, size=False, filters={})

    def measure() -> None:
        for summary in summaries:
            c = _records(containers).get(summary["Id"])
            if c is None:
                continue  # removed meanwhile
            summary["SizeRw"], summary["SizeRootFs"] = container_sizes(
                c, image_sizes.get(c.doc["Image"], 0))

    await asyncio.to_thread(measure)
    return summaries


async def _volumes_section(containers: Any) -> list[dict]:
    """The volume service's own answer when it has one; else its list, measured here."""
    engine = isinstance(getattr(containers, "containers", None), dict)
    volumes = getattr(containers, "volumes", None) if engine else None
    if volumes is None:
        return []
    for name in ("disk_usage", "df"):
        method = getattr(volumes, name, None)
        if method is not None:
            result = method()
            return list(await result if inspect.isawaitable(result) else result)
    lister = getattr(volumes, "list", None)
    if lister is None:
        return []
    result = lister()
    listed = await result if inspect.isawaitable(result) else result
    if isinstance(listed, dict):
        listed = listed.get("Volumes") or []
    refs: Counter[str] = Counter()
    for c in _records(containers).values():
        for mount in c.doc.get("Mounts") or []:
            if mount.get("Type") == "volume" and mount.get("Name"):
                refs[mount["Name"]] += 1
    docs = [dict(v) for v in listed or []]

    def measure() -> None:
        for doc in docs:
            point = doc.get("Mountpoint") or ""
            size = directory_size(point) if point and os.path.isdir(point) else -1
            doc["UsageData"] = {"Size": size, "RefCount": refs.get(doc.get("Name", ""), 0)}

    await asyncio.to_thread(measure)
    return docs


async def disk_usage(containers: Any, images: Any,
                     types: list[str] | None = None) -> dict[str, Any]:
    """The /system/df document. `containers` is the ContainerService, `images` the
    ImageService (or None when this daemon has no image store)."""
    wanted = set(types or ALL_TYPES)
    unknown = wanted - set(ALL_TYPES)
    if unknown:
        from kobako.engine.errors import InvalidParameter

        raise InvalidParameter(f"unknown object type: {sorted(unknown)[0]}")
    doc: dict[str, Any] = {}
    image_list: list[dict] = []
    layers_size = 0
    if images is not None and ("image" in wanted or "container" in wanted):
        image_list, layers_size = await asyncio.to_thread(_images_section, images, containers)
    if "image" in wanted:
        doc["LayersSize"] = layers_size
        doc["Images"] = image_list
    if "container" in wanted:
        sizes = {i["Id"]: int(i.get("Size") or 0) for i in image_list}
        doc["Containers"] = (await _containers_section(containers, sizes)
                             if _records(containers) else [])
    if "volume" in wanted:
        doc["Volumes"] = await _volumes_section(containers)
    if "build-cache" in wanted:
        doc["BuildCache"] = []
    return doc
