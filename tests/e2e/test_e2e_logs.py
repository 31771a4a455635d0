"""`docker logs` against a kobakod of the test's own: json-file options, rotation, filters."""

from __future__ import annotations

import os
import re
import secrets
import time
from datetime import UTC, datetime

import pytest
from daemon_fixture import Engine as BaseEngine
from daemon_fixture import busybox_daemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

RUN = ("--pull", "never", "--network", "none")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z ")


class Engine(BaseEngine):
    def run(self, *args: str) -> str:
        """Run a container to its end; its name."""
        name = "kbl-" + secrets.token_hex(4)
        self.docker("run", "-d", *RUN, "--name", name, *args)
        self.docker("wait", name)
        return name


@pytest.fixture(scope="module")
def engine():
    with busybox_daemon() as daemon:
        yield Engine(daemon)


def _ts(line: str) -> float:
    stamp = line.split(" ", 1)[0]
    base, frac = stamp.rstrip("Z").split(".")
    dt = datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return dt.timestamp() + float("0." + frac)


def test_streams_tail_and_timestamps(engine):
    name = engine.run("busybox", "sh", "-c",
                      "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done")
    result = engine.docker("logs", name)
    assert result.stdout == "".join(f"out{i}\n" for i in range(1, 6))
    assert result.stderr == "".join(f"err{i}\n" for i in range(1, 6))
    # --tail counts records of both streams, as Docker's does (the order between the
    # two pipes is the order the monitor read them in)
    tail = engine.docker("logs", "--tail", "3", name)
    out, err = tail.stdout.splitlines(), tail.stderr.splitlines()
    assert len(out) + len(err) == 3
    assert out == [f"out{i}" for i in range(6 - len(out), 6)]
    assert err == [f"err{i}" for i in range(6 - len(err), 6)]
    assert engine.docker("logs", "--tail", "0", name).stdout == ""
    stamped = engine.docker("logs", "-t", name).stdout.splitlines()
    assert len(stamped) == 5 and all(TIMESTAMP.match(line) for line in stamped)
    assert [line.split(" ", 1)[1] for line in stamped] == [f"out{i}" for i in range(1, 6)]
    times = [_ts(line) for line in stamped]
    assert times == sorted(times) and abs(times[0] - time.time()) < 60

    client = engine.daemon.docker_py()
    try:
        container = client.containers.get(name)
        assert container.logs(stdout=False) == b"".join(b"err%d\n" % i for i in range(1, 6))
        assert container.logs(stderr=False) == b"".join(b"out%d\n" % i for i in range(1, 6))
    finally:
        client.close()


def test_since_and_until(engine):
    name = engine.run("busybox", "sh", "-c", "echo early; sleep 1.5; echo late")
    stamped = engine.docker("logs", "-t", name).stdout.splitlines()
    early, late = _ts(stamped[0]), _ts(stamped[1])
    assert late - early > 1
    middle = f"{(early + late) / 2:.9f}"
    assert engine.docker("logs", "--since", middle, name).stdout == "late\n"
    assert engine.docker("logs", "--until", middle, name).stdout == "early\n"
    assert engine.docker("logs", "--since", f"{late + 10:.0f}", name).stdout == ""
    # relative durations: everything is within the last 10 minutes
    assert engine.docker("logs", "--since", "10m", name).stdout == "early\nlate\n"


def test_details_show_the_attributes_named_by_log_opts(engine):
    name = engine.run("--label", "team=blue", "--env", "STAGE=prod",
                      "--log-opt", "labels=team", "--log-opt", "env=STAGE",
                      "--log-opt", "tag={{.Name}}", "busybox", "echo", "hello")
    lines = engine.docker("logs", "--details", name).stdout
    assert lines == f"STAGE=prod,tag={name},team=blue hello\n"
    assert engine.docker("logs", name).stdout == "hello\n"
    plain = engine.run("busybox", "echo", "hello")
    assert engine.docker("logs", "--details", plain).stdout == " hello\n"  # Docker's blank


def test_rotation_keeps_max_file_files_and_reads_across_them(engine):
    name = engine.run("--log-opt", "max-size=10k", "--log-opt", "max-file=3",
                      "busybox", "sh", "-c",
                      "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done")
    doc = engine.inspect(name)
    assert doc["HostConfig"]["LogConfig"] == {
        "Type": "json-file", "Config": {"max-size": "10k", "max-file": "3"}}
    path = doc["LogPath"]
    assert os.path.exists(path + ".1") and os.path.exists(path + ".2")
    assert not os.path.exists(path + ".3")
    for f in (path, path + ".1", path + ".2"):
        assert os.path.getsize(f) <= 10_000 + 200  # one record may cross the limit
    numbers = [int(line.split()[1]) for line in engine.docker("logs", name).stdout.splitlines()]
    assert numbers[-1] == 1999  # the newest lines, oldest files dropped
    # about 120 records a file: the whole of three files, in order
    assert numbers == list(range(numbers[0], 2000)) and 250 < len(numbers) < 500
    tail = engine.docker("logs", "--tail", "200", name).stdout.splitlines()
    assert [int(line.split()[1]) for line in tail] == list(range(1800, 2000))


def test_follow_across_rotations(engine):
    name = "kbl-" + secrets.token_hex(4)
    engine.docker("run", "-d", *RUN, "--name", name, "--log-opt", "max-size=5k",
                  "--log-opt", "max-file=50", "busybox", "sh", "-c",
                  "sleep 0.5; i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done")
    followed = engine.docker("logs", "-f", name, timeout=30).stdout.splitlines()
    assert followed == [f"line {i}" for i in range(3000)]
    assert len(engine.docker("logs", name).stdout.splitlines()) == 3000


def test_none_driver_cannot_be_read(engine):
    name = engine.run("--log-driver", "none", "busybox", "echo", "hello")
    assert engine.inspect(name)["HostConfig"]["LogConfig"] == {"Type": "none", "Config": {}}
    result = engine.docker("logs", name, check=False)
    assert result.returncode != 0
    assert "configured logging driver does not support reading" in result.stderr
    assert not os.listdir(engine.daemon.data_root / "containers" / engine.inspect(name)["Id"]) \
        or not any(n.endswith("-json.log") for n in os.listdir(
            engine.daemon.data_root / "containers" / engine.inspect(name)["Id"]))


def test_json_file_is_bounded_by_default(engine):
    # 70 MB of output: kept in at most 3 files of 20 MB, though inspect shows only what
    # was asked (nothing), as dockerd's does
    name = engine.run("busybox", "sh", "-c", "head -c 70000000 /dev/zero | tr '\\0' a")
    doc = engine.inspect(name)
    assert doc["HostConfig"]["LogConfig"] == {"Type": "json-file", "Config": {}}
    logs = [n for n in os.listdir(os.path.dirname(doc["LogPath"])) if "-json.log" in n]
    assert sorted(logs) == sorted(os.path.basename(doc["LogPath"]) + s
                                  for s in ("", ".1", ".2"))
    total = sum(os.path.getsize(os.path.join(os.path.dirname(doc["LogPath"]), n))
                for n in logs)
    assert 40_000_000 < total <= 3 * 20_000_000 + 1_000_000
    # the container's own options win over the default bound
    name = engine.run("--log-opt", "max-size=1m", "busybox", "true")
    assert engine.inspect(name)["HostConfig"]["LogConfig"]["Config"] == {"max-size": "1m"}
    bad = engine.docker("create", *RUN, "--log-opt", "max-size=lots", "busybox", check=False)
    assert bad.returncode != 0 and "invalid size: 'lots'" in bad.stderr
