"""The classic builder's COPY rules without a daemon: which context files a source names,
and where each lands in the tar that is extracted into the image."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from kobako.engine.build import BuildFailed, _chmod, _matches, _write_copy_tar
from kobako.image.config_changes import port_key as _port


@pytest.fixture
def context(tmp_path):
    for name in ("a.txt", "b.txt", "c.log", "dir/x", "dir/sub/y"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    os.symlink("/etc/passwd", tmp_path / "escape")
    os.symlink("a.txt", tmp_path / "inside")
    return str(tmp_path)


def names(paths, dest, into_dir=False, chmod=None, unpack=False):
    out = io.BytesIO()
    _write_copy_tar(out, paths, dest, into_dir, chmod, set(paths) if unpack else set())
    out.seek(0)
    with tarfile.open(fileobj=out) as tf:
        return {m.name: m for m in tf.getmembers()}


def test_sources_wildcards_and_symlinks(context):
    assert _matches(context, "*.txt", "COPY") == [os.path.join(context, n)
                                                  for n in ("a.txt", "b.txt")]
    assert _matches(context, "/dir/../a.txt", "COPY") == [os.path.join(context, "a.txt")]
    assert _matches(context, "inside", "COPY") == [os.path.join(context, "inside")]
    assert _matches(context, ".", "COPY") == [context]
    assert _matches(context, "d?r/*", "COPY") == [os.path.join(context, "dir", n)
                                                  for n in ("sub", "x")]
    with pytest.raises(BuildFailed, match="outside the build context"):
        _matches(context, "escape", "COPY")
    with pytest.raises(BuildFailed, match="file not found in build context"):
        _matches(context, "nope", "COPY")
    with pytest.raises(BuildFailed, match="no source files"):
        _matches(context, "*.none", "COPY")


def test_where_files_land(context):
    a, b = os.path.join(context, "a.txt"), os.path.join(context, "b.txt")
    assert set(names([a], "/etc/renamed")) == {"etc/renamed"}
    assert set(names([a], "/opt/")) == {"opt/a.txt"}
    linked = names([os.path.join(context, "inside")], "/opt/")  # named as written, the
    assert linked["opt/inside"].isreg() and linked["opt/inside"].size == 5  # file it names
    assert set(names([a, b], "/opt", into_dir=True)) == {"opt/a.txt", "opt/b.txt"}
    # a directory's contents, not the directory itself
    assert set(names([os.path.join(context, "dir")], "/app")) == {
        "app/x", "app/sub", "app/sub/y"}
    members = names([a], "/f", chmod=0o640)
    assert members["f"].mode == 0o640 and (members["f"].uid, members["f"].gid) == (0, 0)


def test_add_unpacks_local_archives(context, tmp_path):
    archive = tmp_path / "bundle.tgz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(os.path.join(context, "dir"), arcname="top")
    assert set(names([str(archive)], "/dst/", unpack=True)) == {
        "dst/top", "dst/top/x", "dst/top/sub", "dst/top/sub/y"}
    assert set(names([str(archive)], "/dst/", unpack=False)) == {"dst/bundle.tgz"}


def test_modes_and_ports():
    assert _chmod("755") == 0o755 and _chmod(None) is None
    for bad in ("rwx", "99999", "-1"):
        with pytest.raises(BuildFailed):
            _chmod(bad)
    assert _port("8080") == "8080/tcp" and _port("53/UDP") == "53/udp"
    assert _port("7000-7002") == "7000-7002/tcp"
    with pytest.raises(ValueError):
        _port("http")
