"""The async json-file reader: order across rotations, tail, filters, follow."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from kobako.engine.logs import JsonFileWriter, LogConfig, read_logs
from kobako.engine.logs import reader as reader_mod
from kobako.engine.logs.record import encode_record

T0 = 1714557600.0


def cfg(**opts: str) -> LogConfig:
    return LogConfig.from_host_config({"Type": "json-file", "Config": opts})


def read_all(path: str, **kw) -> list[tuple[int, bytes]]:
    async def go():
        return [item async for item in read_logs(path, follow=kw.pop("follow", False), **kw)]
    return asyncio.run(go())


def lines_of(items: list[tuple[int, bytes]]) -> list[bytes]:
    return [b for _, b in items]


@pytest.fixture
def log_path(tmp_path):
    return str(tmp_path / "c-json.log")


def write_numbered(path: str, n: int, config: LogConfig, start: int = 0) -> None:
    w = JsonFileWriter(path, config)
    for i in range(start, start + n):
        w.write("stderr" if i % 5 == 0 else "stdout", f"line {i}\n".encode(), now=T0 + i)
    w.close()


def expected(rng) -> list[bytes]:
    return [f"line {i}\n".encode() for i in rng]


def open_fds(under: str) -> list[str]:
    """Our open files under a directory (counting all fds would see other threads' —
    the integration tests leave a reaper thread running for the whole session)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith(under):
            found.append(target)
    return found


# -- whole reads ------------------------------------------------------------------------

def test_reads_rotated_files_oldest_first_with_stream_numbers(log_path):
    write_numbered(log_path, 100, cfg(**{"max-size": "1k", "max-file": "100"}))
    assert len(os.listdir(os.path.dirname(log_path))) > 5
    items = read_all(log_path)
    assert lines_of(items) == expected(range(100))
    assert [s for s, _ in items] == [2 if i % 5 == 0 else 1 for i in range(100)]


def test_stream_selection(log_path):
    write_numbered(log_path, 20, cfg())
    assert lines_of(read_all(log_path, stdout=False)) == expected(range(0, 20, 5))
    assert len(read_all(log_path, stderr=False)) == 16
    assert read_all(log_path, stdout=False, stderr=False) == []


def test_missing_log_reads_as_empty(log_path):
    assert read_all(log_path) == []
    assert read_all(log_path, tail=3) == []


@pytest.mark.parametrize("tail, want", [
    (0, []), (1, [99]), (7, list(range(93, 100))), (45, list(range(55, 100))),
    (100, list(range(100))), (1000, list(range(100))), (None, list(range(100))),
    (-1, list(range(100))),
])
def test_tail_across_rotated_files(log_path, tail, want):
    write_numbered(log_path, 100, cfg(**{"max-size": "1k", "max-file": "100"}))
    assert lines_of(read_all(log_path, tail=tail)) == expected(want)


def test_tail_across_compressed_rotations(log_path):
    write_numbered(log_path, 100, cfg(**{"max-size": "1k", "max-file": "100",
                                         "compress": "true"}))
    assert any(n.endswith(".gz") for n in os.listdir(os.path.dirname(log_path)))
    assert lines_of(read_all(log_path)) == expected(range(100))
    assert lines_of(read_all(log_path, tail=30)) == expected(range(70, 100))


def test_tail_of_a_big_file_reads_only_its_end(log_path, monkeypatch):
    write_numbered(log_path, 60_000, cfg(**{"max-size": "100m"}))
    assert os.path.getsize(log_path) > 4_000_000
    read_bytes = 0
    real_pread = os.pread

    def counting_pread(fd, n, offset):
        nonlocal read_bytes
        data = real_pread(fd, n, offset)
        read_bytes += len(data)
        return data

    monkeypatch.setattr(reader_mod.os, "pread", counting_pread)
    assert lines_of(read_all(log_path, tail=3)) == expected(range(59_997, 60_000))
    assert read_bytes < 2 * reader_mod._CHUNK


def test_since_and_until(log_path):
    write_numbered(log_path, 50, cfg(**{"max-size": "1k", "max-file": "100"}))
    assert lines_of(read_all(log_path, since=T0 + 40)) == expected(range(40, 50))
    assert lines_of(read_all(log_path, until=T0 + 9)) == expected(range(10))
    assert lines_of(read_all(log_path, since=T0 + 10.5, until=T0 + 12)) == expected([11, 12])
    # tail counts records before the time filters, as Docker does
    assert lines_of(read_all(log_path, tail=5, since=T0 + 47)) == expected(range(47, 50))


def test_timestamps_and_details(log_path):
    w = JsonFileWriter(log_path, cfg(), attrs={"tag": "web 1", "a": "x&y"})
    w.write("stdout", b"hi\n", now_ns=1714557600_120000000)
    w.close()
    assert read_all(log_path, timestamps=True) == [
        (1, b"2024-05-01T10:00:00.120000000Z hi\n")]
    assert read_all(log_path, details=True) == [(1, b"a=x%26y,tag=web+1 hi\n")]
    assert read_all(log_path, details=True, timestamps=True) == [
        (1, b"2024-05-01T10:00:00.120000000Z a=x%26y,tag=web+1 hi\n")]
    plain = log_path + ".plain"
    w = JsonFileWriter(plain, cfg())
    w.write("stdout", b"hi\n", now=T0)
    w.close()
    assert read_all(plain, details=True) == [(1, b" hi\n")]  # Docker's leading space


def test_partial_records_come_back_as_written(log_path):
    w = JsonFileWriter(log_path, cfg())
    w.write("stdout", b"x" * 20_000 + b"\n" + b"\xffend", now=T0)
    w.flush()
    w.close()
    assert lines_of(read_all(log_path)) == [b"x" * 16384, b"x" * 3616 + b"\n",
                                            "\ufffdend".encode()]


def test_corrupt_and_truncated_records_are_skipped(log_path):
    good = [encode_record(f"{i}\n".encode(), "stdout", int(T0 * 1e9) + i) for i in range(3)]
    with open(log_path, "wb") as f:
        f.write(good[0] + b"not json at all\n" + good[1] + b'{"log":"x"}\n' + good[2]
                + good[2][:25])  # the monitor was SIGKILLed in the middle of a write
    assert lines_of(read_all(log_path)) == [b"0\n", b"1\n", b"2\n"]
    assert lines_of(read_all(log_path, tail=1)) == [b"2\n"]
    # A writer that opens the file again ends the torn record, and appends cleanly.
    w = JsonFileWriter(log_path, cfg())
    w.write("stdout", b"3\n", now=T0)
    w.close()
    assert lines_of(read_all(log_path)) == [b"0\n", b"1\n", b"2\n", b"3\n"]


# -- follow -----------------------------------------------------------------------------

def test_follow_sees_new_records_then_stops_when_the_container_exits(log_path):
    w = JsonFileWriter(log_path, cfg())
    w.write("stdout", b"first\n", now=T0)
    alive = {"v": True}

    async def go():
        got = []
        agen = read_logs(log_path, follow=True, running=lambda: alive["v"],
                         poll_interval=0.01)
        got.append(await agen.__anext__())
        w.write("stdout", b"second\n", now=T0)
        got.append(await agen.__anext__())
        w.write("stderr", b"last", now=T0)
        w.flush()
        alive["v"] = False  # exit after the final flush, as the monitor reports it
        got += [item async for item in agen]
        return got

    got = asyncio.run(asyncio.wait_for(go(), 10))
    w.close()
    assert got == [(1, b"first\n"), (1, b"second\n"), (2, b"last")]


def test_follow_with_tail_starts_at_the_end(log_path):
    write_numbered(log_path, 10, cfg())

    async def go():
        agen = read_logs(log_path, follow=True, tail=2, running=lambda: True,
                         poll_interval=0.01)
        first = [await agen.__anext__(), await agen.__anext__()]
        w = JsonFileWriter(log_path, cfg())
        w.write("stdout", b"new\n", now=T0)
        w.close()
        first.append(await agen.__anext__())
        await agen.aclose()
        return first

    assert lines_of(asyncio.run(asyncio.wait_for(go(), 10))) == expected([8, 9]) + [b"new\n"]
    assert open_fds(os.path.dirname(log_path)) == []  # nothing left open once the client went away


def test_follow_waits_for_the_log_to_appear(log_path):
    alive = {"v": True}

    async def go():
        task = asyncio.ensure_future(_collect(log_path, lambda: alive["v"]))
        await asyncio.sleep(0.05)
        write_numbered(log_path, 3, cfg())
        alive["v"] = False
        return await task

    assert lines_of(asyncio.run(asyncio.wait_for(go(), 10))) == expected(range(3))


async def _collect(path, running, **kw):
    return [item async for item in read_logs(path, follow=True, running=running,
                                             poll_interval=0.005, **kw)]


@pytest.mark.parametrize("opts", [
    {"max-size": "400", "max-file": "6"},
    {"max-size": "400", "max-file": "6", "compress": "true"},
])
def test_follow_through_several_rotations_between_polls(log_path, opts):
    # Deterministic interleaving: the reader is stepped by hand while the writer rotates
    # one, two or four times between its reads; the followed file ends up as .1 .. .4.
    w = JsonFileWriter(log_path, cfg(**opts))
    n = 0

    def write(count):
        nonlocal n
        for _ in range(count):
            w.write("stdout", f"line {n}\n".encode(), now=T0 + n)
            n += 1
        w._join_compressor()  # let compression finish, so .gz files are in place

    async def go():
        got = []
        agen = read_logs(log_path, follow=True, running=lambda: n < 100, poll_interval=0.001)
        write(1)
        # 6 records a file: up to 4 rotations happen while the reader waits
        for burst in (3, 9, 1, 20, 5, 7, 11, 24, 2, 13, 5):
            while len(got) < n:  # catch up with everything written so far
                got.append(await agen.__anext__())
            write(burst)
        got += [item async for item in agen]
        return got

    got = asyncio.run(asyncio.wait_for(go(), 20))
    w.close()
    assert lines_of(got) == expected(range(n))


@pytest.mark.parametrize("compress", ["false", "true"])
def test_follow_while_a_writer_thread_rotates_no_loss_no_duplicates(log_path, compress):
    # With compress, rotated files are gzipped (and renamed) in the writer's own
    # thread while the reader looks for the file it followed among them.
    total = 3000
    done = threading.Event()

    def writer():
        w = JsonFileWriter(log_path, cfg(**{"max-size": "4k", "max-file": "50",
                                            "compress": compress}))
        for i in range(total):
            w.write("stderr" if i % 7 == 0 else "stdout", f"line {i}\n".encode())
            if i % 50 == 0:
                time.sleep(0.001)
        w.flush()
        w.close()
        done.set()

    async def go():
        thread = threading.Thread(target=writer)
        task = asyncio.ensure_future(_collect(log_path, lambda: not done.is_set()))
        await asyncio.sleep(0.01)
        thread.start()
        got = await task
        thread.join()
        return got

    got = asyncio.run(asyncio.wait_for(go(), 60))
    assert len(os.listdir(os.path.dirname(log_path))) > 10  # it did rotate, many times
    assert lines_of(got) == expected(range(total))
    assert [s for s, _ in got] == [2 if i % 7 == 0 else 1 for i in range(total)]


def test_follow_with_max_file_one_keeps_order_without_duplicates(log_path):
    done = threading.Event()

    def writer():
        w = JsonFileWriter(log_path, cfg(**{"max-size": "2k", "max-file": "1"}))
        for i in range(1000):
            w.write("stdout", f"line {i}\n".encode())
            if i % 20 == 0:
                time.sleep(0.002)
        w.close()
        done.set()

    async def go():
        thread = threading.Thread(target=writer)
        task = asyncio.ensure_future(_collect(log_path, lambda: not done.is_set()))
        thread.start()
        got = await task
        thread.join()
        return got

    got = [int(b.split()[1]) for b in lines_of(asyncio.run(asyncio.wait_for(go(), 30)))]
    assert got == sorted(set(got))  # in order, never twice
    assert got[-1] == 999


def test_follow_ends_at_until(log_path):
    write_numbered(log_path, 5, cfg())
    got = asyncio.run(asyncio.wait_for(
        _collect(log_path, lambda: True, until=T0 + 2), 10))
    assert lines_of(got) == expected(range(3))
    # a deadline already passed ends the follow too, even with nothing after it
    got = asyncio.run(asyncio.wait_for(
        _collect(log_path, lambda: True, until=time.time() - 0.001, since=T0 + 3), 10))
    assert lines_of(got) == expected(range(3, 5))


def test_follow_resumes_across_a_writer_restart(log_path):
    # The monitor is restarted (or the daemon reconnects): a second reader with the same
    # file sees each record once, the torn one skipped.
    write_numbered(log_path, 3, cfg())
    with open(log_path, "ab") as f:
        f.write(b'{"log":"tor')
    write_numbered(log_path, 3, cfg(), start=3)
    got = asyncio.run(asyncio.wait_for(_collect(log_path, lambda: False), 10))
    assert lines_of(got) == expected(range(6))


def test_follow_started_between_the_writers_rename_and_create(log_path):
    write_numbered(log_path, 4, cfg())
    os.rename(log_path, log_path + ".1")  # the writer rotated and has not created path yet
    alive = {"v": True}

    async def go():
        task = asyncio.ensure_future(_collect(log_path, lambda: alive["v"]))
        await asyncio.sleep(0.05)
        write_numbered(log_path, 3, cfg(), start=4)
        await asyncio.sleep(0.05)
        alive["v"] = False
        return await task

    assert lines_of(asyncio.run(asyncio.wait_for(go(), 10))) == expected(range(7))
    assert lines_of(read_all(log_path)) == expected(range(7))
