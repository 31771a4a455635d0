"""Pulling an image from a registry into the content store.

The tag is resolved to a manifest (an index is narrowed to the wanted platform),
the layers are downloaded concurrently (bounded), each verified by the store's
BlobWriter as it streams, resumed with Range after a broken connection and handed
to `on_layer` as soon as it is committed, so the caller can unpack layers while
others still download. Blobs already in the store are not fetched again. The
config and manifest are stored last: a manifest in the store implies its blobs.
Progress goes out as Docker's JSON progress messages.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from kobako.image import media
from kobako.image.auth import Authenticator, Credentials
from kobako.image.errors import DigestMismatch, ImageError, RegistryError
from kobako.image.reference import Reference, parse
from kobako.image.registry import ConnectionFailed, RegistryClient
from kobako.image.store import BlobWriter, ContentStore
from kobako.units import human_size

Progress = Callable[[dict[str, Any]], None]
OnLayer = Callable[[dict[str, Any]], Awaitable[None]]
ClientFactory = Callable[[Reference], RegistryClient]

_CHUNK = 256 << 10
_PROGRESS_INTERVAL = 0.1  # seconds between two "Downloading" messages of one layer


@dataclass
class PullResult:
    reference: Reference
    manifest_digest: str
    manifest: dict[str, Any]
    media_type: str
    config_digest: str
    config: dict[str, Any]
    layers: list[dict[str, Any]]
    index_digest: str | None = None
    up_to_date: bool = False
    downloaded: list[str] = field(default_factory=list)


class PullError(RegistryError):
    """A pull failed after retries: names the blob and the cause."""


def progress_bar(current: int, total: int, start: float | None = None) -> str:
    """The `progress` string dockerd puts in a JSON message (jsonmessage.JSONProgress)."""
    if current <= 0 and total <= 0:
        return ""
    if total <= 0:
        return f"{human_size(current):>8}"
    pct = min(int(current / total * 100) // 2, 50)
    bar = "[" + "=" * pct + ">" + " " * (50 - pct) + "] "
    numbers = f"{human_size(current):>8}/{human_size(total)}"
    if current > total:
        numbers = f"{human_size(current):>8}"
    left = ""
    if start and current > 0 and pct < 50:
        elapsed = time.time() - start
        remaining = int(elapsed / current * (total - current))
        left = " " + _go_duration(remaining)
    return bar + numbers + left


def _go_duration(seconds: int) -> str:
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h{m}m{s}s"
    if m:
        return f"{m}m{s}s"
    return f"{s}s"


def short_id(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


class _Reporter:
    """Emits Docker's JSON progress messages; a no-op without a callback."""

    def __init__(self, progress: Progress | None):
        self._progress = progress
        self._last: dict[str, float] = {}

    def status(self, status: str, id: str | None = None, **extra: Any) -> None:
        if self._progress is None:
            return
        msg: dict[str, Any] = {"status": status}
        if id is not None:
            msg["progressDetail"] = {}
            msg["id"] = id
        msg.update(extra)
        self._progress(msg)

    def downloading(self, id: str, current: int, total: int, start: float,
                    force: bool = False) -> None:
        if self._progress is None:
            return
        now = time.monotonic()
        if not force and now - self._last.get(id, 0.0) < _PROGRESS_INTERVAL:
            return
        self._last[id] = now
        self._progress({
            "status": "Downloading",
            "progressDetail": {"current": current, "total": total, "start": int(start)},
            "progress": progress_bar(current, total, start),
            "id": id,
        })


def _as_authenticator(auth: Authenticator | Credentials | None) -> Authenticator:
    if isinstance(auth, Authenticator):
        return auth
    return Authenticator(auth)


async def pull(
    store: ContentStore,
    ref: Reference | str,
    *,
    platform: str | media.Platform | None = None,  # the host's
    auth: Authenticator | Credentials | None = None,
    progress: Progress | None = None,
    on_layer: OnLayer | None = None,
    max_concurrent: int = 3,
    client_factory: ClientFactory | None = None,
    insecure_registries: list[str] | None = None,
    mirrors: list[str] | None = None,
    retries: int = 5,
    backoff: float = 0.5,
    final_status: bool = True,
) -> PullResult:
    """Pull `ref` into `store`. `on_layer(descriptor)` is awaited once per distinct
    layer as soon as its blob is in the store (at once for blobs already there, while
    the others download; calls run concurrently); "Pull complete" is reported when it
    returns for a downloaded layer.
    """
    if isinstance(ref, str):
        ref = parse(ref)
    want = platform if isinstance(platform, media.Platform) else media.parse_platform(platform)
    if client_factory is not None:
        client = client_factory(ref)
    else:
        client = RegistryClient(
            ref, auth=_as_authenticator(auth), insecure_registries=insecure_registries,
            mirrors=mirrors,
        )
    report = _Reporter(progress)
    async with client:
        return await _Puller(
            store, client, ref, want, report, on_layer, max_concurrent, retries, backoff,
            final_status,
        ).run()


async def inspect_remote(
    ref: Reference | str,
    *,
    auth: Authenticator | Credentials | None = None,
    insecure_registries: list[str] | None = None,
    mirrors: list[str] | None = None,
) -> dict[str, Any]:
    """What the registry holds for `ref`, pulling nothing (GET /distribution/{name}/json):
    the top manifest's descriptor and the platforms it serves (an index lists them; a
    single image's come from its config)."""
    if isinstance(ref, str):
        ref = parse(ref)
    client = RegistryClient(ref, auth=_as_authenticator(auth),
                            insecure_registries=insecure_registries, mirrors=mirrors)
    async with client:
        top = await client.get_manifest(ref.repository, ref.reference)
        media_type, doc = media.parse_manifest(top.data, top.media_type)
        if media_type in media.INDEX_TYPES:
            platforms = [m["platform"] for m in doc.get("manifests") or []
                         if isinstance(m.get("platform"), dict)]
        else:
            config = json.loads(await client.read_blob(ref.repository, doc["config"]["digest"]))
            platforms = [{k: config[k] for k in ("architecture", "os", "variant")
                          if config.get(k)}]
    return {"Descriptor": {"mediaType": media_type, "digest": top.digest,
                           "size": len(top.data)},
            "Platforms": platforms}


class _Puller:
    def __init__(
        self,
        store: ContentStore,
        client: RegistryClient,
        ref: Reference,
        want: media.Platform,
        report: _Reporter,
        on_layer: OnLayer | None,
        max_concurrent: int,
        retries: int,
        backoff: float,
        final_status: bool,
    ):
        self.store = store
        self.client = client
        self.ref = ref
        self.repo = ref.repository
        self.want = want
        self.report = report
        self.on_layer = on_layer
        self.sem = asyncio.Semaphore(max(1, max_concurrent))
        self.max_concurrent = max(1, max_concurrent)
        self.retries = retries
        self.backoff = backoff
        self.final_status = final_status
        self.downloaded: list[str] = []

    async def run(self) -> PullResult:
        ref = self.ref
        top = await self.client.get_manifest(self.repo, ref.reference)
        # after the manifest, as dockerd: a missing image or a refusal is then the
        # response's status (404...), not an error inside a stream already begun
        self.report.status(f"Pulling from {ref.repository}", id=ref.tag or ref.digest)
        if ref.digest and top.digest != ref.digest:
            raise DigestMismatch(
                f"manifest for {ref.familiar()} has digest {top.digest}, expected {ref.digest}",
                expected=ref.digest, actual=top.digest,
            )
        media_type, doc = media.parse_manifest(top.data, top.media_type)
        index_digest, index_data = None, None
        manifest_data, manifest_digest = top.data, top.digest
        if media_type in media.INDEX_TYPES:
            index_digest, index_data = top.digest, top.data
            desc = media.select_manifest(doc, self.want)
            sub = await self.client.get_manifest(self.repo, desc["digest"])
            if sub.digest != desc["digest"]:
                raise DigestMismatch(
                    f"manifest {desc['digest']} from the index has digest {sub.digest}",
                    expected=desc["digest"], actual=sub.digest,
                )
            media_type, doc = media.parse_manifest(sub.data, sub.media_type)
            if media_type in media.INDEX_TYPES:
                raise ImageError(f"nested image index {desc['digest']} is not supported")
            manifest_data, manifest_digest = sub.data, sub.digest
        up_to_date = self.store.has(manifest_digest)

        config_desc = doc["config"]
        if self.store.has(config_desc["digest"]):
            config_data = self.store.read(config_desc["digest"])
        else:
            config_data = await self.client.read_blob(self.repo, config_desc["digest"])
            if len(config_data) != config_desc["size"]:
                raise DigestMismatch(
                    f"config {config_desc['digest']}: got {len(config_data)} bytes, "
                    f"expected {config_desc['size']}",
                    expected=config_desc["digest"],
                )
        config = media.parse_config(config_data)

        layers: list[dict[str, Any]] = list(doc["layers"])
        await self._fetch_layers(layers)
        up_to_date = up_to_date and not self.downloaded

        # The config and the manifest last: a manifest in the store implies its blobs.
        self.store.put(config_data, config_desc["digest"])
        self.store.put(manifest_data, manifest_digest)
        if index_data is not None:
            self.store.put(index_data, index_digest)

        self.report.status(f"Digest: {index_digest or manifest_digest}")
        if self.final_status:
            what = "Image is up to date for" if up_to_date else "Downloaded newer image for"
            self.report.status(f"Status: {what} {ref.familiar()}")
        return PullResult(
            reference=ref, manifest_digest=manifest_digest, manifest=doc,
            media_type=media_type, config_digest=config_desc["digest"], config=config,
            layers=layers, index_digest=index_digest, up_to_date=up_to_date,
            downloaded=list(self.downloaded),
        )

    async def _fetch_layers(self, layers: list[dict[str, Any]]) -> None:
        seen: set[str] = set()
        present, missing = [], []
        for layer in layers:
            if layer["digest"] in seen:
                continue
            seen.add(layer["digest"])
            (present if self.store.has(layer["digest"]) else missing).append(layer)
        for layer in present:
            self.report.status("Already exists", id=short_id(layer["digest"]))
        for layer in missing:
            self.report.status("Pulling fs layer", id=short_id(layer["digest"]))
        for layer in missing[self.max_concurrent:]:
            self.report.status("Waiting", id=short_id(layer["digest"]))
        # Downloads start at once; present layers go to on_layer alongside them.
        tasks = [asyncio.create_task(self._layer(layer)) for layer in missing]
        if self.on_layer is not None:
            tasks += [asyncio.create_task(self.on_layer(layer)) for layer in present]
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = [t for t in done if t.exception() is not None]
        if failed:
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise failed[0].exception()  # type: ignore[misc]

    async def _layer(self, layer: dict[str, Any]) -> None:
        async with self.sem:
            await self._download(layer)
        self.downloaded.append(layer["digest"])
        if self.on_layer is not None:
            await self.on_layer(layer)
        self.report.status("Pull complete", id=short_id(layer["digest"]))

    async def _download(self, layer: dict[str, Any]) -> None:
        digest, size = layer["digest"], int(layer["size"])
        sid = short_id(digest)
        start = time.time()
        # A one-element holder: _stream replaces the writer if it must start over.
        holder = [self.store.writer(digest, size, resume=True)]
        failures = 0
        try:
            while holder[0].offset < size:
                try:
                    await self._stream(holder, digest, size, sid, start)
                except (ConnectionFailed, aiohttp.ClientPayloadError,
                        aiohttp.ClientConnectionError, TimeoutError) as e:
                    failures += 1
                    if failures > self.retries:
                        raise PullError(
                            f"failed to download layer {digest} after {failures} attempts "
                            f"({holder[0].offset} of {size} bytes): {e}"
                        ) from e
                    await asyncio.sleep(self.backoff * (2 ** (failures - 1)))
            self.report.downloading(sid, size, size, start, force=True)
            self.report.status("Verifying Checksum", id=sid)
            holder[0].commit()  # verifies digest and size; discards the data on mismatch
            self.report.status("Download complete", id=sid)
        except asyncio.CancelledError:
            holder[0].close()  # keep what we have: a later pull resumes it
            raise
        except BaseException:
            holder[0].abort()  # a failed pull leaves no partial blob behind
            raise

    async def _stream(
        self, holder: list[BlobWriter], digest: str, size: int, sid: str, start: float
    ) -> None:
        offset = holder[0].offset
        resp = await self.client.open_blob(self.repo, digest, offset)
        async with resp:
            if offset and resp.status == 200:
                # The registry ignored the Range header: start over.
                holder[0].abort()
                holder[0] = self.store.writer(digest, size, resume=False)
            elif resp.status == 206 and _range_start(resp.headers.get("Content-Range")) != offset:
                raise ConnectionFailed(f"blob {digest}: registry resumed at the wrong offset")
            writer = holder[0]
            async for chunk in resp.content.iter_chunked(_CHUNK):
                if writer.offset + len(chunk) > size:
                    raise DigestMismatch(
                        f"blob {digest} is larger than the {size} bytes its descriptor says",
                        expected=digest,
                    )
                writer.write(chunk)
                self.report.downloading(sid, writer.offset, size, start)
        if holder[0].offset < size:
            raise ConnectionFailed(
                f"blob {digest}: connection closed at {holder[0].offset} of {size} bytes"
            )


def _range_start(content_range: str | None) -> int | None:
    """The first byte of `Content-Range: bytes 100-199/200`."""
    if not content_range:
        return None
    try:
        return int(content_range.split()[-1].split("-")[0])
    except ValueError:
        return None


def result_json(result: PullResult) -> str:
    """A compact summary (used by tests and the bench)."""
    return json.dumps({
        "manifest_digest": result.manifest_digest,
        "config_digest": result.config_digest,
        "index_digest": result.index_digest,
        "layers": [layer["digest"] for layer in result.layers],
        "up_to_date": result.up_to_date,
    })
