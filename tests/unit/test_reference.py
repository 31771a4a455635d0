"""Reference parsing and normalization, checked against docker's behaviour."""

from __future__ import annotations

import pytest

from kobako.image.errors import InvalidReference
from kobako.image.reference import normalize_registry, parse, registry_api_host

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "text, registry, repository, tag, digest, full, familiar",
    [
        ("busybox", "docker.io", "library/busybox", "latest", None,
         "docker.io/library/busybox:latest", "busybox:latest"),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", None,
         "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("library/busybox", "docker.io", "library/busybox", "latest", None,
         "docker.io/library/busybox:latest", "busybox:latest"),
        ("docker.io/busybox", "docker.io", "library/busybox", "latest", None,
         "docker.io/library/busybox:latest", "busybox:latest"),
        ("index.docker.io/library/busybox", "docker.io", "library/busybox", "latest", None,
         "docker.io/library/busybox:latest", "busybox:latest"),
        ("user/app", "docker.io", "user/app", "latest", None,
         "docker.io/user/app:latest", "user/app:latest"),
        ("localhost/app", "localhost", "app", "latest", None,
         "localhost/app:latest", "localhost/app:latest"),
        ("localhost:5000/a/b:tag", "localhost:5000", "a/b", "tag", None,
         "localhost:5000/a/b:tag", "localhost:5000/a/b:tag"),
        ("127.0.0.1:5000/x", "127.0.0.1:5000", "x", "latest", None,
         "127.0.0.1:5000/x:latest", "127.0.0.1:5000/x:latest"),
        (f"host.example/a@{D}", "host.example", "a", None, D,
         f"host.example/a@{D}", f"host.example/a@{D}"),
        (f"a:tag@{D}", "docker.io", "library/a", "tag", D,
         f"docker.io/library/a:tag@{D}", f"a:tag@{D}"),
        (f"busybox@{D}", "docker.io", "library/busybox", None, D,
         f"docker.io/library/busybox@{D}", f"busybox@{D}"),
        ("a.b-c/d__e--f.g:T_1.x-y", "a.b-c", "d__e--f.g", "T_1.x-y", None,
         "a.b-c/d__e--f.g:T_1.x-y", "a.b-c/d__e--f.g:T_1.x-y"),
        ("[::1]:5000/img", "[::1]:5000", "img", "latest", None,
         "[::1]:5000/img:latest", "[::1]:5000/img:latest"),
        ("Registry.Example:443/ns/img", "Registry.Example:443", "ns/img", "latest", None,
         "Registry.Example:443/ns/img:latest", "Registry.Example:443/ns/img:latest"),
    ],
)
def test_parse(text, registry, repository, tag, digest, full, familiar) -> None:
    ref = parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag,
                                                                   digest)
    assert str(ref) == full
    assert ref.familiar() == familiar


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "invalid reference format"),
        ("Busybox", "repository name (library/Busybox) must be lowercase"),
        ("docker.io/User/app", "must be lowercase"),
        ("a" * 64, "cannot specify 64-byte hexadecimal strings"),
        ("busybox:", "invalid reference format"),
        ("busybox:-tag", "invalid reference format"),
        ("busybox@sha256:abc", "invalid reference format"),
        ("-busybox", "invalid reference format"),
        ("busy..box", "invalid reference format"),
        ("host:port/img", "invalid reference format"),
        ("a//b", "invalid reference format"),
        ("a.b-c__d/e", "invalid reference format"),
        ("busybox:" + "t" * 129, "invalid reference format"),
        ("x/" + "a" * 260, "must not be more than 255 characters"),
        ("UPPER:5000/img:Tag", None),  # uppercase is fine in the host and the tag
    ],
)
def test_invalid(text: str, message: str | None) -> None:
    if message is None:
        assert parse(text).repository == "img"
        return
    with pytest.raises(InvalidReference, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(text)


def test_names_and_hosts() -> None:
    ref = parse("busybox")
    assert ref.name == "busybox"
    assert ref.full_name == "docker.io/library/busybox"
    assert ref.api_host == "registry-1.docker.io"
    assert parse("org/img").name == "org/img"
    assert parse("localhost:5000/library/img").name == "localhost:5000/library/img"
    assert parse("docker.io/library/a/b").name == "library/a/b"
    assert registry_api_host("quay.io") == "quay.io"
    assert parse("busybox", default_tag=False).tag is None
    assert parse("busybox").reference == "latest"
    assert parse(f"busybox@{D}").reference == D
    assert parse("busybox").with_tag("x").familiar() == "busybox:x"
    with pytest.raises(InvalidReference):
        parse("busybox").with_tag("bad tag")


@pytest.mark.parametrize(
    "given, expected",
    [
        ("https://index.docker.io/v1/", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("docker.io", "docker.io"),
        ("", "docker.io"),
        ("http://127.0.0.1:5000/", "127.0.0.1:5000"),
        ("quay.io", "quay.io"),
    ],
)
def test_normalize_registry(given: str, expected: str) -> None:
    assert normalize_registry(given) == expected
