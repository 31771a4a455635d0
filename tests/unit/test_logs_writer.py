"""The json-file writer: line cutting as Docker's copier, rotation, failures."""

from __future__ import annotations

import errno
import gzip
import json
import os

import pytest

from kobako.engine.logs import JsonFileWriter, LogConfig, NullWriter, open_writer, remove_logs
from kobako.engine.logs.files import log_usage
from kobako.engine.logs.writer import PARTIAL_SIZE

T0 = 1714557600.0


def cfg(**opts: str) -> LogConfig:
    return LogConfig.from_host_config({"Type": "json-file", "Config": opts})


def records(path: str) -> list[dict]:
    with open(path, "rb") as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def log_path(tmp_path):
    return str(tmp_path / "c-json.log")


def test_one_record_per_line_with_per_stream_partial_buffers(log_path):
    w = JsonFileWriter(log_path, cfg())
    w.write("stdout", b"one\ntw", now=T0)
    w.write("stderr", b"err", now=T0 + 1)
    w.write("stdout", b"o\nthree\n", now=T0 + 2)
    w.write("stderr", b"or\n", now=T0 + 3)
    w.close()
    got = [(r["stream"], r["log"]) for r in records(log_path)]
    assert got == [("stdout", "one\n"), ("stdout", "two\n"), ("stdout", "three\n"),
                   ("stderr", "error\n")]


def test_exact_bytes_in_the_file(log_path):
    w = JsonFileWriter(log_path, cfg())
    w.write("stdout", b"hello <world>\n", now_ns=1714557600_000000001)
    w.close()
    with open(log_path, "rb") as f:
        assert f.read() == (b'{"log":"hello \\u003cworld\\u003e\\n","stream":"stdout",'
                            b'"time":"2024-05-01T10:00:00.000000001Z"}\n')


def test_flush_writes_unterminated_lines_without_newline(log_path):
    w = JsonFileWriter(log_path, cfg())
    w.write("stdout", b"no newline", now=T0)
    w.write("stderr", b"neither", now=T0)
    assert records(log_path) == []
    w.flush()
    w.flush()  # nothing pending: nothing more
    w.close()
    assert [(r["stream"], r["log"]) for r in records(log_path)] == [
        ("stdout", "no newline"), ("stderr", "neither")]


def test_huge_line_is_cut_in_16k_pieces_sharing_the_first_time(log_path):
    w = JsonFileWriter(log_path, cfg())
    line = bytes(range(97, 123)) * 2000  # 52,000 bytes
    w.write("stdout", line[:20_000], now=T0)  # the first piece goes out now
    w.write("stdout", line[20_000:] + b"\nnext\n", now=T0 + 5)
    w.close()
    recs = records(log_path)
    pieces = [r["log"] for r in recs]
    assert [len(p) for p in pieces] == [PARTIAL_SIZE] * 3 + [52_000 - 3 * PARTIAL_SIZE + 1, 5]
    assert "".join(pieces[:4]).encode() == line + b"\n"
    assert not any(p.endswith("\n") for p in pieces[:3])
    assert {r["time"] for r in recs[:4]} == {"2024-05-01T10:00:00Z"}  # the first piece's
    assert recs[4]["time"] == "2024-05-01T10:00:05Z"


def test_line_of_exactly_16k_leaves_a_lone_newline_record_as_docker(log_path):
    w = JsonFileWriter(log_path, cfg())
    w.write("stdout", b"x" * PARTIAL_SIZE + b"\n", now=T0)
    w.close()
    assert [len(r["log"]) for r in records(log_path)] == [PARTIAL_SIZE, 1]
    assert records(log_path)[1]["log"] == "\n"


def test_invalid_utf8_does_not_crash_and_is_replaced_per_byte(log_path):
    w = JsonFileWriter(log_path, cfg())
    w.write("stdout", b"caf\xc3\xa9 \xff\xfe \xe2\x82\n", now=T0)
    w.close()
    assert records(log_path)[0]["log"] == "café \ufffd\ufffd \ufffd\ufffd\n"


def test_rotation_keeps_max_file_files_of_about_max_size(log_path):
    w = JsonFileWriter(log_path, cfg(**{"max-size": "1k", "max-file": "3"}))
    for i in range(200):
        w.write("stdout", f"line {i:04d}\n".encode(), now=T0 + i)
    w.close()
    names = sorted(os.listdir(os.path.dirname(log_path)))
    assert names == ["c-json.log", "c-json.log.1", "c-json.log.2"]
    record_size = os.path.getsize(log_path + ".1") // len(records(log_path + ".1"))
    for name in (log_path + ".1", log_path + ".2"):
        # Docker rotates once a file has reached max-size: at most one record over it.
        assert 1000 <= os.path.getsize(name) < 1000 + record_size
    got = [r["log"] for p in (log_path + ".2", log_path + ".1", log_path)
           for r in records(p)]
    last = int(got[-1].split()[1])
    assert last == 199
    assert got == [f"line {i:04d}\n" for i in range(last - len(got) + 1, last + 1)]
    assert log_usage(log_path) == sum(os.path.getsize(os.path.join(os.path.dirname(log_path), n))
                                      for n in names)
    remove_logs(log_path)
    assert os.listdir(os.path.dirname(log_path)) == []
    assert log_usage(log_path) == 0


def test_max_file_one_starts_over_in_a_fresh_file(log_path):
    w = JsonFileWriter(log_path, cfg(**{"max-size": "200", "max-file": "1"}))
    for i in range(20):
        w.write("stdout", f"{i}\n".encode(), now=T0)
    w.close()
    assert os.listdir(os.path.dirname(log_path)) == ["c-json.log"]
    assert records(log_path)[-1]["log"] == "19\n"
    assert os.path.getsize(log_path) < 200 + 80


def test_lowering_max_file_removes_the_extra_rotations(log_path):
    w = JsonFileWriter(log_path, cfg(**{"max-size": "100", "max-file": "5"}))
    for i in range(20):
        w.write("stdout", f"{i}\n".encode(), now=T0)
    w.close()
    assert len(os.listdir(os.path.dirname(log_path))) == 5
    w = JsonFileWriter(log_path, cfg(**{"max-size": "100", "max-file": "2"}))
    for i in range(3):
        w.write("stdout", f"{i}\n".encode(), now=T0)
    w.close()
    assert sorted(os.listdir(os.path.dirname(log_path))) == ["c-json.log", "c-json.log.1"]


def test_compressed_rotations(log_path):
    w = JsonFileWriter(log_path, cfg(**{"max-size": "300", "max-file": "3", "compress": "true"}))
    for i in range(30):
        w.write("stdout", f"{i}\n".encode(), now=T0)
    w.close()
    names = sorted(os.listdir(os.path.dirname(log_path)))
    assert names == ["c-json.log", "c-json.log.1.gz", "c-json.log.2.gz"]
    with gzip.open(log_path + ".1.gz") as f:
        assert all(json.loads(line)["stream"] == "stdout" for line in f)


def test_reopening_after_a_torn_record_keeps_records_apart(log_path):
    w = JsonFileWriter(log_path, cfg())
    w.write("stdout", b"whole\n", now=T0)
    w.close()
    with open(log_path, "ab") as f:
        f.write(b'{"log":"torn by SIGK')  # the monitor died in the middle of a write
    w = JsonFileWriter(log_path, cfg())
    w.write("stdout", b"after\n", now=T0)
    w.close()
    with open(log_path, "rb") as f:
        lines = f.read().split(b"\n")
    assert lines[1] == b'{"log":"torn by SIGK'
    assert json.loads(lines[2])["log"] == "after\n"


def test_disk_errors_are_reported_once_per_burst_and_writing_goes_on(log_path, monkeypatch):
    errors: list[str] = []
    w = JsonFileWriter(log_path, cfg(), on_error=errors.append)
    w.write("stdout", b"before\n", now=T0)
    real_write = os.write
    failing = {"on": True, "calls": 0}

    def flaky_write(fd, data):
        if fd == w._fd and failing["on"]:
            failing["calls"] += 1
            if failing["calls"] == 1:
                return real_write(fd, bytes(data[:7]))  # a short write, then ENOSPC
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", flaky_write)
    for i in range(5):
        w.write("stdout", f"lost {i}\n".encode(), now=T0)
    assert len(errors) == 1 and "No space left on device" in errors[0]
    failing["on"] = False
    w.write("stdout", b"back\n", now=T0)
    failing["on"], failing["calls"] = True, 1
    w.write("stderr", b"lost again\n", now=T0)
    failing["on"] = False
    w.write("stdout", b"end\n", now=T0)
    w.close()
    assert len(errors) == 2
    # The torn part of the short write was cut off: the file is whole records only.
    assert [r["log"] for r in records(log_path)] == ["before\n", "back\n", "end\n"]


def test_none_driver_discards(log_path):
    w = open_writer(log_path, LogConfig.from_host_config({"Type": "none"}))
    assert isinstance(w, NullWriter)
    w.write("stdout", b"x\n")
    w.flush()
    w.close()
    assert not os.path.exists(log_path)
    assert isinstance(open_writer(log_path, cfg()), JsonFileWriter)


def test_unknown_stream_is_a_programming_error(log_path):
    w = JsonFileWriter(log_path, cfg())
    with pytest.raises(ValueError):
        w.write("stdin", b"x\n")
    w.close()


def test_remove_logs_takes_leftovers_of_compression_but_nothing_else(log_path, tmp_path):
    for name in ("c-json.log", "c-json.log.1", "c-json.log.2.gz", "c-json.log.1.gz.tmp",
                 "other-json.log", "c-json.log.bak"):
        (tmp_path / name).write_bytes(b"x")
    remove_logs(log_path)
    assert sorted(os.listdir(tmp_path)) == ["c-json.log.bak", "other-json.log"]


def test_one_big_write_rotates_between_its_records(log_path):
    w = JsonFileWriter(log_path, cfg(**{"max-size": "1k", "max-file": "20"}))
    w.write("stdout", b"".join(f"line {i:04d}\n".encode() for i in range(100)), now=T0)
    w.close()
    names = [log_path + f".{i}" for i in range(19, 0, -1) if os.path.exists(log_path + f".{i}")]
    assert len(names) > 5
    got = [r["log"] for p in names + [log_path] for r in records(p)]
    assert got == [f"line {i:04d}\n" for i in range(100)]
    for name in names:
        assert os.path.getsize(name) < 1000 + 100
