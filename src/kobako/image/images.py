"""ImageService: the image library's facade, called by the engine's API handlers.

It ties the content store (blobs), the database (references, image records, layer
chains, snapshot records) and the snapshotter (unpacked layers, container rootfs)
together. Image ID = config digest; references are stored normalized
("docker.io/library/busybox:latest") and shown familiar ("busybox:latest").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fnmatch
import json
import os
import pathlib
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO

from kobako.image import media
from kobako.image.db import ImageDB, ImageRow, LayerRow
from kobako.image.errors import (
    Conflict,
    DigestMismatch,
    InvalidParameter,
    InvalidReference,
    NotFound,
)
from kobako.image.reference import Reference
from kobako.image.reference import parse as parse_reference
from kobako.image.snapshots import MountSpec, Snapshotter, make_snapshotter
from kobako.image.store import ContentStore

Progress = Callable[[dict[str, Any]], None]
ImageUsers = Callable[[str], list[tuple[str, bool]]]

_HEX_RE = re.compile(r"^(sha256:)?([a-f0-9]{1,64})$")
_BUF = 1 << 20


def short_id(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def parse_created(value: str | None) -> float:
    """RFC 3339 (with nanoseconds, 'Z') -> unix time; 0 when absent or unparsable."""
    if not value:
        return 0.0
    v = value.strip().replace("Z", "+00:00")
    m = re.match(r"^(.*?\.\d{1,6})\d*(.*)$", v)
    if m:
        v = m.group(1) + m.group(2)
    try:
        return datetime.fromisoformat(v).timestamp()
    except ValueError:
        return 0.0


def now_rfc3339() -> str:
    return datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class LayerInput:
    """A layer blob already in the content store, with the diff id the config names."""

    descriptor: dict[str, Any]
    diff_id: str


class ImageService:
    def __init__(
        self,
        root: str | os.PathLike[str],
        db_path: str | os.PathLike[str],
        *,
        driver: str | None = None,
        users: ImageUsers | None = None,
        insecure_registries: list[str] | None = None,
        unpack_workers: int = 4,
    ):
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = ContentStore(self.root / "content")
        self.db = ImageDB(os.fspath(db_path))
        self.snapshots: Snapshotter = make_snapshotter(self.root / "snapshots", driver)
        self.driver = self.snapshots.name
        # (container id, running) of each container made from an image
        self.users: ImageUsers = users or (lambda _id: [])
        self.insecure_registries = insecure_registries or []
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(exist_ok=True)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, unpack_workers), thread_name_prefix="kobako-unpack"
        )
        self._lock = threading.RLock()  # serializes layer commits and gc
        self._sync_snapshots()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.db.close()

    def _sync_snapshots(self) -> None:
        """After a crash: drop snapshot records whose directory is gone."""
        for row in self.db.snapshots(self.driver):
            if not self.snapshots.has_layer(row["chain_id"]):
                self.db.delete_snapshot(row["chain_id"], self.driver)

    # -- resolving names ------------------------------------------------------------------

    def resolve(self, name: str) -> str:
        """An image ID for a reference, a full or short ID, or a digest reference."""
        if not name:
            raise NotFound("No such image: ")
        m = _HEX_RE.match(name)
        if m and (m.group(1) or len(m.group(2)) >= 3):
            ids = self.db.image_ids_with_prefix("sha256:" + m.group(2))
            if len(ids) == 1 and (m.group(1) or not self._ref_exists(name)):
                return ids[0]
            if len(ids) > 1:
                raise NotFound(f"No such image: {name} (ambiguous short id)")
        try:
            ref = parse_reference(name)
        except InvalidReference:
            raise NotFound(f"No such image: {name}") from None
        image_id = self.db.get_ref(self._ref_key(ref))
        if image_id is None and ref.digest:
            # repo@digest may name a manifest (or index) digest we know under another repo
            for row in self.db.images():
                if ref.digest in (row.manifest_digest, row.index_digest):
                    image_id = row.id
                    break
        if image_id is None:
            raise NotFound(f"No such image: {ref.familiar()}")
        return image_id

    def _ref_exists(self, name: str) -> bool:
        try:
            return self.db.get_ref(self._ref_key(parse_reference(name))) is not None
        except InvalidReference:
            return False

    @staticmethod
    def _ref_key(ref: Reference) -> str:
        if ref.digest:
            return f"{ref.full_name}@{ref.digest}"
        return f"{ref.full_name}:{ref.tag or 'latest'}"

    @staticmethod
    def _familiar(key: str) -> str:
        return parse_reference(key).familiar()

    def get(self, name: str) -> ImageRow:
        row = self.db.get_image(self.resolve(name))
        if row is None:
            raise NotFound(f"No such image: {name}")
        return row

    def config(self, name: str) -> dict[str, Any]:
        row = self.get(name)
        return json.loads(self.store.read(row.id))

    def manifest(self, name: str) -> dict[str, Any]:
        row = self.get(name)
        return json.loads(self.store.read(row.manifest_digest))

    def exists(self, name: str) -> bool:
        try:
            self.resolve(name)
            return True
        except NotFound:
            return False

    # -- layers -------------------------------------------------------------------------------

    def _unpack_blob(self, descriptor: dict[str, Any], parent_chain: str | None):
        compression = media.layer_compression(descriptor.get("mediaType") or media.OCI_LAYER)
        with self.store.open(descriptor["digest"]) as f:
            return self.snapshots.unpack(f, parent_chain, compression)

    def _commit_unpacked(self, chain: str, parent: str | None, diff_id: str, tmp, result):
        if result.diff_id != diff_id:
            self.snapshots.discard(tmp)
            raise DigestMismatch(
                f"layer has diff id {result.diff_id}, the image config says {diff_id}",
                expected=diff_id, actual=result.diff_id,
            )
        with self._lock:
            self.snapshots.commit_layer(tmp, chain)
            self.db.add_snapshot(chain, self.driver, parent, diff_id, result.size)

    def _has_snapshot(self, chain: str) -> bool:
        return (
            self.db.snapshot(chain, self.driver) is not None and self.snapshots.has_layer(chain)
        )

    def ensure_layers(
        self,
        layers: list[LayerInput],
        pending: dict[str, concurrent.futures.Future] | None = None,
        progress: Progress | None = None,
    ) -> list[str]:
        """Unpack whatever of the chain is missing (in parallel when the driver allows),
        commit in order; returns the chain ids."""
        diff_ids = [la.diff_id for la in layers]
        chains = media.chain_ids(diff_ids)
        pending = dict(pending or {})
        futures: dict[int, concurrent.futures.Future] = {}
        try:
            if self.snapshots.parallel_unpack:
                for i, la in enumerate(layers):
                    if self._has_snapshot(chains[i]):
                        continue
                    fut = pending.pop(la.descriptor["digest"], None)
                    if fut is None:
                        fut = self._pool.submit(self._unpack_blob, la.descriptor, None)
                    futures[i] = fut
            for i, la in enumerate(layers):
                parent = chains[i - 1] if i else None
                if self._has_snapshot(chains[i]):
                    continue
                if progress:
                    progress({"status": "Extracting", "progressDetail": {},
                              "id": short_id(la.descriptor["digest"])})
                if i in futures:
                    tmp, result = futures.pop(i).result()
                else:
                    tmp, result = self._unpack_blob(la.descriptor, parent)
                self._commit_unpacked(chains[i], parent, la.diff_id, tmp, result)
        finally:
            for fut in list(futures.values()) + list(pending.values()):
                with contextlib.suppress(Exception):
                    tmp, _ = fut.result()
                    self.snapshots.discard(tmp)
        return chains

    # -- registering images -----------------------------------------------------------------

    def register(
        self,
        manifest_digest: str,
        *,
        index_digest: str | None = None,
        refs: list[str] | None = None,
        parent: str | None = None,
        pending: dict[str, concurrent.futures.Future] | None = None,
        progress: Progress | None = None,
    ) -> str:
        """Record an image whose manifest, config and layer blobs are in the store:
        unpack its layers, insert the image, point `refs` at it. Returns the image ID."""
        media_type, manifest = media.parse_manifest(self.store.read(manifest_digest))
        if media_type not in media.MANIFEST_TYPES:
            raise InvalidParameter(f"{manifest_digest} is an index, not an image manifest")
        config_digest = manifest["config"]["digest"]
        config = media.parse_config(self.store.read(config_digest))
        diff_ids = config["rootfs"]["diff_ids"]
        if len(diff_ids) != len(manifest["layers"]):
            raise InvalidParameter(
                f"manifest has {len(manifest['layers'])} layers, config {len(diff_ids)} diff ids"
            )
        inputs = [LayerInput(d, diff) for d, diff in zip(manifest["layers"], diff_ids,
                                                           strict=True)]
        chains = self.ensure_layers(inputs, pending, progress)
        size = 0
        rows = []
        for i, (la, chain) in enumerate(zip(inputs, chains, strict=True)):
            snap = self.db.snapshot(chain, self.driver)
            size += snap["size"] if snap is not None else 0
            rows.append(LayerRow(i, la.diff_id, chain, la.descriptor["digest"],
                                 la.descriptor.get("mediaType") or media.OCI_LAYER,
                                 la.descriptor["size"]))
        plat = media.config_platform(config)
        self.db.add_image(
            ImageRow(
                id=config_digest, manifest_digest=manifest_digest, manifest_media_type=media_type,
                index_digest=index_digest, created=config.get("created"), size=size,
                parent=parent, top_chain=chains[-1] if chains else None, os=plat.os,
                architecture=plat.architecture, variant=plat.variant or None, added=time.time(),
            ),
            rows,
        )
        for r in refs or []:
            self._set_ref(r, config_digest)
        return config_digest

    def _set_ref(self, name: str | Reference, image_id: str) -> None:
        ref = name if isinstance(name, Reference) else parse_reference(name)
        kind = "digest" if ref.digest else "tag"
        self.db.set_ref(self._ref_key(ref), image_id, kind)

    def create_image(
        self,
        config: dict[str, Any],
        layer_descriptors: list[dict[str, Any]],
        *,
        refs: list[str] | None = None,
        parent: str | None = None,
        progress: Progress | None = None,
    ) -> str:
        """Write config + OCI manifest for layers already in the store and register it."""
        config_bytes = json.dumps(config, separators=(",", ":")).encode()
        config_digest = self.store.put(config_bytes)
        manifest = media.oci_manifest(config_digest, len(config_bytes), layer_descriptors)
        manifest_digest = self.store.put(json.dumps(manifest, separators=(",", ":")).encode())
        return self.register(manifest_digest, refs=refs, parent=parent, progress=progress)

    def put_layer_tar(self, tar_stream: BinaryIO, *, compress: bool = True) -> tuple[dict, str]:
        """Store an uncompressed layer tar as a blob (gzip by default);
        returns (descriptor, diff id)."""
        import gzip
        import hashlib

        diff = hashlib.sha256()
        with self.store.writer() as w:
            if compress:
                gz = gzip.GzipFile(fileobj=w, mode="wb", compresslevel=6, mtime=0)  # type: ignore[arg-type]
                while chunk := tar_stream.read(_BUF):
                    diff.update(chunk)
                    gz.write(chunk)
                gz.close()
            else:
                while chunk := tar_stream.read(_BUF):
                    diff.update(chunk)
                    w.write(chunk)
            size = w.offset
            digest = w.commit()
        mt = media.OCI_LAYER_GZIP if compress else media.OCI_LAYER
        return {"mediaType": mt, "digest": digest, "size": size}, "sha256:" + diff.hexdigest()

    # -- pull / push --------------------------------------------------------------------------

    async def inspect_remote(self, ref: str, *, auth: Any = None) -> dict[str, Any]:
        """The registry's descriptor and platforms for `ref` (docker's distribution inspect)."""
        from kobako.image.pull import inspect_remote

        return await inspect_remote(parse_reference(ref), auth=auth,
                                    insecure_registries=self.insecure_registries)

    async def pull(
        self,
        ref: str,
        *,
        platform: str | None = None,
        auth: Any = None,
        progress: Progress | None = None,
        **pull_options: Any,
    ) -> str:
        """Pull `ref` from its registry, unpacking layers while others download."""
        from kobako.image.pull import pull as registry_pull

        reference = parse_reference(ref)
        loop = asyncio.get_running_loop()
        pending: dict[str, concurrent.futures.Future] = {}

        async def on_layer(desc: dict[str, Any]) -> None:
            if not self.snapshots.parallel_unpack or desc["digest"] in pending:
                return
            known = self.db.layer_by_blob(desc["digest"])
            if known is not None and self._has_snapshot(known.chain_id):
                return
            media.layer_compression(desc.get("mediaType"))
            fut = self._pool.submit(self._unpack_blob, desc, None)
            pending[desc["digest"]] = fut
            if progress:
                progress({"status": "Extracting", "progressDetail": {},
                          "id": short_id(desc["digest"])})
            await asyncio.wrap_future(fut)

        options = {"insecure_registries": self.insecure_registries, **pull_options}
        try:
            result = await registry_pull(
                self.store, reference, platform=platform or None, auth=auth,
                progress=progress, on_layer=on_layer, **options,
            )
        except BaseException:
            await loop.run_in_executor(None, self._discard_pending, pending)
            raise
        refs = [reference]
        top = result.index_digest or result.manifest_digest
        refs.append(reference.with_digest(top))
        if reference.digest:
            refs = [reference]
        return await loop.run_in_executor(
            None, lambda: self.register(
                result.manifest_digest, index_digest=result.index_digest, refs=refs,
                pending=pending,
            ),
        )

    def _discard_pending(self, pending: dict[str, concurrent.futures.Future]) -> None:
        for fut in pending.values():
            with contextlib.suppress(Exception):
                tmp, _ = fut.result()
                self.snapshots.discard(tmp)

    async def push(
        self, ref: str, *, auth: Any = None, progress: Progress | None = None, **options: Any
    ):
        """Push the image `ref` names to the registry in `ref`."""
        from kobako.image.push import push as registry_push

        reference = parse_reference(ref, default_tag=False)
        if reference.tag is None and reference.digest is None:
            reference = reference.with_tag("latest")
        row = self.get(reference.familiar())

        def mount_sources(blob: str) -> list[str]:
            out = []
            for name, image_id, _kind in self.db.all_refs():
                if any(la.blob_digest == blob for la in self.db.layers(image_id)):
                    out.append(name)
            return out

        options = {"insecure_registries": self.insecure_registries, **options}
        result = await registry_push(
            self.store, reference, row.manifest_digest, auth=auth, progress=progress,
            mount_sources=mount_sources, **options,
        )
        self._set_ref(reference.with_digest(result.digest), row.id)
        return result

    # -- tag / remove ------------------------------------------------------------------------

    def tag(self, source: str, target: str) -> None:
        image_id = self.resolve(source)
        ref = parse_reference(target)
        if ref.digest:
            raise InvalidReference("refusing to create a tag with a digest reference")
        self._set_ref(ref, image_id)

    def remove(self, name: str, *, force: bool = False, prune: bool = True) -> list[dict]:
        """docker rmi, as dockerd's ImageDelete: a reference is untagged (the image goes
        once nothing names it), an ID deletes the image; then its unnamed parents."""
        image_id = self.resolve(name)
        records: list[dict] = []
        refs = self.db.refs(image_id)
        if not self._is_id(name, image_id):
            users = self.users(image_id)
            if not force and users and _single_reference(refs):
                # untagging would leave a dangling image in use: the client must force it
                raise Conflict(
                    f'conflict: unable to remove repository reference "{name}" (must '
                    f"force) - container {short_id(users[0][0])} is using its referenced "
                    f"image {short_id(image_id)}")
            key = self._ref_key(parse_reference(name))
            if key not in dict(refs):
                key = next((r for r, _ in refs if r.endswith("@" + name.split("@")[-1])), key)
            self._untag(key, records)
            removed = parse_reference(key)
            remaining = self.db.refs(image_id)
            if not removed.digest and not any(
                    kind == "tag" and _same_repository(r, removed) for r, kind in remaining):
                # a repository's last tag takes its digest references along
                for r, _ in remaining:
                    if _same_repository(r, removed):
                        self._untag(r, records)
            if self.db.refs(image_id):
                return records
            self._delete(image_id, records, force, prune, quiet=True)
        else:
            if _single_reference(refs):
                self._check_conflicts(image_id, _HARD | (0 if force else _STOPPED_CONTAINER))
                for r, _ in refs:
                    self._untag(r, records)
            self._delete(image_id, records, force, prune, quiet=False)
        self.gc()
        return records

    def _untag(self, key: str, records: list[dict]) -> None:
        self.db.delete_ref(key)
        records.append({"Untagged": self._familiar(key)})

    def _delete(self, image_id: str, records: list[dict], force: bool, prune: bool,
                quiet: bool) -> None:
        """dockerd's imageDeleteHelper: the image and its references; then, unforced and
        quietly, each parent that nothing names or uses."""
        try:
            self._check_conflicts(image_id, _HARD | (0 if force else _SOFT))
        except _DeleteConflict as conflict:
            dangling = not self.db.refs(image_id) and not self.db.children(image_id)
            if quiet and (not dangling or conflict.used):
                return
            raise
        row = self.db.get_image(image_id)
        for r, _ in self.db.refs(image_id):
            self._untag(r, records)
        self.db.delete_image(image_id)
        records.append({"Deleted": image_id})
        if prune and row is not None and row.parent:
            self._delete(row.parent, records, False, True, quiet=True)

    def _check_conflicts(self, image_id: str, mask: int) -> None:
        users = self.users(image_id)
        running = [cid for cid, is_running in users if is_running]
        stopped = [cid for cid, is_running in users if not is_running]
        if mask & _CHILDREN and self.db.children(image_id):
            raise _DeleteConflict(image_id, "image has dependent child images", hard=True)
        if mask & _RUNNING_CONTAINER and running:
            raise _DeleteConflict(image_id, "image is being used by running container "
                                  f"{short_id(running[0])}", hard=True, used=True)
        if mask & _REFERENCE and self.db.refs(image_id):
            raise _DeleteConflict(image_id, "image is referenced in multiple repositories")
        if mask & _STOPPED_CONTAINER and stopped:
            raise _DeleteConflict(image_id, "image is being used by stopped container "
                                  f"{short_id(stopped[0])}", used=True)

    def _is_id(self, name: str, image_id: str) -> bool:
        m = _HEX_RE.match(name)
        return bool(m) and image_id.split(":")[1].startswith(m.group(2)) and not (
            self._ref_exists(name)
        )

    # -- listing / inspecting ----------------------------------------------------------------

    def _tags_digests(self, image_id: str) -> tuple[list[str], list[str]]:
        tags, digests = [], []
        for name, kind in self.db.refs(image_id):
            (tags if kind == "tag" else digests).append(self._familiar(name))
        return tags, digests

    def list(self, filters: dict[str, Any] | None = None, all: bool = False) -> list[dict]:
        """GET /images/json entries, newest first."""
        f = normalize_filters(filters)
        for key in f:
            if key not in ("dangling", "reference", "label", "before", "since"):
                raise InvalidParameter(f"invalid filter '{key}'")
        dangling = None
        if "dangling" in f:
            value = ",".join(f["dangling"]).lower()
            if value not in ("true", "false", "1", "0"):
                raise InvalidParameter(f"invalid filter 'dangling={value}'")
            dangling = value in ("true", "1")
        before = min((self._created_of(x) for x in f.get("before", [])), default=None)
        since = max((self._created_of(x) for x in f.get("since", [])), default=None)
        out = []
        for row in self.db.images():
            tags, digests = self._tags_digests(row.id)
            # as dockerd: dangling are the untagged images no other is built on; unnamed
            # ones with children are intermediate, hidden unless all
            if dangling and (tags or self.db.children(row.id)):
                continue
            if not tags and not digests and (dangling is False or "reference" in f or (
                    not all and self.db.children(row.id))):
                continue
            cfg = json.loads(self.store.read(row.id))
            labels = (cfg.get("config") or {}).get("Labels") or {}
            if "label" in f and not all_labels_match(labels, f["label"]):
                continue
            if "reference" in f:
                tags = [t for t in tags if any(reference_match(t, p) for p in f["reference"])]
                digests = [d for d in digests if any(reference_match(d, p)
                                                     for p in f["reference"])]
                if not tags and not digests:
                    continue
            created = parse_created(row.created)
            if before is not None and created >= before:
                continue
            if since is not None and created <= since:
                continue
            out.append({
                "Id": row.id,
                "ParentId": row.parent or "",
                "RepoTags": tags,
                "RepoDigests": digests,
                "Created": int(created),
                "Size": row.size,
                "VirtualSize": row.size,
                "SharedSize": -1,
                "Labels": labels,
                "Containers": -1,
            })
        out.sort(key=lambda e: e["Created"], reverse=True)
        return out

    def _created_of(self, name: str) -> float:
        return parse_created(self.get(name).created)

    def inspect(self, name: str) -> dict[str, Any]:
        row = self.get(name)
        cfg = json.loads(self.store.read(row.id))
        tags, digests = self._tags_digests(row.id)
        layers = self.db.layers(row.id)
        graph: dict[str, Any] = {"Name": self.driver, "Data": None}
        if layers and self.driver == "overlay2":
            dirs = [str(self.snapshots.lower_path(la.chain_id)) for la in reversed(layers)]
            graph["Data"] = {"UpperDir": dirs[0], "LowerDir": ":".join(dirs[1:]) or None,
                             "MergedDir": None, "WorkDir": None}
        elif layers:
            graph["Data"] = {"Dir": str(self.snapshots.lower_path(layers[-1].chain_id))}
        return {
            "Id": row.id,
            "RepoTags": tags,
            "RepoDigests": digests,
            "Parent": row.parent or "",
            "Comment": cfg.get("comment", ""),
            "Created": cfg.get("created", ""),
            "Container": cfg.get("container", ""),
            "ContainerConfig": cfg.get("container_config") or {},
            "DockerVersion": cfg.get("docker_version", ""),
            "Author": cfg.get("author", ""),
            "Config": image_config_section(cfg.get("config")),
            "Architecture": cfg.get("architecture", ""),
            "Variant": cfg.get("variant") or None,
            "Os": cfg.get("os", ""),
            "OsVersion": cfg.get("os.version", ""),
            "Size": row.size,
            "VirtualSize": row.size,
            "GraphDriver": graph,
            "RootFS": {"Type": "layers", "Layers": [la.diff_id for la in layers]},
            "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
            "Descriptor": {"mediaType": row.manifest_media_type,
                           "digest": row.manifest_digest,
                           "size": self.store.size(row.manifest_digest)},
        }

    def history(self, name: str) -> list[dict[str, Any]]:
        row = self.get(name)
        cfg = json.loads(self.store.read(row.id))
        layers = self.db.layers(row.id)
        sizes = []
        for la in layers:
            snap = self.db.snapshot(la.chain_id, self.driver)
            sizes.append(snap["size"] if snap is not None else 0)
        hist = cfg.get("history") or [{} for _ in layers]
        entries = []
        li = 0
        for h in hist:
            size = 0
            if not h.get("empty_layer") and li < len(sizes):
                size = sizes[li]
                li += 1
            entries.append({
                "Id": "<missing>",
                "Created": int(parse_created(h.get("created"))),
                "CreatedBy": h.get("created_by", ""),
                "Tags": None,
                "Size": size,
                "Comment": h.get("comment", ""),
            })
        entries.reverse()
        # as dockerd: the newest entries name the image and its local parents, one each
        # (a build commits every step), older ones are "<missing>"
        image: ImageRow | None = row
        for entry in entries:
            if image is None:
                break
            tags, _ = self._tags_digests(image.id)
            entry["Id"], entry["Tags"] = image.id, tags or None
            image = self.db.get_image(image.parent) if image.parent else None
        return entries

    # -- gc / prune ---------------------------------------------------------------------------

    def gc(self) -> dict[str, int]:
        """Delete blobs and snapshots nothing references; returns what was reclaimed."""
        with self._lock:
            reclaimed = 0
            used_chains = self.db.used_chains(self.driver)
            removed_snaps = 0
            for row in self.db.snapshots(self.driver):
                if row["chain_id"] not in used_chains:
                    self.snapshots.remove_layer(row["chain_id"])
                    self.db.delete_snapshot(row["chain_id"], self.driver)
                    reclaimed += row["size"]
                    removed_snaps += 1
            known = {r["chain_id"] for r in self.db.snapshots(self.driver)}
            for chain in self.snapshots.layer_ids():
                if chain not in known:  # a directory without a record: crash leftover
                    self.snapshots.remove_layer(chain)
            used_blobs = self.db.used_blobs()
            removed_blobs = 0
            for d in list(self.store.digests()):
                if d not in used_blobs:
                    with contextlib.suppress(NotFound):
                        reclaimed += self.store.size(d)
                        self.store.delete(d)
                        removed_blobs += 1
            return {"blobs": removed_blobs, "snapshots": removed_snaps, "reclaimed": reclaimed}

    def prune(self, filters: dict[str, Any] | None = None) -> dict[str, Any]:
        """docker image prune: dangling images (all unused ones with dangling=false)."""
        f = normalize_filters(filters)
        dangling_only = f.get("dangling", ["true"])[0].lower() in ("true", "1")
        labels = f.get("label", [])
        until = f.get("until", [])
        deleted: list[dict] = []
        for row in reversed(self.db.images()):
            if self.db.get_image(row.id) is None or self.users(row.id):
                continue
            tags, _ = self._tags_digests(row.id)
            if dangling_only and tags:
                continue
            if self.db.children(row.id):
                continue
            cfg_labels = (json.loads(self.store.read(row.id)).get("config") or {}).get(
                "Labels") or {}
            if labels and not all_labels_match(cfg_labels, labels):
                continue
            if until and parse_created(row.created) >= _parse_until(until[0]):
                continue
            for r, _ in self.db.refs(row.id):
                self.db.delete_ref(r)
                deleted.append({"Untagged": self._familiar(r)})
            self.db.delete_image(row.id)
            deleted.append({"Deleted": row.id})
        reclaimed = self.gc()["reclaimed"]
        return {"ImagesDeleted": deleted or None, "SpaceReclaimed": reclaimed}

    # -- containers ---------------------------------------------------------------------------

    def prepare(self, container_id: str, image: str | None) -> MountSpec:
        """A fresh writable rootfs for a container (image None: an empty one)."""
        chains: list[str] = []
        image_id = None
        if image:
            image_id = self.resolve(image)
            chains = [la.chain_id for la in self.db.layers(image_id)]
            missing = [c for c in chains if not self._has_snapshot(c)]
            if missing:
                self.register(self.get(image_id).manifest_digest)  # re-unpack lost layers
        with self._lock:
            spec = self.snapshots.prepare(container_id, chains)
            self.db.add_container(container_id, image_id, chains[-1] if chains else None,
                                  self.driver)
        return spec

    def release(self, container_id: str) -> None:
        """Remove a container's rootfs (unmounting it if needed)."""
        with self._lock:
            self.snapshots.remove_container(container_id)
            self.db.delete_container(container_id)

    def container_image_chains(self, container_id: str) -> list[str]:
        """The layers under a container, bottom first (from its snapshots: the image may
        have been deleted since, as `rmi -f` does with an image of stopped containers)."""
        for row in self.db.containers(self.driver):
            if row["container_id"] == container_id:
                chains: list[str] = []
                chain = row["top_chain"]
                while chain:
                    chains.insert(0, chain)
                    snap = self.db.snapshot(chain, self.driver)
                    chain = snap["parent"] if snap is not None else None
                return chains
        raise NotFound(f"no rootfs for container {container_id}")

    def export(self, container_id: str, out: BinaryIO) -> None:
        """docker export: a tar of the container's merged filesystem."""
        from kobako.image import diff, snapshots

        chains = self.container_image_chains(container_id)
        if self.driver == "vfs":
            diff.write_tree(str(self.snapshots.upper_dir(container_id)), out)
            return
        upper = str(self.snapshots.upper_dir(container_id))
        init = self.snapshots.init_dir(container_id)
        lowers = [upper] + ([str(init)] if init.is_dir() else []) + [
            str(self.snapshots.lower_path(c)) for c in reversed(chains)]
        with tempfile.TemporaryDirectory(prefix="export-", dir=self.tmp) as mnt:
            if len(lowers) == 1:
                lowers.append(str(self.snapshots.root / "empty"))
            spec = MountSpec(type="overlay", source="overlay", target=mnt,
                             options=[f"lowerdir={':'.join(lowers)}"])
            snapshots.mount(spec)
            try:
                diff.write_tree(mnt, out)
            finally:
                snapshots.unmount(mnt)

    def container_diff(self, container_id: str, out: BinaryIO) -> None:
        """The container's changes as a layer tar (whiteouts as .wh. entries)."""
        from kobako.image import diff

        if self.driver == "vfs":
            chains = self.container_image_chains(container_id)
            base = str(self.snapshots.lower_path(chains[-1])) if chains else None
            init = self.snapshots.init_dir(container_id)
            diff.write_naive_diff(base, str(self.snapshots.upper_dir(container_id)), out,
                                  init=str(init) if init.is_dir() else None)
            return
        diff.write_overlay_diff(str(self.snapshots.upper_dir(container_id)), out)

    def commit(
        self,
        container_id: str,
        *,
        reference: str | None = None,
        changes: list[str] | None = None,
        config: dict[str, Any] | None = None,
        comment: str = "",
        author: str = "",
        container_config: dict[str, Any] | None = None,
        created_by: str = "",
    ) -> str:
        """docker commit: a new image of the container's image plus its changes."""
        from kobako.image.importer import apply_changes

        base_id = None
        for row in self.db.containers(self.driver):
            if row["container_id"] == container_id:
                base_id = row["image_id"]
                break
        if config is None:
            config = json.loads(self.store.read(base_id)).get("config") or {} if base_id else {}
        extra: dict[str, Any] = {"container": container_id, "author": author,
                                 "comment": comment}
        if container_config is not None:
            extra["container_config"] = container_config
        return self.derive(base_id, apply_changes(config, changes or []),
                           [{"created_by": created_by, "author": author, "comment": comment}],
                           layer_from=container_id, extra=extra, reference=reference)

    def cached_step(self, parent: str | None, key: str) -> str | None:
        """The image a build step `key` made on `parent` before, if it is still here."""
        image_id = self.db.cached_step(parent or "", key)
        return image_id if image_id and self.db.get_image(image_id) else None

    def cache_step(self, parent: str | None, key: str, image_id: str) -> None:
        self.db.cache_step(parent or "", key, image_id)

    def derive(
        self,
        parent: str | None,
        config: dict[str, Any],
        history: list[dict[str, Any]],
        *,
        layer_from: str | None = None,
        layer_tar: str | None = None,
        extra: dict[str, Any] | None = None,
        reference: str | None = None,
    ) -> str:
        """A new image on `parent` (None: on nothing, as FROM scratch): `config` as its
        config section, `history` appended, and one more layer: the changes of the
        container `layer_from` (a commit, a build's RUN or COPY), or the tar file
        `layer_tar` (a build's COPY onto scratch)."""
        host = media.host_platform()
        cfg: dict[str, Any] = {"architecture": host.architecture, "os": host.os,
                               "rootfs": {"type": "layers", "diff_ids": []},
                               "history": [], "config": {}}
        layers: list[dict] = []
        if parent:
            cfg = json.loads(self.store.read(parent))
            layers = self.manifest(parent)["layers"]
        cfg["config"] = json.loads(json.dumps(config))
        cfg["created"] = now_rfc3339()
        layer: tuple[dict, str] | None = None
        if layer_from is not None:
            with tempfile.TemporaryFile(dir=self.tmp) as spool:
                self.container_diff(layer_from, spool)
                spool.seek(0)
                layer = self.put_layer_tar(spool)
        elif layer_tar is not None:
            with open(layer_tar, "rb") as f:
                layer = self.put_layer_tar(f)
        if layer is not None:
            desc, diff_id = layer
            layers = layers + [desc]
            cfg["rootfs"]["diff_ids"] = list(cfg["rootfs"].get("diff_ids", [])) + [diff_id]
        cfg["history"] = list(cfg.get("history") or []) + [
            {"created": cfg["created"], **entry} for entry in history]
        cfg.update(extra or {})
        cfg.pop("docker_version", None)
        return self.create_image(cfg, layers, refs=[reference] if reference else [],
                                 parent=parent)

    # -- save / load / import (implemented in archive.py and importer.py) -----------------------

    def save(self, names: list[str], out: BinaryIO,
             ready: Callable[[], None] | None = None) -> None:
        from kobako.image.archive import save

        save(self, names, out, ready)

    def load(self, source: BinaryIO | str, progress: Progress | None = None) -> list[str]:
        from kobako.image.archive import load

        return load(self, source, progress)

    def import_image(
        self,
        source: BinaryIO | str,
        *,
        reference: str | None = None,
        changes: list[str] | None = None,
        message: str = "",
        platform: str | None = None,
    ) -> str:
        from kobako.image.importer import import_rootfs

        return import_rootfs(self, source, reference=reference, changes=changes or [],
                             message=message, platform=platform)


# -- helpers --------------------------------------------------------------------------------


# dockerd's image delete conflicts: hard ones cannot be forced
_CHILDREN, _RUNNING_CONTAINER, _REFERENCE, _STOPPED_CONTAINER = 1, 2, 4, 8
_HARD = _CHILDREN | _RUNNING_CONTAINER
_SOFT = _REFERENCE | _STOPPED_CONTAINER


class _DeleteConflict(Conflict):
    def __init__(self, image_id: str, reason: str, hard: bool = False, used: bool = False):
        forced = "cannot be forced" if hard else "must be forced"
        super().__init__(f"conflict: unable to delete {short_id(image_id)} ({forced}) - {reason}")
        self.used = used


def _single_reference(refs: list[tuple[str, str]]) -> bool:
    """dockerd's isSingleReference: one tag, and digests only of that tag's repository."""
    if len(refs) <= 1:
        return len(refs) == 1
    tags = [parse_reference(r) for r, kind in refs if kind == "tag"]
    digest_repos = {parse_reference(r).name for r, kind in refs if kind != "tag"}
    if len(tags) > 1:
        return False
    single = tags[0] if tags else parse_reference(refs[0][0])
    return digest_repos == {single.name}


def _same_repository(key: str, ref: Reference) -> bool:
    return parse_reference(key).name == ref.name


def normalize_filters(filters: dict[str, Any] | str | None) -> dict[str, list[str]]:
    """Docker's filters JSON: {"k": ["v"]} or the old {"k": {"v": true}}; or its string."""
    if not filters:
        return {}
    if isinstance(filters, str):
        try:
            filters = json.loads(filters)
        except ValueError:
            raise InvalidParameter(f"invalid filters: {filters!r}") from None
    out: dict[str, list[str]] = {}
    for key, value in (filters or {}).items():
        if isinstance(value, dict):
            out[key] = [k for k, v in value.items() if v]
        elif isinstance(value, list | tuple):
            out[key] = [str(v) for v in value]
        else:
            out[key] = [str(value)]
    return out


def reference_match(familiar: str, pattern: str) -> bool:
    """docker's reference filter: glob on the familiar name with or without tag."""
    repo = familiar.split("@")[0]
    name = repo.rsplit(":", 1)[0] if ":" in repo.rsplit("/", 1)[-1] else repo
    if ":" not in pattern.rsplit("/", 1)[-1] and "@" not in pattern:
        return fnmatch.fnmatchcase(name, pattern)
    return fnmatch.fnmatchcase(repo, pattern) or fnmatch.fnmatchcase(familiar, pattern)


def all_labels_match(labels: dict[str, str], wanted: list[str]) -> bool:
    for w in wanted:
        if "=" in w:
            k, v = w.split("=", 1)
            if labels.get(k) != v:
                return False
        elif w not in labels:
            return False
    return True


def _parse_until(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        t = parse_created(value)
        if not t:
            raise InvalidParameter(f"invalid until filter {value!r}") from None
        return t


def image_config_section(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """The inspect "Config" section with Docker's keys present."""
    cfg = dict(cfg or {})
    defaults: dict[str, Any] = {
        "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False,
        "AttachStdout": False, "AttachStderr": False, "Tty": False, "OpenStdin": False,
        "StdinOnce": False, "Env": None, "Cmd": None, "Image": "", "Volumes": None,
        "WorkingDir": "", "Entrypoint": None, "OnBuild": None, "Labels": None,
    }
    for k, v in defaults.items():
        cfg.setdefault(k, v)
    return cfg


