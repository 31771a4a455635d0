"""Interop with skopeo: kobako pulls what skopeo pushed, skopeo reads what kobako pushed."""

from __future__ import annotations

import asyncio
import json
import pathlib
import shutil
import subprocess

import pytest
from registry_fixtures import Registry, put_image, random_layer

from kobako.image.pull import pull
from kobako.image.push import push
from kobako.image.store import ContentStore

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed"),
]


@pytest.fixture
def registry(tmp_path: pathlib.Path):
    with Registry(tmp_path) as reg:
        yield reg


def _skopeo(*args: str) -> str:
    proc = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _write_oci_layout(store: ContentStore, manifest_digest: str, tag: str,
                      out: pathlib.Path) -> None:
    """An OCI image layout holding one manifest and its blobs, written by hand."""
    (out / "blobs" / "sha256").mkdir(parents=True)
    manifest = json.loads(store.read(manifest_digest))
    for d in [manifest_digest, manifest["config"]["digest"],
              *(layer["digest"] for layer in manifest["layers"])]:
        shutil.copy(store.path(d), out / "blobs" / "sha256" / d.split(":")[1])
    (out / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (out / "index.json").write_text(json.dumps({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": manifest["mediaType"], "digest": manifest_digest,
            "size": store.size(manifest_digest),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    }))


def test_kobako_pulls_what_skopeo_pushed(registry: Registry, tmp_path: pathlib.Path) -> None:
    src = ContentStore(tmp_path / "src")
    img = put_image(src, [random_layer(30_000), random_layer(30_000)], oci=True)
    layout = tmp_path / "layout"
    _write_oci_layout(src, img.manifest_digest, "v1", layout)
    ref = f"{registry.host}/kobako-test/from-skopeo:v1"
    _skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://{ref}")
    dst = ContentStore(tmp_path / "dst")
    result = asyncio.run(pull(dst, ref))
    # skopeo keeps the image as it is (no compression change), so digests are identical.
    assert result.manifest_digest == img.manifest_digest
    assert result.config_digest == img.config_digest
    assert [d["digest"] for d in result.layers] == img.layers


def test_skopeo_reads_what_kobako_pushed(registry: Registry, tmp_path: pathlib.Path) -> None:
    src = ContentStore(tmp_path / "src")
    img = put_image(src, [random_layer(30_000), random_layer(10_000)])
    ref = f"{registry.host}/kobako-test/from-kobako:v2"
    asyncio.run(push(src, ref, img.manifest_digest))
    info = json.loads(_skopeo("inspect", "--tls-verify=false", f"docker://{ref}"))
    assert info["Digest"] == img.manifest_digest
    assert info["Layers"] == img.layers
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    raw = _skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}")
    assert raw.encode() == img.manifest
    # And skopeo can copy it out into an OCI layout, blobs intact.
    out = tmp_path / "copied"
    _skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{out}:v2")
    for d in img.layers:
        blob = out / "blobs" / "sha256" / d.split(":")[1]
        assert blob.read_bytes() == src.read(d)
