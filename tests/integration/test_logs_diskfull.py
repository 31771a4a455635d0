"""A json-file log on a really full filesystem: a small tmpfs mounted for the test."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid

import pytest

from kobako.engine.logs import JsonFileWriter, LogConfig, read_logs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def tiny_fs(tmp_path):
    mnt = tmp_path / f"kbt-logs-{uuid.uuid4().hex[:8]}"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,nr_inodes=64", "kbt-logs",
                    str(mnt)], check=True)
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
        mnt.rmdir()


def test_disk_full_drops_records_reports_once_and_recovers(tiny_fs):
    path = os.path.join(tiny_fs, "c-json.log")
    filler = os.path.join(tiny_fs, "filler")
    errors: list[str] = []
    w = JsonFileWriter(path, LogConfig.from_host_config(
        {"Config": {"max-size": "1m", "max-file": "2"}}), on_error=errors.append)
    # Leave ~one page for the log: the first records fit, then ENOSPC.
    with open(filler, "wb") as f:
        f.write(b"\0" * (64 * 1024 - 4096))
    for i in range(500):
        w.write("stdout", f"record {i:04d} {'x' * 40}\n".encode())
    assert len(errors) == 1 and "No space left on device" in errors[0]
    os.unlink(filler)  # space comes back: writing resumes by itself
    w.write("stderr", b"after the disk was freed\n")
    w.close()
    assert len(errors) == 1
    with open(path, "rb") as f:
        recs = [json.loads(line) for line in f]  # whole records only, none torn
    assert 10 < len(recs) < 500
    assert recs[-1] == {"log": "after the disk was freed\n", "stream": "stderr",
                        "time": recs[-1]["time"]}
    numbers = [int(r["log"].split()[1]) for r in recs[:-1]]
    assert numbers == list(range(len(numbers)))  # a prefix was kept, the rest dropped

    async def read():
        return [item async for item in read_logs(path, follow=False)]
    assert len(asyncio.run(read())) == len(recs)
