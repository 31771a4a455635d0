"""docker save / docker load.

save writes what `docker save` of Docker 25+ writes: an OCI image layout (oci-layout,
index.json, blobs/sha256/...) plus the legacy manifest.json and repositories, with
uncompressed layers stored under their diff ids. load reads that, older docker-archive
tars (<id>/layer.tar, <id>.json) and plain OCI layouts (e.g. from skopeo).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO

from kobako.image import media
from kobako.image.errors import InvalidParameter, InvalidReference, NotFound, UnsafeArchive
from kobako.image.reference import parse as parse_reference
from kobako.image.store import parse_digest

if TYPE_CHECKING:
    from kobako.image.images import ImageService, Progress

_BUF = 1 << 20
_NAME_ANNOTATION = "io.containerd.image.name"
_REF_ANNOTATION = "org.opencontainers.image.ref.name"


def _json_bytes(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


class _TarOut:
    def __init__(self, out: BinaryIO):
        self.tf = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=_BUF)
        self.written: set[str] = set()
        self.sizes: dict[str, int] = {}

    def dir(self, name: str) -> None:
        if name in self.written:
            return
        self.written.add(name)
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode = tarfile.DIRTYPE, 0o755
        self.tf.addfile(ti)

    def file(self, name: str, data: bytes | None = None, src: BinaryIO | None = None,
             size: int = 0) -> None:
        if name in self.written:
            return
        self.written.add(name)
        ti = tarfile.TarInfo(name)
        ti.mode = 0o644
        ti.size = len(data) if data is not None else size
        self.tf.addfile(ti, io.BytesIO(data) if data is not None else src)


def save(service: ImageService, names: list[str], out: BinaryIO,
         ready: Callable[[], None] | None = None) -> None:
    """Write the images `names` (references or IDs) as one docker-archive tar;
    `ready()` once every name is found, before anything is written."""
    if not names:
        raise InvalidParameter("no images given to save")
    chosen = _images_to_save(service, names)
    if ready:
        ready()
    tar = _TarOut(out)
    tar.dir("blobs/")
    tar.dir("blobs/sha256/")
    legacy_manifest: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    index_entries: list[dict[str, Any]] = []
    for image_id, tags in chosen.items():
        config_bytes = service.store.read(image_id)
        layers = service.db.layers(image_id)
        layer_paths, layer_descs = [], []
        with tempfile.TemporaryDirectory(dir=service.tmp) as tmpd:
            for la in layers:
                path = f"blobs/sha256/{parse_digest(la.diff_id)[1]}"
                size = _write_uncompressed_layer(service, la.blob_digest, la.diff_id,
                                                 path, tar, tmpd)
                layer_paths.append(path)
                layer_descs.append({"mediaType": media.OCI_LAYER, "digest": la.diff_id,
                                    "size": size})
        config_path = f"blobs/sha256/{parse_digest(image_id)[1]}"
        tar.file(config_path, config_bytes)
        mbytes = _json_bytes(media.oci_manifest(image_id, len(config_bytes), layer_descs))
        mdigest = _sha256(mbytes)
        tar.file(f"blobs/sha256/{parse_digest(mdigest)[1]}", mbytes)
        legacy_manifest.append({"Config": config_path, "RepoTags": tags or None,
                                "Layers": layer_paths})
        desc = {"mediaType": media.OCI_MANIFEST, "digest": mdigest, "size": len(mbytes)}
        if not tags:
            index_entries.append(dict(desc))
        top = layers[-1].chain_id if layers else image_id
        for t in tags:
            ref = parse_reference(t)
            index_entries.append({**desc, "annotations": {_NAME_ANNOTATION: str(ref),
                                                          _REF_ANNOTATION: ref.tag}})
            repositories.setdefault(ref.name, {})[ref.tag] = parse_digest(top)[1]
    tar.file("oci-layout", _json_bytes({"imageLayoutVersion": "1.0.0"}))
    tar.file("index.json", _json_bytes({
        "schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": index_entries,
    }))
    tar.file("manifest.json", _json_bytes(legacy_manifest))
    if repositories:
        tar.file("repositories", _json_bytes(repositories))
    tar.tf.close()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _images_to_save(service: ImageService, names: list[str]) -> dict[str, list[str]]:
    """Image ID -> the tags saved with it, as dockerd's tarexporter chooses: a tagged
    name saves that tag, a bare name every tag of its repository, an ID or a digest
    reference the image alone."""
    chosen: dict[str, list[str]] = {}

    def add(image_id: str, tag: str | None) -> None:
        tags = chosen.setdefault(image_id, [])
        if tag and tag not in tags:
            tags.append(tag)

    for name in names:
        try:
            ref = parse_reference(name, default_tag=False)
        except InvalidReference:
            ref = None  # a 64-hex ID, say: resolve() tells
        if ref is not None and not ref.tag and not ref.digest:
            tagged = [(parse_reference(n), image_id) for n, image_id, kind
                      in service.db.all_refs() if kind == "tag"]
            same_repo = sorted((r.familiar(), image_id) for r, image_id in tagged
                               if (r.registry, r.repository) == (ref.registry, ref.repository))
            for tag, image_id in same_repo:
                add(image_id, tag)
            if same_repo:
                continue
        image_id = service.resolve(name)
        if ref is None or ref.digest or service._is_id(name, image_id):
            add(image_id, None)
        else:
            add(image_id, ref.familiar())
    return chosen


def _write_uncompressed_layer(service: ImageService, blob: str, diff_id: str, path: str,
                              tar: _TarOut, tmpd: str) -> int:
    if path in tar.written:
        return tar.sizes[path]
    with service.store.open(blob) as raw:
        stream = media.decompressed(raw)
        tmp = os.path.join(tmpd, "layer")
        h = hashlib.sha256()
        with open(tmp, "wb") as f:
            while chunk := stream.read(_BUF):
                h.update(chunk)
                f.write(chunk)
    if "sha256:" + h.hexdigest() != diff_id:
        raise InvalidParameter(f"layer blob {blob} does not decompress to {diff_id}")
    size = os.path.getsize(tmp)
    with open(tmp, "rb") as f:
        tar.file(path, src=f, size=size)
    tar.sizes[path] = size
    os.unlink(tmp)
    return size


# -- load ---------------------------------------------------------------------------------


class _Archive:
    """Random access to the members of an archive tar (spooled to disk when streamed)."""

    def __init__(self, source: BinaryIO | str, tmpdir: str):
        if isinstance(source, str | os.PathLike):
            self.tf = tarfile.open(source, mode="r:*")
        else:
            seekable = False
            try:
                seekable = source.seekable()
            except (AttributeError, OSError):
                pass
            if not seekable:
                spool = tempfile.TemporaryFile(dir=tmpdir)
                shutil.copyfileobj(source, spool, _BUF)
                spool.seek(0)
                source = spool
            self.tf = tarfile.open(fileobj=source, mode="r:*")
        self.members: dict[str, tarfile.TarInfo] = {}
        for m in self.tf.getmembers():
            self.members[posixpath.normpath(m.name.lstrip("/"))] = m

    def has(self, name: str) -> bool:
        return posixpath.normpath(name) in self.members

    def member(self, name: str) -> tarfile.TarInfo:
        norm = posixpath.normpath(name)
        if norm.startswith("../") or norm == "..":
            raise UnsafeArchive(f"archive path {name!r} points outside the archive")
        seen = 0
        m = self.members.get(norm)
        while m is not None and (m.issym() or m.islnk()) and seen < 16:
            # docker-archive from docker < 25 links duplicate layers to each other
            target = m.linkname if m.islnk() else posixpath.join(posixpath.dirname(norm),
                                                                 m.linkname)
            norm = posixpath.normpath(target)
            m = self.members.get(norm)
            seen += 1
        if m is None or not m.isreg():
            raise NotFound(f"{name} not found in the archive")
        return m

    def open(self, name: str) -> BinaryIO:
        f = self.tf.extractfile(self.member(name))
        assert f is not None
        return f  # type: ignore[return-value]

    def read(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()


def load(service: ImageService, source: BinaryIO | str,
         progress: Progress | None = None) -> list[str]:
    """Load images from a docker-archive or OCI-layout tar; returns Docker's
    "Loaded image: name:tag" / "Loaded image ID: sha256:..." lines."""
    with tempfile.TemporaryDirectory(dir=service.tmp) as tmpd:
        try:
            archive = _Archive(source, tmpd)
            if archive.has("manifest.json"):
                out = _load_docker(service, archive, progress)
            elif archive.has("index.json"):
                out = _load_oci(service, archive, progress)
            else:
                raise InvalidParameter("archive has neither manifest.json nor index.json")
        except (tarfile.TarError, EOFError) as err:  # not a tar, or a truncated one
            raise InvalidParameter(f"invalid archive: {err}") from None
    for line in out:
        if progress:
            progress({"stream": line + "\n"})
    return out


def _copy_blob(service: ImageService, archive: _Archive, path: str,
               expected: str | None = None) -> tuple[str, int]:
    m = archive.member(path)
    with archive.open(path) as f, service.store.writer(expected, m.size) as w:
        while chunk := f.read(_BUF):
            w.write(chunk)
        return w.commit(), m.size


def _load_docker(service: ImageService, archive: _Archive, progress) -> list[str]:
    try:
        entries = json.loads(archive.read("manifest.json"))
    except ValueError as e:
        raise InvalidParameter(f"manifest.json is not valid JSON: {e}") from None
    if not isinstance(entries, list):
        raise InvalidParameter("manifest.json is not a list")
    out = []
    for entry in entries:
        config_bytes = archive.read(entry["Config"])
        config = media.parse_config(config_bytes)
        config_digest = service.store.put(config_bytes)
        diff_ids = config["rootfs"]["diff_ids"]
        if len(diff_ids) != len(entry.get("Layers") or []):
            raise InvalidParameter(f"{entry['Config']}: layer count differs from its config")
        descs = []
        for layer_path, diff_id in zip(entry["Layers"], diff_ids, strict=True):
            if progress:
                progress({"status": "Loading layer", "id": diff_id.split(":")[1][:12],
                          "progressDetail": {}})
            digest, size = _copy_blob(service, archive, layer_path)
            with service.store.open(digest) as f:
                kind = media.sniff_compression(f.read(4))
            mt = {"gzip": media.OCI_LAYER_GZIP, "zstd": media.OCI_LAYER_ZSTD}.get(
                kind, media.OCI_LAYER)
            descs.append({"mediaType": mt, "digest": digest, "size": size})
        manifest = media.oci_manifest(config_digest, len(config_bytes), descs)
        mdigest = service.store.put(_json_bytes(manifest))
        tags = [parse_reference(t).familiar() for t in entry.get("RepoTags") or []]
        image_id = service.register(mdigest, refs=tags)
        if tags:
            out.extend(f"Loaded image: {t}" for t in tags)
        else:
            out.append(f"Loaded image ID: {image_id}")
    return out


def _load_oci(service: ImageService, archive: _Archive, progress) -> list[str]:
    index = media.load_json(archive.read("index.json"), "index.json")
    out = []
    for desc in index.get("manifests") or []:
        names = _names_from_annotations(desc.get("annotations") or {})
        image_id = _load_oci_desc(service, archive, desc, progress)
        if image_id is None:
            continue
        for n in names:
            service._set_ref(n, image_id)
        if names:
            out.extend(f"Loaded image: {parse_reference(n).familiar()}" for n in names)
        else:
            out.append(f"Loaded image ID: {image_id}")
    return out


def _names_from_annotations(ann: dict[str, str]) -> list[str]:
    name = ann.get(_NAME_ANNOTATION)
    if name:
        return [name]
    ref = ann.get(_REF_ANNOTATION)
    if ref:
        try:
            # a full reference (skopeo oci:dir:name:tag) or just a tag (umoci/skopeo tag)
            return [parse_reference(ref).familiar()] if ("/" in ref or ":" in ref) else []
        except Exception:
            return []
    return []


def _blob_path(digest: str) -> str:
    alg, hexd = parse_digest(digest)
    return f"blobs/{alg}/{hexd}"


def _load_oci_desc(service: ImageService, archive: _Archive, desc: dict[str, Any],
                   progress) -> str | None:
    mt, doc = media.parse_manifest(archive.read(_blob_path(desc["digest"])),
                                   desc.get("mediaType"))
    if mt in media.INDEX_TYPES:
        chosen = media.select_manifest(doc, media.host_platform())
        return _load_oci_desc(service, archive, chosen, progress)
    _copy_blob(service, archive, _blob_path(doc["config"]["digest"]), doc["config"]["digest"])
    for layer in doc["layers"]:
        if progress:
            progress({"status": "Loading layer", "id": layer["digest"].split(":")[1][:12],
                      "progressDetail": {}})
        if not service.store.has(layer["digest"]):
            _copy_blob(service, archive, _blob_path(layer["digest"]), layer["digest"])
    _copy_blob(service, archive, _blob_path(desc["digest"]), desc["digest"])
    return service.register(desc["digest"])
