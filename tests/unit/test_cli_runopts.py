"""docker run flags -> the container create body (parsed through the real click command)."""

from __future__ import annotations

from typing import Any

import click
import pytest

from kobako.cli.runopts import (
    build_create_body,
    parse_mount,
    parse_publish,
    ram_in_bytes,
    run_options,
)
from kobako.cli.util import CLIError


@click.command(context_settings={"help_option_names": ["--help"],
                                 "allow_interspersed_args": False})
@run_options
@click.option("-d", "--detach", is_flag=True)
@click.option("--rm", is_flag=True)
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def _probe(image: str, command: tuple[str, ...], **opts: Any) -> dict[str, Any]:
    return build_create_body(opts, image, list(command))


def body(*argv: str) -> dict[str, Any]:
    return _probe.main(list(argv), standalone_mode=False)


def test_minimal_run():
    b = body("busybox")
    assert b["Image"] == "busybox" and b["Cmd"] is None and b["Entrypoint"] is None
    assert b["AttachStdout"] and b["AttachStderr"] and not b["AttachStdin"]
    assert not b["Tty"] and not b["OpenStdin"]
    assert b["HostConfig"]["NetworkMode"] == "default"
    assert b["HostConfig"]["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}


def test_it_rm_and_command_after_image_keeps_its_flags():
    b = body("-it", "--rm", "busybox", "sh", "-c", "echo hi -e x")
    assert b["Tty"] and b["OpenStdin"] and b["AttachStdin"] and b["StdinOnce"]
    assert b["HostConfig"]["AutoRemove"]
    assert b["Cmd"] == ["sh", "-c", "echo hi -e x"]
    assert b["Env"] == []  # -e after the image belongs to the command


def test_detached_does_not_attach():
    b = body("-d", "-i", "busybox")
    assert not b["AttachStdin"] and not b["AttachStdout"] and not b["AttachStderr"]
    assert b["OpenStdin"] and not b["StdinOnce"]


def test_env_labels_user_workdir_entrypoint_hostname(tmp_path, monkeypatch):
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nFROMFILE=1\n\nPASSTHRU\n")
    monkeypatch.setenv("PASSTHRU", "yes")
    monkeypatch.setenv("HOSTVAR", "h")
    monkeypatch.delenv("UNSET_VAR", raising=False)
    b = body("--env-file", str(env_file), "-e", "A=1", "-e", "HOSTVAR", "-e", "UNSET_VAR",
             "-l", "app=web", "-l", "flag", "-u", "1000:1000", "-w", "/srv",
             "--entrypoint", "/bin/sh -c", "-h", "box", "--domainname", "example.org",
             "--stop-signal", "SIGUSR1", "--stop-timeout", "3", "busybox")
    assert b["Env"] == ["FROMFILE=1", "PASSTHRU=yes", "A=1", "HOSTVAR=h"]
    assert b["Labels"] == {"app": "web", "flag": ""}
    assert b["User"] == "1000:1000" and b["WorkingDir"] == "/srv"
    assert b["Entrypoint"] == ["/bin/sh", "-c"]
    assert b["Hostname"] == "box" and b["Domainname"] == "example.org"
    assert b["StopSignal"] == "SIGUSR1" and b["StopTimeout"] == 3
    assert body("--entrypoint", "", "busybox")["Entrypoint"] == [""]


def test_resources():
    h = body("-m", "512m", "--memory-swap", "-1", "--memory-reservation", "1g",
             "--cpus", "1.5", "--cpu-shares", "512", "--cpu-period", "100000",
             "--cpu-quota", "50000", "--cpuset-cpus", "0-1", "--cpuset-mems", "0",
             "--pids-limit", "64", "--oom-kill-disable", "--oom-score-adj", "100",
             "--blkio-weight", "300", "--device-read-bps", "/dev/sda:1mb",
             "--device-write-iops", "/dev/sda:100", "--blkio-weight-device", "/dev/sda:200",
             "--shm-size", "64m", "busybox")["HostConfig"]
    assert h["Memory"] == 512 * 1024 ** 2 and h["MemorySwap"] == -1
    assert h["MemoryReservation"] == 1024 ** 3
    assert h["NanoCpus"] == 1_500_000_000 and h["CpuShares"] == 512
    assert (h["CpuPeriod"], h["CpuQuota"]) == (100000, 50000)
    assert (h["CpusetCpus"], h["CpusetMems"]) == ("0-1", "0")
    assert h["PidsLimit"] == 64 and h["OomKillDisable"] and h["OomScoreAdj"] == 100
    assert h["BlkioWeight"] == 300
    assert h["BlkioDeviceReadBps"] == [{"Path": "/dev/sda", "Rate": 1024 ** 2}]
    assert h["BlkioDeviceWriteIOps"] == [{"Path": "/dev/sda", "Rate": 100}]
    assert h["BlkioWeightDevice"] == [{"Path": "/dev/sda", "Weight": 200}]
    assert h["ShmSize"] == 64 * 1024 ** 2


def test_security_and_namespaces():
    h = body("--cap-add", "NET_ADMIN", "--cap-drop", "ALL", "--privileged",
             "--security-opt", "no-new-privileges", "--security-opt", "seccomp=unconfined",
             "--read-only", "--tmpfs", "/run:size=64m", "--tmpfs", "/tmp",
             "--ulimit", "nofile=1024:2048", "--ulimit", "nproc=10",
             "--sysctl", "net.ipv4.ip_forward=1", "--group-add", "audio",
             "--pid", "container:web", "--ipc", "host", "--uts", "host", "--init",
             "--network", "none", "--device", "/dev/fuse", "--device", "/dev/sda:/dev/xvda:r",
             "--cgroupns", "private", "busybox")["HostConfig"]
    assert h["CapAdd"] == ["NET_ADMIN"] and h["CapDrop"] == ["ALL"] and h["Privileged"]
    assert h["SecurityOpt"] == ["no-new-privileges", "seccomp=unconfined"]
    assert h["ReadonlyRootfs"]
    assert h["Tmpfs"] == {"/run": "size=64m", "/tmp": ""}
    assert h["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 2048},
                            {"Name": "nproc", "Soft": 10, "Hard": 10}]
    assert h["Sysctls"] == {"net.ipv4.ip_forward": "1"} and h["GroupAdd"] == ["audio"]
    assert (h["PidMode"], h["IpcMode"], h["UTSMode"]) == ("container:web", "host", "host")
    assert h["Init"] is True and h["NetworkMode"] == "none" and h["CgroupnsMode"] == "private"
    assert h["Devices"] == [
        {"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": "rwm"},
        {"PathOnHost": "/dev/sda", "PathInContainer": "/dev/xvda", "CgroupPermissions": "r"}]


def test_volumes_mounts_ports_restart():
    b = body("-v", "/data", "-v", "/host:/ctr:ro", "-v", "named:/vol",
             "--mount", "type=bind,source=/src,target=/dst,readonly",
             "--mount", "type=tmpfs,target=/cache,tmpfs-size=1m,tmpfs-mode=1777",
             "-p", "8080:80", "-p", "127.0.0.1:5353:53/udp", "-p", "9000",
             "-p", "7000-7001:8000-8001", "--expose", "443", "-P",
             "--restart", "on-failure:3", "busybox")
    h = b["HostConfig"]
    assert b["Volumes"] == {"/data": {}}
    assert h["Binds"] == ["/host:/ctr:ro", "named:/vol"]
    assert h["Mounts"][0] == {"Type": "bind", "Source": "/src", "Target": "/dst",
                              "ReadOnly": True}
    assert h["Mounts"][1] == {"Type": "tmpfs", "Target": "/cache",
                              "TmpfsOptions": {"SizeBytes": 1024 ** 2, "Mode": 0o1777}}
    assert set(b["ExposedPorts"]) == {"80/tcp", "53/udp", "9000/tcp", "8000/tcp", "8001/tcp",
                                      "443/tcp"}
    assert h["PortBindings"]["80/tcp"] == [{"HostIp": "", "HostPort": "8080"}]
    assert h["PortBindings"]["53/udp"] == [{"HostIp": "127.0.0.1", "HostPort": "5353"}]
    assert h["PortBindings"]["9000/tcp"] == [{"HostIp": "", "HostPort": ""}]
    assert h["PortBindings"]["8001/tcp"] == [{"HostIp": "", "HostPort": "7001"}]
    assert h["PublishAllPorts"]
    assert h["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}


def test_user_network_goes_to_endpoints():
    b = body("--network", "mynet", "--network-alias", "db", "busybox")
    assert b["HostConfig"]["NetworkMode"] == "mynet"
    assert b["NetworkingConfig"] == {"EndpointsConfig": {"mynet": {"Aliases": ["db"]}}}


@pytest.mark.parametrize("argv", [
    ("--restart", "sometimes", "busybox"),
    ("--restart", "always:3", "busybox"),
    ("--rm", "--restart", "always", "busybox"),
    ("--ulimit", "nofile=10:5", "busybox"),
    ("--ulimit", "nofile", "busybox"),
    ("-m", "lots", "busybox"),
    ("-v", "relative", "busybox"),
    ("-v", "/a:relative", "busybox"),
    ("--mount", "type=bind,target=/x", "busybox"),
    ("--mount", "type=weird,target=/x", "busybox"),
    ("--mount", "bogus=1,target=/x", "busybox"),
    ("-p", "1:2:3:4", "busybox"),
    ("-p", "abc", "busybox"),
    ("--sysctl", "novalue", "busybox"),
    ("--tmpfs", "relative", "busybox"),
    ("-d", "-a", "stdout", "busybox"),
])
def test_bad_flags_exit_125(argv):
    with pytest.raises(CLIError) as info:
        body(*argv)
    assert info.value.code == 125


def test_units_and_helpers():
    assert ram_in_bytes("1k") == 1024 and ram_in_bytes("2GB") == 2 * 1024 ** 3
    assert ram_in_bytes("100") == 100 and ram_in_bytes("1.5m") == int(1.5 * 1024 ** 2)
    assert parse_mount("type=volume,src=v,dst=/x,volume-nocopy") == {
        "Type": "volume", "Target": "/x", "Source": "v", "VolumeOptions": {"NoCopy": True}}
    exposed: dict = {}
    bindings: dict = {}
    parse_publish(["[::1]:80:8080"], exposed, bindings)
    assert bindings == {"8080/tcp": [{"HostIp": "::1", "HostPort": "80"}]}
