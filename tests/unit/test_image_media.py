import gzip
import io
import json

import pytest
import zstandard

from kobako.image import media
from kobako.image.errors import InvalidParameter, NotFound, UnsafeArchive, UnsupportedMediaType
from kobako.image.images import normalize_filters, parse_created, reference_match
from kobako.image.importer import apply_changes
from kobako.image.unpack import clean_name

D = "sha256:" + "a" * 64


def desc(mt, plat=None, digest=D):
    d = {"mediaType": mt, "digest": digest, "size": 1}
    if plat:
        d["platform"] = plat
    return d


def test_parse_manifest_types():
    m = {"schemaVersion": 2, "mediaType": media.DOCKER_MANIFEST,
         "config": desc(media.DOCKER_CONFIG), "layers": [desc(media.DOCKER_LAYER_GZIP)]}
    assert media.parse_manifest(json.dumps(m).encode())[0] == media.DOCKER_MANIFEST
    m2 = dict(m)
    del m2["mediaType"]
    assert media.parse_manifest(json.dumps(m2).encode())[0] == media.OCI_MANIFEST
    m3 = dict(m, layers=[desc("application/x-weird")])
    with pytest.raises(UnsupportedMediaType):
        media.parse_manifest(json.dumps(m3).encode())
    with pytest.raises(UnsupportedMediaType):
        media.parse_manifest(json.dumps({"mediaType": "text/plain"}).encode())
    with pytest.raises(UnsupportedMediaType):
        media.parse_manifest(b'{"schemaVersion": 1, "fsLayers": []}')
    with pytest.raises(InvalidParameter):
        media.parse_manifest(b"not json")
    with pytest.raises(InvalidParameter):
        media.parse_manifest(json.dumps(dict(m, layers=[{"digest": D}])).encode())


def test_layer_compression_and_sniffing():
    assert media.layer_compression(media.OCI_LAYER_ZSTD) == "zstd"
    assert media.layer_compression(media.DOCKER_LAYER_GZIP) == "gzip"
    with pytest.raises(UnsupportedMediaType):
        media.layer_compression("application/vnd.oci.image.layer.v1.tar+bzip2")
    data = b"x" * 10000
    for blob in (data, gzip.compress(data), zstandard.ZstdCompressor().compress(data)):
        assert media.decompressed(io.BytesIO(blob)).read() == data
    with pytest.raises(InvalidParameter):
        media.decompressed(io.BytesIO(data), "zstd")


def test_select_manifest_platforms():
    index = {"manifests": [
        desc(media.OCI_MANIFEST, {"os": "linux", "architecture": "arm", "variant": "v6"},
             "sha256:" + "1" * 64),
        desc(media.OCI_MANIFEST, {"os": "linux", "architecture": "arm", "variant": "v7"},
             "sha256:" + "2" * 64),
        desc(media.OCI_MANIFEST, {"os": "linux", "architecture": "arm64", "variant": "v8"},
             "sha256:" + "3" * 64),
        desc(media.OCI_MANIFEST, {"os": "unknown", "architecture": "unknown"},
             "sha256:" + "4" * 64),
        desc(media.OCI_MANIFEST, {"os": "linux", "architecture": "amd64"},
             "sha256:" + "5" * 64),
    ]}
    pick = lambda p: media.select_manifest(index, media.parse_platform(p))["digest"][7]  # noqa: E731
    assert pick("linux/amd64") == "5"
    assert pick("linux/arm64") == "3"  # no variant asked: v8 is arm64's default
    assert pick("linux/arm/v6") == "1"
    assert pick("linux/arm") == "2"  # arm defaults to v7
    assert pick("aarch64") == "3"
    with pytest.raises(NotFound):
        pick("linux/s390x")
    with pytest.raises(InvalidParameter):
        media.parse_platform("a/b/c/d")


def test_chain_ids():
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    import hashlib
    assert media.chain_ids([a, b]) == [a, "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()]


def test_apply_changes():
    cfg = apply_changes({"Env": ["PATH=/bin", "A=1"], "Cmd": ["old"]}, [
        'ENTRYPOINT ["/bin/app"]', "CMD echo hi", "ENV A=2 B=\"x y\"", "ENV C three words",
        "WORKDIR /srv", "WORKDIR sub", "USER nobody", "EXPOSE 80 53/udp",
        'LABEL a=b "c d"=e', "VOLUME /data", 'VOLUME ["/v2"]', "STOPSIGNAL SIGTERM",
    ])
    assert cfg["Entrypoint"] == ["/bin/app"]
    assert cfg["Cmd"] == ["/bin/sh", "-c", "echo hi"]
    assert cfg["Env"] == ["PATH=/bin", "A=2", "B=x y", "C=three words"]
    assert cfg["WorkingDir"] == "/srv/sub" and cfg["User"] == "nobody"
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert cfg["Labels"] == {"a": "b", "c d": "e"}
    assert cfg["Volumes"] == {"/data": {}, "/v2": {}} and cfg["StopSignal"] == "SIGTERM"
    assert apply_changes({"Cmd": ["x"]}, ["ENTRYPOINT /e"])["Cmd"] is None
    with pytest.raises(InvalidParameter):
        apply_changes({}, ["RUN rm -rf /"])
    with pytest.raises(InvalidParameter):
        apply_changes({}, ["EXPOSE abc"])


def test_filters_and_references():
    assert normalize_filters('{"dangling": {"true": true}}') == {"dangling": ["true"]}
    assert normalize_filters({"label": ["a=b"]}) == {"label": ["a=b"]}
    assert reference_match("busybox:latest", "busy*")
    assert reference_match("busybox:latest", "busybox:lat*")
    assert not reference_match("busybox:latest", "busybox:1")
    assert reference_match("localhost:5000/x/y:1", "localhost:5000/x/*")
    assert parse_created("2024-01-02T03:04:05.123456789Z") == pytest.approx(1704164645.123456)


def test_clean_name():
    assert clean_name("./a/b/../c") == "a/c"
    assert clean_name("/etc/passwd") == "etc/passwd"
    assert clean_name("/../../etc") == "etc"
    assert clean_name("./") == "."
    for bad in ("..", "../x", "a/../../x"):
        with pytest.raises(UnsafeArchive):
            clean_name(bad)
