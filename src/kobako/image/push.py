"""Pushing an image from the content store to a registry.

Only blobs the registry lacks are uploaded (a HEAD first); a blob known to come from
another repository of the same registry is mounted across repositories instead;
small blobs go up in one monolithic PUT, large ones in PATCH chunks. Manifests go
last (children of an index before the index), so the registry never holds a
manifest whose blobs are missing. Progress goes out as Docker's JSON messages.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kobako.image import media
from kobako.image.auth import Authenticator, Credentials
from kobako.image.errors import ImageError, InvalidReference, NotFound
from kobako.image.pull import Progress, _Reporter, progress_bar, short_id
from kobako.image.reference import Reference, parse
from kobako.image.registry import RegistryClient
from kobako.image.store import ContentStore

# Where a blob is known to exist already: references ("host/repo[:tag]") whose
# repository holds it; those on the registry we push to are tried as mount sources.
MountSources = Callable[[str], Iterable[Reference | str]]
ClientFactory = Callable[[Reference], RegistryClient]

MONOLITHIC_MAX = 16 << 20
CHUNK_SIZE = 16 << 20


@dataclass
class PushResult:
    reference: Reference
    digest: str
    size: int
    media_type: str
    uploaded: list[str]
    mounted: list[str]
    existed: list[str]


async def push(
    store: ContentStore,
    ref: Reference | str,
    manifest_digest: str,
    *,
    auth: Authenticator | Credentials | None = None,
    progress: Progress | None = None,
    mount_sources: MountSources | None = None,
    client_factory: ClientFactory | None = None,
    insecure_registries: list[str] | None = None,
    max_concurrent: int = 3,
    monolithic_max: int = MONOLITHIC_MAX,
    chunk_size: int = CHUNK_SIZE,
) -> PushResult:
    """Push the manifest (or index) `manifest_digest` from `store` as `ref`.

    With a tag in `ref` the top manifest is put under that tag, otherwise by digest.
    """
    if isinstance(ref, str):
        ref = parse(ref, default_tag=False)
    if ref.digest and ref.digest != manifest_digest:
        raise InvalidReference(
            f"cannot push {manifest_digest} as {ref.familiar()}: the digest differs"
        )
    if client_factory is not None:
        client = client_factory(ref)
    else:
        client = RegistryClient(
            ref, auth=auth if isinstance(auth, Authenticator) else Authenticator(auth),
            insecure_registries=insecure_registries,
        )
    pusher = _Pusher(store, client, ref, _Reporter(progress), mount_sources, max_concurrent,
                     monolithic_max, chunk_size)
    async with client:
        return await pusher.run(manifest_digest)


class _Pusher:
    def __init__(
        self,
        store: ContentStore,
        client: RegistryClient,
        ref: Reference,
        report: _Reporter,
        mount_sources: MountSources | None,
        max_concurrent: int,
        monolithic_max: int,
        chunk_size: int,
    ):
        self.store = store
        self.client = client
        self.ref = ref
        self.repo = ref.repository
        self.report = report
        self.mount_sources = mount_sources
        self.sem = asyncio.Semaphore(max(1, max_concurrent))
        self.max_concurrent = max(1, max_concurrent)
        self.monolithic_max = monolithic_max
        self.chunk_size = chunk_size
        self.uploaded: list[str] = []
        self.mounted: list[str] = []
        self.existed: list[str] = []
        self._done: set[str] = set()

    async def run(self, manifest_digest: str) -> PushResult:
        self.report.status(f"The push refers to repository [{self.ref.full_name}]")
        data = self._read(manifest_digest, "manifest")
        media_type, doc = media.parse_manifest(data)
        if media_type in media.INDEX_TYPES:
            for child in doc["manifests"]:
                if not self.store.has(child["digest"]):
                    # Other platforms of a pulled index are usually not in the store.
                    continue
                child_data = self.store.read(child["digest"])
                child_type, child_doc = media.parse_manifest(child_data, child.get("mediaType"))
                if child_type in media.INDEX_TYPES:
                    raise ImageError(f"nested image index {child['digest']} is not supported")
                await self._push_blobs(child_doc)
                await self.client.put_manifest(self.repo, child["digest"], child_data,
                                               child_type)
        else:
            await self._push_blobs(doc)
        target = self.ref.tag or manifest_digest
        digest = await self.client.put_manifest(self.repo, target, data, media_type)
        tag = self.ref.tag or digest
        self.report.status(f"{tag}: digest: {digest} size: {len(data)}")
        self.report.status("", aux={"Tag": self.ref.tag or "", "Digest": digest,
                                    "Size": len(data)}, progressDetail={})
        return PushResult(self.ref, digest, len(data), media_type, self.uploaded,
                          self.mounted, self.existed)

    def _read(self, digest: str, what: str) -> bytes:
        try:
            return self.store.read(digest)
        except NotFound:
            raise NotFound(f"{what} {digest} is not in the content store") from None

    async def _push_blobs(self, manifest: dict[str, Any]) -> None:
        layers = [d for d in manifest["layers"] if d["digest"] not in self._done]
        for layer in layers:
            self.report.status("Preparing", id=short_id(layer["digest"]))
        for layer in layers[self.max_concurrent:]:
            self.report.status("Waiting", id=short_id(layer["digest"]))
        tasks = [asyncio.create_task(self._push_blob(d, quiet=False)) for d in layers]
        tasks.append(asyncio.create_task(self._push_blob(manifest["config"], quiet=True)))
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = [t for t in done if t.exception() is not None]
        if failed:
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise failed[0].exception()  # type: ignore[misc]

    async def _push_blob(self, desc: dict[str, Any], *, quiet: bool) -> None:
        digest = desc["digest"]
        if digest in self._done:
            return
        sid = short_id(digest)
        async with self.sem:
            if digest in self._done:
                return
            size = self.store.size(digest)
            if await self.client.blob_size(self.repo, digest, "pull,push") is not None:
                self.existed.append(digest)
                if not quiet:
                    self.report.status("Layer already exists", id=sid)
            elif (source := await self._mount(digest)) is not None:
                self.mounted.append(digest)
                if not quiet:
                    self.report.status(f"Mounted from {source}", id=sid)
            else:
                await self._upload(digest, size, sid, quiet)
                self.uploaded.append(digest)
                if not quiet:
                    self.report.status("Pushed", id=sid)
            self._done.add(digest)

    async def _mount(self, digest: str) -> str | None:
        """Try each known source repository; the one the blob was mounted from, or None."""
        if self.mount_sources is None:
            return None
        for source in self.mount_sources(digest):
            src = _repository_on(self.ref.registry, source)
            if src is None or src == self.repo:
                continue
            mounted, location = await self.client.mount_blob(self.repo, digest, src)
            if mounted:
                return src
            if location:
                await self._cancel_upload(location)
        return None

    async def _cancel_upload(self, location: str) -> None:
        """Drop the upload session a refused mount opened (registries expire them too)."""
        resp = await self.client.request(
            "DELETE", location, scopes=[f"repository:{self.repo}:pull,push"]
        )
        resp.release()

    async def _upload(self, digest: str, size: int, sid: str, quiet: bool) -> None:
        start = time.time()

        def on_progress(current: int) -> None:
            if quiet:
                return
            self.report.status(
                "Pushing", id=sid, progressDetail={"current": current, "total": size},
                progress=progress_bar(current, size, start),
            )

        if size <= self.monolithic_max:
            on_progress(0)
            await self.client.upload_monolithic(self.repo, digest, self.store.read(digest))
            on_progress(size)
            return
        with self.store.open(digest) as f:
            await self.client.upload_chunked(
                self.repo, digest, f, size, chunk_size=self.chunk_size, on_progress=on_progress
            )


def _repository_on(registry: str, source: Reference | str) -> str | None:
    """The repository path of `source` (a full reference) if it lives on `registry`."""
    if isinstance(source, str):
        try:
            source = parse(source, default_tag=False)
        except InvalidReference:
            return None
    return source.repository if source.registry == registry else None
