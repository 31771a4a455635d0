"""Media types, manifest/index/config parsing, layer decompression and platform choice.

Covers the OCI image spec v1 (index, manifest, config; layers plain, gzip, zstd) and
Docker's v2 schema2 manifest and manifest list.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import platform as _platform
from dataclasses import dataclass
from typing import Any, BinaryIO

import zstandard

from kobako.image.errors import InvalidParameter, NotFound, UnsupportedMediaType

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_ND = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_ND_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_ND_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})

_LAYER_COMPRESSION = {
    OCI_LAYER: "none",
    OCI_LAYER_ND: "none",
    DOCKER_LAYER: "none",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ND_GZIP: "gzip",
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_LAYER_FOREIGN_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    OCI_LAYER_ND_ZSTD: "zstd",
    DOCKER_LAYER_ZSTD: "zstd",
}
LAYER_TYPES = frozenset(_LAYER_COMPRESSION)

# What the registry client sends as Accept when fetching a manifest.
MANIFEST_ACCEPT = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)

_READ = 1 << 20


# -- documents ------------------------------------------------------------------------------


def oci_manifest(config_digest: str, config_size: int, layers: list[dict]) -> dict[str, Any]:
    """An OCI image manifest for a config and layer descriptors."""
    return {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
            "layers": layers}


def load_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidParameter(f"{what} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidParameter(f"{what} is not a JSON object")
    return doc


def detect_media_type(doc: dict[str, Any], header: str | None = None) -> str:
    """The media type of a manifest-ish document (its own field wins over the header)."""
    mt = doc.get("mediaType") or (header or "").split(";")[0].strip()
    if not mt:
        # OCI allows mediaType to be absent: tell index from manifest by shape
        if "manifests" in doc:
            mt = OCI_INDEX
        elif "layers" in doc and "config" in doc:
            mt = OCI_MANIFEST
        elif doc.get("schemaVersion") == 1:
            raise UnsupportedMediaType("application/vnd.docker.distribution.manifest.v1+json")
    if mt not in INDEX_TYPES and mt not in MANIFEST_TYPES:
        raise UnsupportedMediaType(mt or None, "manifest")
    return mt


def parse_manifest(data: bytes, header_media_type: str | None = None) -> tuple[str, dict]:
    """Parse an image manifest or an index; returns (media type, document)."""
    doc = load_json(data, "manifest")
    mt = detect_media_type(doc, header_media_type)
    if mt in INDEX_TYPES:
        if not isinstance(doc.get("manifests"), list):
            raise InvalidParameter("image index has no manifests list")
        for d in doc["manifests"]:
            check_descriptor(d, "index")
    else:
        check_descriptor(doc.get("config"), "manifest config")
        cfg_type = doc["config"].get("mediaType")
        if cfg_type and cfg_type not in CONFIG_TYPES:
            raise UnsupportedMediaType(cfg_type, "manifest config")
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise InvalidParameter("manifest has no layers list")
        for layer in layers:
            check_descriptor(layer, "manifest layers")
            layer_compression(layer.get("mediaType"))
    return mt, doc


def check_descriptor(desc: Any, where: str) -> None:
    if (
        not isinstance(desc, dict)
        or not isinstance(desc.get("digest"), str)
        or not isinstance(desc.get("size"), int)
        or desc["size"] < 0
    ):
        raise InvalidParameter(f"malformed descriptor in {where}: {desc!r}")


def parse_config(data: bytes) -> dict[str, Any]:
    cfg = load_json(data, "image config")
    rootfs = cfg.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise InvalidParameter("image config has no rootfs of type layers")
    if not isinstance(rootfs.get("diff_ids"), list):
        raise InvalidParameter("image config rootfs has no diff_ids")
    return cfg


# -- layers ---------------------------------------------------------------------------------


def layer_compression(media_type: str | None) -> str:
    """'none', 'gzip' or 'zstd' for a layer media type."""
    try:
        return _LAYER_COMPRESSION[media_type or ""]
    except KeyError:
        raise UnsupportedMediaType(media_type, "layer") from None


def sniff_compression(head: bytes) -> str:
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return "none"


def decompressed(raw: BinaryIO, compression: str | None = None) -> BinaryIO:
    """A reader of the uncompressed tar inside `raw`; sniffs the format when not given.

    Uncompressed media types are sniffed too: docker-archive layers carry no media type
    and some tools store gzip data under plain tar types.
    """
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw, _READ)
    actual = sniff_compression(buffered.peek(4)[:4])
    if compression == "zstd" and actual != "zstd":
        raise InvalidParameter("layer announced as zstd is not zstd data")
    if actual == "gzip":
        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    if actual == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(buffered, read_size=_READ)
    return buffered


def gzip_compress_stream(src: BinaryIO, dst: BinaryIO, level: int = 6) -> None:
    with gzip.GzipFile(fileobj=dst, mode="wb", compresslevel=level, mtime=0) as gz:
        while chunk := src.read(_READ):
            gz.write(chunk)


# -- platforms ------------------------------------------------------------------------------

_ARCH_ALIASES = {
    "x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm",
    "armel": "arm", "i386": "386", "i686": "386", "ppc64el": "ppc64le",
}
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7", "amd64": "v1"}


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def normalized(self) -> Platform:
        arch = _ARCH_ALIASES.get(self.architecture, self.architecture)
        variant = self.variant or _DEFAULT_VARIANT.get(arch, "")
        if arch == "arm64" and variant == "8":
            variant = "v8"
        return Platform(self.os.lower(), arch, variant)

    def matches(self, other: Platform) -> bool:
        """Whether `other` (an index entry) can run where `self` is wanted."""
        a, b = self.normalized(), other.normalized()
        return a.os == b.os and a.architecture == b.architecture and a.variant == b.variant

    def as_dict(self) -> dict[str, str]:
        d = {"os": self.os, "architecture": self.architecture}
        if self.variant:
            d["variant"] = self.variant
        return d


def parse_platform(text: str | None) -> Platform:
    """'linux/arm64/v8', 'linux/amd64', 'arm64' -> Platform; None/'' -> the host default."""
    if not text:
        return host_platform()
    parts = text.strip().lower().split("/")
    if len(parts) == 1:
        parts = ["linux", parts[0]]
    if len(parts) > 3 or not all(parts):
        raise InvalidParameter(f"invalid platform {text!r}")
    os_, arch = parts[0], _ARCH_ALIASES.get(parts[1], parts[1])
    return Platform(os_, arch, parts[2] if len(parts) == 3 else "")


def host_platform() -> Platform:
    machine = _platform.machine().lower()
    return Platform("linux", _ARCH_ALIASES.get(machine, machine) or "amd64")


def descriptor_platform(desc: dict[str, Any]) -> Platform | None:
    p = desc.get("platform")
    if not isinstance(p, dict):
        return None
    return Platform(p.get("os", ""), p.get("architecture", ""), p.get("variant", ""))


def select_manifest(index: dict[str, Any], want: Platform | None = None) -> dict[str, Any]:
    """The descriptor in `index` for platform `want` (host default).

    An exact match (with default variants filled in) wins; when the caller named no
    variant, any variant of the architecture is taken, highest variant first as
    containerd's matcher does.
    """
    want = want or host_platform()
    candidates = []
    for desc in index.get("manifests", []):
        if desc.get("mediaType") and desc["mediaType"] not in MANIFEST_TYPES | INDEX_TYPES:
            continue
        p = descriptor_platform(desc)
        if p is None or p.os == "unknown":
            continue  # attestation manifests and the like
        candidates.append((p, desc))
    for p, desc in candidates:
        if want.matches(p):
            return desc
    if not want.variant:
        wn = want.normalized()
        loose = [
            (p.normalized().variant, desc) for p, desc in candidates
            if p.normalized().os == wn.os and p.normalized().architecture == wn.architecture
        ]
        if loose:
            return sorted(loose, key=lambda x: x[0], reverse=True)[0][1]
    have = ", ".join(str(p) for p, _ in candidates) or "none"
    raise NotFound(f"no matching manifest for {want} in the manifest list entries (have: {have})")


def config_platform(config: dict[str, Any]) -> Platform:
    return Platform(
        config.get("os", "linux"), config.get("architecture", "amd64"), config.get("variant", "")
    )


def chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI ChainIDs: chain[0] = diff[0]; chain[n] = sha256(chain[n-1] + " " + diff[n])."""
    out: list[str] = []
    for d in diff_ids:
        if not out:
            out.append(d)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out
