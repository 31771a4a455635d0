"""Hostile and tricky layer tars against the real unpacker (needs root for devices,
owners and trusted.* xattrs)."""

import io
import os
import stat
import tarfile
import uuid

import pytest

from kobako.image.errors import UnsafeArchive
from kobako.image.unpack import unpack_layer

pytestmark = pytest.mark.root


def make_tar(entries) -> bytes:
    """entries: (name, kind, extra dict). kind: file/dir/sym/link/chr/blk/fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, extra in entries:
            ti = tarfile.TarInfo(name)
            data = extra.get("data", b"")
            ti.mode = extra.get("mode", 0o644)
            ti.uid, ti.gid = extra.get("uid", 0), extra.get("gid", 0)
            ti.mtime = extra.get("mtime", 1000000)
            ti.pax_headers = extra.get("pax", {})
            ti.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
                       "link": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE,
                       "blk": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            ti.linkname = extra.get("target", "")
            ti.devmajor, ti.devminor = extra.get("dev", (0, 0))
            ti.size = len(data) if kind == "file" else 0
            tf.addfile(ti, io.BytesIO(data) if kind == "file" else None)
    return buf.getvalue()


@pytest.fixture
def sandbox(tmp_path):
    """A layer dir with a sibling 'outside' dir that must never be touched."""
    base = tmp_path / f"kbtest-{uuid.uuid4().hex[:8]}"
    layer, outside = base / "layer", base / "outside"
    layer.mkdir(parents=True)
    outside.mkdir()
    (outside / "victim").write_text("original")
    yield layer, outside
    assert (outside / "victim").read_text() == "original"
    assert sorted(os.listdir(outside)) == ["victim"]


def unpack(data: bytes, dest, mode="overlay"):
    return unpack_layer(io.BytesIO(data), dest, mode=mode)


def test_dotdot_entry_rejected(sandbox):
    layer, outside = sandbox
    with pytest.raises(UnsafeArchive):
        unpack(make_tar([("../outside/victim", "file", {"data": b"pwned"})]), layer)


def test_dotdot_inside_is_cleaned(sandbox):
    layer, _ = sandbox
    unpack(make_tar([("a/../b", "file", {"data": b"x"})]), layer)
    assert (layer / "b").read_bytes() == b"x" and not (layer / "a").exists()


def test_absolute_path_stays_inside(sandbox):
    layer, outside = sandbox
    unpack(make_tar([(str(outside / "victim"), "file", {"data": b"pwned"})]), layer)
    assert (layer / str(outside / "victim").lstrip("/")).read_bytes() == b"pwned"


def test_write_through_symlink_created_earlier_stays_inside(sandbox):
    layer, outside = sandbox
    # the link resolves inside the layer root (as under docker's chroot), where the
    # target does not exist: the write fails instead of reaching the host's directory
    with pytest.raises(UnsafeArchive):
        unpack(make_tar([
            ("evil", "sym", {"target": str(outside)}),
            ("evil/victim", "file", {"data": b"pwned"}),
        ]), layer)
    assert os.readlink(layer / "evil") == str(outside)


def test_relative_symlink_climbing_out_rejected(sandbox):
    layer, outside = sandbox
    with pytest.raises(UnsafeArchive):
        unpack(make_tar([("a/rel", "sym", {"target": "../../outside"})]), layer)
    # a relative link that stays inside is fine, and writes through it stay inside
    unpack(make_tar([("a/b/up", "sym", {"target": "../.."}),
                     ("a/b/up/top", "file", {"data": b"t"})]), layer)
    assert (layer / "top").read_bytes() == b"t"


def test_absolute_symlink_kept_and_write_through_contained(sandbox):
    layer, outside = sandbox
    unpack(make_tar([
        ("etc", "sym", {"target": "/"}),
        ("etc/passwd", "file", {"data": b"root"}),
    ]), layer)
    assert (layer / "passwd").read_bytes() == b"root"
    assert os.readlink(layer / "etc") == "/"


def test_replacing_file_with_symlink_then_writing(sandbox):
    layer, outside = sandbox
    unpack(make_tar([
        ("x", "file", {"data": b"1"}),
        ("x", "sym", {"target": str(outside / "victim")}),
        ("x", "file", {"data": b"2"}),  # must replace the link, not write through it
    ]), layer)
    assert (layer / "x").read_bytes() == b"2" and not (layer / "x").is_symlink()


def test_hardlink_outside_rejected(sandbox):
    layer, outside = sandbox
    with pytest.raises(UnsafeArchive):
        unpack(make_tar([("h", "link", {"target": "../outside/victim"})]), layer)


def test_hardlink_through_symlink_dir_stays_inside(sandbox):
    layer, outside = sandbox
    with pytest.raises(UnsafeArchive):  # target resolves to <layer>/<outside>/victim: missing
        unpack(make_tar([
            ("d", "sym", {"target": str(outside)}),
            ("h", "link", {"target": "d/victim"}),
        ]), layer)


def test_hardlink_inside_ok(sandbox):
    layer, _ = sandbox
    unpack(make_tar([("a", "file", {"data": b"x"}), ("b", "link", {"target": "a"})]), layer)
    assert os.stat(layer / "a").st_ino == os.stat(layer / "b").st_ino


def test_devices_setuid_owner_xattrs(sandbox):
    layer, _ = sandbox
    cap = b"\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    unpack(make_tar([
        ("dev", "dir", {"mode": 0o755}),
        ("dev/null", "chr", {"dev": (1, 3), "mode": 0o666}),
        ("dev/loop9", "blk", {"dev": (7, 9), "mode": 0o660}),
        ("fifo", "fifo", {"mode": 0o600}),
        ("su", "file", {"mode": 0o4755, "uid": 1000, "gid": 1001, "data": b"#!"}),
        ("sg", "file", {"mode": 0o2755, "data": b"#!"}),
        ("ping", "file", {"data": b"p", "pax": {"SCHILY.xattr.security.capability":
                                                cap.decode("latin-1")}}),
        ("user", "file", {"data": b"u", "pax": {"SCHILY.xattr.user.k": "v"}}),
    ]), layer)
    st = os.lstat(layer / "dev/null")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    assert stat.S_IMODE(st.st_mode) == 0o666
    assert stat.S_ISBLK(os.lstat(layer / "dev/loop9").st_mode)
    assert stat.S_ISFIFO(os.lstat(layer / "fifo").st_mode)
    st = os.lstat(layer / "su")
    assert stat.S_IMODE(st.st_mode) == 0o4755 and (st.st_uid, st.st_gid) == (1000, 1001)
    assert stat.S_IMODE(os.lstat(layer / "sg").st_mode) == 0o2755
    assert os.getxattr(layer / "ping", "security.capability")[:4] == cap[:4]
    assert os.getxattr(layer / "user", "user.k") == b"v"
    assert os.stat(layer / "su").st_mtime == 1000000


def test_overlay_xattrs_from_tar_ignored(sandbox):
    layer, _ = sandbox
    res = unpack(make_tar([
        ("d", "dir", {"mode": 0o755, "pax": {"SCHILY.xattr.trusted.overlay.opaque": "y",
                                              "SCHILY.xattr.trusted.overlay.redirect": "/x"}}),
    ]), layer)
    assert os.listxattr(layer / "d") == []
    assert any("trusted.overlay" in w for w in res.warnings)


def test_whiteouts_overlay(sandbox):
    layer, _ = sandbox
    unpack(make_tar([
        ("a", "dir", {"mode": 0o755}),
        ("a/.wh..wh..opq", "file", {}),
        ("a/keep", "file", {"data": b"k"}),
        ("b/.wh.gone", "file", {}),
        (".wh..wh.plnk", "dir", {}),
    ]), layer)
    assert os.getxattr(layer / "a", "trusted.overlay.opaque") == b"y"
    st = os.lstat(layer / "b/gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert not (layer / ".wh..wh.plnk").exists()


def test_whiteouts_vfs(sandbox):
    layer, _ = sandbox
    unpack(make_tar([
        ("a/old1", "file", {"data": b"1"}), ("a/sub/old2", "file", {"data": b"2"}),
        ("b/gone", "dir", {}), ("b/gone/f", "file", {}), ("b/stay", "file", {}),
    ]), layer, mode="vfs")
    unpack(make_tar([
        ("a/new", "file", {"data": b"n"}),
        ("a/.wh..wh..opq", "file", {}),  # after an entry of the same layer: keeps it
        ("b/.wh.gone", "file", {}),
    ]), layer, mode="vfs")
    assert sorted(os.listdir(layer / "a")) == ["new"]
    assert sorted(os.listdir(layer / "b")) == ["stay"]


def test_whiteout_name_cannot_escape(sandbox):
    layer, _ = sandbox
    with pytest.raises(UnsafeArchive):
        unpack(make_tar([("../outside/.wh.victim", "file", {})]), layer, mode="vfs")


def test_diff_id_and_gzip_zstd(sandbox, tmp_path):
    import gzip
    import hashlib

    import zstandard

    layer, _ = sandbox
    raw = make_tar([("f", "file", {"data": os.urandom(3 << 20)})])
    want = "sha256:" + hashlib.sha256(raw).hexdigest()
    for i, data in enumerate([raw, gzip.compress(raw), zstandard.ZstdCompressor().compress(raw)]):
        d = layer / str(i)
        d.mkdir()
        assert unpack(data, d).diff_id == want
        assert (d / "f").stat().st_size == 3 << 20


def test_directory_replaced_by_file_and_dir_mtimes(sandbox):
    layer, _ = sandbox
    unpack(make_tar([
        ("d", "dir", {"mode": 0o700, "mtime": 5000}),
        ("d/x", "file", {"data": b"x"}),
        ("e", "dir", {}), ("e/y", "file", {}),
        ("e", "file", {"data": b"now a file"}),
    ]), layer)
    assert os.stat(layer / "d").st_mtime == 5000
    assert stat.S_IMODE(os.stat(layer / "d").st_mode) == 0o700
    assert (layer / "e").read_bytes() == b"now a file"
