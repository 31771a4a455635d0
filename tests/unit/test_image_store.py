import hashlib
import os
import subprocess
import sys

import pytest

from kobako.image.errors import DigestMismatch, InvalidDigest, NotFound
from kobako.image.store import ContentStore, parse_digest


def dg(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_put_read_roundtrip(tmp_path):
    s = ContentStore(tmp_path)
    d = s.put(b"hello")
    assert d == dg(b"hello")
    assert s.has(d) and s.read(d) == b"hello" and s.size(d) == 5
    assert list(s.digests()) == [d]
    with s.open(d) as f:
        assert f.read() == b"hello"
    s.delete(d)
    assert not s.has(d)
    with pytest.raises(NotFound):
        s.read(d)


def test_put_rejects_wrong_digest(tmp_path):
    s = ContentStore(tmp_path)
    with pytest.raises(DigestMismatch):
        s.put(b"hello", dg(b"other"))
    assert list(s.digests()) == []
    assert os.listdir(s.ingest) == []


@pytest.mark.parametrize("bad", ["sha256:../../etc", "md5:abc", "sha256:" + "A" * 64, ""])
def test_bad_digests_rejected(tmp_path, bad):
    s = ContentStore(tmp_path)
    with pytest.raises(InvalidDigest):
        s.has(bad)
    with pytest.raises(InvalidDigest):
        parse_digest(bad)


def test_writer_size_mismatch_discards(tmp_path):
    s = ContentStore(tmp_path)
    data = b"x" * 100
    w = s.writer(dg(data), expected_size=101)
    w.write(data)
    with pytest.raises(DigestMismatch):
        w.commit()
    assert os.listdir(s.ingest) == [] and not s.has(dg(data))


def test_writer_resume(tmp_path):
    s = ContentStore(tmp_path)
    data = os.urandom(3 << 20)
    d = dg(data)
    with pytest.raises(ConnectionError):
        with s.writer(d, len(data), resume=True) as w:
            w.write(data[:1000000])
            raise ConnectionError("dropped")
    assert s.ingest_offset(d) == 1000000
    # a new store instance (a new process) keeps the resumable leftover
    s2 = ContentStore(tmp_path)
    with s2.writer(d, len(data), resume=True) as w:
        assert w.offset == 1000000
        w.write(data[w.offset:])
        assert w.commit() == d
    assert s2.read(d) == data and os.listdir(s2.ingest) == []


def test_writer_without_resume_discards_on_error(tmp_path):
    s = ContentStore(tmp_path)
    with pytest.raises(RuntimeError):
        with s.writer(dg(b"abc")) as w:
            w.write(b"ab")
            raise RuntimeError
    assert os.listdir(s.ingest) == []


def test_concurrent_writers_same_digest(tmp_path):
    s = ContentStore(tmp_path)
    data = b"same"
    w1 = s.writer(dg(data), resume=True)
    w2 = s.writer(dg(data), resume=True)
    assert w1.path != w2.path
    w1.write(data)
    w2.write(data)
    assert w2.commit() == w1.commit() == dg(data)
    assert os.listdir(s.ingest) == []


def test_sigkill_mid_write_leaves_clean_store(tmp_path):
    code = f"""
import os, sys, hashlib
from kobako.image.store import ContentStore
s = ContentStore({str(tmp_path)!r})
a = s.writer()  # anonymous
a.write(b"a" * 5000)
w = s.writer("sha256:" + "ab" * 32, 10**9, resume=True)
w.write(b"b" * 5000)
w._file.flush(); a._file.flush()
print("ready", flush=True)
sys.stdin.read()
"""
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        # while the writer lives, recovery must not touch its files
        assert ContentStore(tmp_path).recover() == []
        assert len(os.listdir(tmp_path / "ingest")) == 2
    finally:
        p.kill()
        p.wait()
    s = ContentStore(tmp_path)
    # the anonymous leftover is gone, the named one is kept for resume; no blob stored
    assert os.listdir(s.ingest) == ["ab" * 32]
    assert list(s.digests()) == []
    assert s.ingest_offset("sha256:" + "ab" * 32) == 5000
