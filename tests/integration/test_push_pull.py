"""Push and pull against a real docker-registry on loopback (anonymous)."""

from __future__ import annotations

import asyncio
import json
import pathlib

import pytest
from registry_fixtures import (
    FaultProxy,
    Faults,
    Registry,
    put_image,
    put_index,
    random_layer,
)

from kobako.image.errors import DigestMismatch, UnsupportedMediaType
from kobako.image.pull import pull
from kobako.image.push import push
from kobako.image.registry import RegistryClient, RegistryNotFound
from kobako.image.store import ContentStore

pytestmark = pytest.mark.root


@pytest.fixture
def registry(tmp_path: pathlib.Path):
    with Registry(tmp_path) as reg:
        yield reg


def _stores(tmp_path: pathlib.Path) -> tuple[ContentStore, ContentStore]:
    return ContentStore(tmp_path / "src-store"), ContentStore(tmp_path / "dst-store")


def test_push_then_pull_round_trip(registry: Registry, tmp_path: pathlib.Path) -> None:
    src, dst = _stores(tmp_path)
    img = put_image(src, [random_layer(200_000), random_layer(50_000), random_layer(10)])
    ref = f"{registry.host}/kobako-test/roundtrip:v1"
    pushed: list[dict] = []
    res = asyncio.run(push(src, ref, img.manifest_digest, progress=pushed.append))
    assert res.digest == img.manifest_digest
    assert sorted(res.uploaded) == sorted([*img.layers, img.config_digest])
    statuses = [m.get("status") for m in pushed]
    assert statuses[0] == f"The push refers to repository [{registry.host}/kobako-test/roundtrip]"
    assert statuses.count("Pushed") == 3
    assert f"v1: digest: {img.manifest_digest} size: {len(img.manifest)}" in statuses

    pulled: list[dict] = []
    layers_seen: list[str] = []

    async def on_layer(desc: dict) -> None:
        assert dst.has(desc["digest"])  # committed before the callback
        layers_seen.append(desc["digest"])

    result = asyncio.run(pull(dst, ref, progress=pulled.append, on_layer=on_layer))
    assert result.manifest_digest == img.manifest_digest
    assert result.config_digest == img.config_digest
    assert sorted(layers_seen) == sorted(img.layers)
    for d in [*img.layers, img.config_digest, img.manifest_digest]:
        assert dst.read(d) == src.read(d)
    statuses = [m.get("status") for m in pulled]
    assert statuses[0] == "Pulling from kobako-test/roundtrip"
    assert statuses.count("Pull complete") == 3
    assert f"Digest: {img.manifest_digest}" in statuses
    assert statuses[-1] == f"Status: Downloaded newer image for {ref}"
    downloading = [m for m in pulled if m.get("status") == "Downloading"]
    assert downloading and all("progress" in m and "total" in m["progressDetail"]
                               for m in downloading)

    # Second pull: nothing downloaded again.
    again: list[dict] = []
    result2 = asyncio.run(pull(dst, ref, progress=again.append))
    assert result2.up_to_date and result2.downloaded == []
    assert [m["status"] for m in again].count("Already exists") == 3
    assert again[-1]["status"] == f"Status: Image is up to date for {ref}"

    # Pushing again uploads nothing.
    res2 = asyncio.run(push(src, ref, img.manifest_digest))
    assert res2.uploaded == [] and len(res2.existed) == 4


def test_pull_by_digest_and_oci_manifest(registry: Registry, tmp_path: pathlib.Path) -> None:
    src, dst = _stores(tmp_path)
    img = put_image(src, [random_layer(1000)], oci=True)
    repo = f"{registry.host}/kobako-test/oci"
    asyncio.run(push(src, f"{repo}:t", img.manifest_digest))
    result = asyncio.run(pull(dst, f"{repo}@{img.manifest_digest}"))
    assert result.manifest_digest == img.manifest_digest
    assert result.media_type == "application/vnd.oci.image.manifest.v1+json"


def test_push_index_pull_requested_platform(registry: Registry, tmp_path: pathlib.Path) -> None:
    src, _ = _stores(tmp_path)
    amd = put_image(src, [random_layer(3000)], arch="amd64")
    arm = put_image(src, [random_layer(3000)], arch="arm64", variant="v8")
    index = put_index(src, [
        (amd, {"os": "linux", "architecture": "amd64"}),
        (arm, {"os": "linux", "architecture": "arm64", "variant": "v8"}),
    ])
    ref = f"{registry.host}/kobako-test/multi:latest"
    res = asyncio.run(push(src, ref, index))
    assert res.digest == index

    for plat, want in (("linux/arm64", arm), ("linux/amd64", amd)):
        dst = ContentStore(tmp_path / f"dst-{plat.replace('/', '-')}")
        result = asyncio.run(pull(dst, ref, platform=plat))
        assert result.index_digest == index
        assert result.manifest_digest == want.manifest_digest
        assert result.layers[0]["digest"] == want.layers[0]
        other = arm if want is amd else amd
        assert not dst.has(other.layers[0])


def test_cross_repo_mount(registry: Registry, tmp_path: pathlib.Path) -> None:
    src, _ = _stores(tmp_path)
    img = put_image(src, [random_layer(5000), random_layer(5000)])
    first = f"{registry.host}/kobako-test/first:1"
    asyncio.run(push(src, first, img.manifest_digest))
    msgs: list[dict] = []
    res = asyncio.run(push(src, f"{registry.host}/kobako-test/second:1", img.manifest_digest,
                           mount_sources=lambda d: [first], progress=msgs.append))
    assert sorted(res.mounted) == sorted([*img.layers, img.config_digest])
    assert res.uploaded == []
    assert [m["status"] for m in msgs].count("Mounted from kobako-test/first") == 2


def test_chunked_upload(registry: Registry, tmp_path: pathlib.Path) -> None:
    src, dst = _stores(tmp_path)
    img = put_image(src, [random_layer(3_000_000)])
    ref = f"{registry.host}/kobako-test/chunked:1"
    res = asyncio.run(push(src, ref, img.manifest_digest, monolithic_max=1000,
                           chunk_size=1 << 20))
    assert img.layers[0] in res.uploaded
    result = asyncio.run(pull(dst, ref))
    assert dst.read(result.layers[0]["digest"]) == src.read(img.layers[0])


def test_missing_tag_is_manifest_unknown(registry: Registry, tmp_path: pathlib.Path) -> None:
    _, dst = _stores(tmp_path)
    with pytest.raises(RegistryNotFound, match="manifest unknown") as e:
        asyncio.run(pull(dst, f"{registry.host}/kobako-test/nothing:here"))
    assert e.value.status == 404


def _put_raw_manifest(registry: Registry, repo: str, tag: str, data: bytes, mt: str) -> None:
    async def go() -> None:
        async with RegistryClient(registry.host) as c:
            await c.put_manifest(repo, tag, data, mt)
    asyncio.run(go())


def test_layer_content_not_matching_digest_rejected(
    registry: Registry, tmp_path: pathlib.Path
) -> None:
    """A registry (here a proxy) serving other bytes than the layer digest names."""
    src, dst = _stores(tmp_path)
    img = put_image(src, [random_layer(40_000)])
    asyncio.run(push(src, f"{registry.host}/kobako-test/liar:1", img.manifest_digest))
    proxy = FaultProxy(registry.host, Faults(corrupt=img.layers[0])).start()
    try:
        with pytest.raises(DigestMismatch, match=img.layers[0]):
            asyncio.run(pull(dst, f"{proxy.host}/kobako-test/liar:1"))
    finally:
        proxy.stop()
    assert list(dst.digests()) == []  # not the layer, not the config, not the manifest
    assert list(dst.ingest.iterdir()) == []


def test_layer_shorter_than_descriptor_rejected(
    registry: Registry, tmp_path: pathlib.Path
) -> None:
    src, dst = _stores(tmp_path)
    img = put_image(src, [random_layer(4000)])
    asyncio.run(push(src, f"{registry.host}/kobako-test/short:1", img.manifest_digest))
    manifest = json.loads(img.manifest)
    manifest["layers"][0]["size"] += 7  # the registry does not check descriptor sizes
    _put_raw_manifest(registry, "kobako-test/short", "bad", json.dumps(manifest).encode(),
                      img.media_type)
    with pytest.raises(Exception, match=img.layers[0]):
        asyncio.run(pull(dst, f"{registry.host}/kobako-test/short:bad", retries=1, backoff=0))
    assert list(dst.digests()) == []
    assert list(dst.ingest.iterdir()) == []


def test_unknown_layer_media_type(registry: Registry, tmp_path: pathlib.Path) -> None:
    src, dst = _stores(tmp_path)
    img = put_image(src, [random_layer(100)])
    ref = f"{registry.host}/kobako-test/weird:1"
    asyncio.run(push(src, ref, img.manifest_digest))
    manifest = json.loads(img.manifest)
    manifest["layers"][0]["mediaType"] = "application/x-kobako-unknown"
    _put_raw_manifest(registry, "kobako-test/weird", "2", json.dumps(manifest).encode(),
                      img.media_type)
    with pytest.raises(UnsupportedMediaType, match="application/x-kobako-unknown"):
        asyncio.run(pull(dst, f"{registry.host}/kobako-test/weird:2"))
    assert list(dst.digests()) == []


def test_pull_by_wrong_digest_rejected(registry: Registry, tmp_path: pathlib.Path) -> None:
    """A registry answering a digest request with other content must be refused."""
    src, dst = _stores(tmp_path)
    img = put_image(src, [random_layer(100)])
    repo = f"{registry.host}/kobako-test/dig"
    asyncio.run(push(src, f"{repo}:1", img.manifest_digest))

    class Lying(RegistryClient):
        async def get_manifest(self, repository, reference, accept=()):  # type: ignore[override]
            return await super().get_manifest(repository, "1")

    wrong = "sha256:" + "ab" * 32
    with pytest.raises(DigestMismatch):
        asyncio.run(pull(dst, f"{repo}@{wrong}", client_factory=lambda r: Lying(r)))
    assert list(dst.digests()) == []


def test_chunked_upload_survives_dropped_patch(registry: Registry, tmp_path: pathlib.Path) -> None:
    src, dst = _stores(tmp_path)
    img = put_image(src, [random_layer(2_500_000)])
    proxy = FaultProxy(registry.host, Faults(drop_patches=2)).start()
    try:
        ref = f"{proxy.host}/kobako-test/chunkdrop:1"
        res = asyncio.run(push(src, ref, img.manifest_digest, monolithic_max=1000,
                               chunk_size=1 << 20))
        assert proxy.faults.drop_patches == 0  # both drops happened
    finally:
        proxy.stop()
    assert img.layers[0] in res.uploaded
    result = asyncio.run(pull(dst, f"{registry.host}/kobako-test/chunkdrop:1"))
    assert dst.read(result.layers[0]["digest"]) == src.read(img.layers[0])
