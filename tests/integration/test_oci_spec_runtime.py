"""The engine's OCI spec, run by kobako-runtime: Docker's defaults are really in force.

A busybox rootfs of the test's own, a spec from kobako.engine.oci_spec.build_spec, and
`kobako-runtime run`/`create`+`start`; the `rt` fixture (conftest.py) deletes every
container and fails the test if a cgroup, process, state directory or mount leaked.
"""

from __future__ import annotations

import os

import pytest
from bundles import Bundle, read, wait_for

from kobako.engine import oci_spec
from kobako.linux import capabilities
from kobako.runtime import spec as runtime_spec

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root and a real kernel")

MEMORY = 64 << 20
SHM = 32 << 20

CHECKS = r"""
grep -E '^(CapEff|CapBnd|CapInh|Seccomp|NoNewPrivs):' /proc/self/status
unshare -n true 2>/dev/null; echo "unshare=$?"
echo "timer_list=[$(cat /proc/timer_list 2>&1)]"
(echo 1 > /proc/sys/kernel/domainname) 2>/dev/null; echo "procsys_write=$?"
echo "hostname=$(hostname)"
echo "pwd=$(pwd)"
echo "nofile=$(ulimit -n)"
echo "shm=$(grep ' /dev/shm ' /proc/mounts)"
echo "foo=$FOO"
echo "env_path=$PATH"
echo "env_hostname=$HOSTNAME"
echo DONE
exec sleep 60
"""


def _lines(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        for sep in ("=", ":"):
            key, found, value = line.partition(sep)
            if found and key and " " not in key:
                values[key] = value.strip()
                break
    return values


def _bundle(tmp_path, rootfs: str, name: str, spec: dict) -> Bundle:
    runtime_spec.validate(spec)
    bundle = Bundle(str(tmp_path / name), rootfs)
    bundle.config = spec
    return bundle


def test_docker_defaults_in_force(rt, tmp_path, private_rootfs):
    container_id = rt.new_id("spec")
    spec = oci_spec.build_spec(
        container_id=container_id,
        config={"Cmd": ["sh", "-c", CHECKS], "Hostname": "kbt-host", "Env": ["FOO=bar"],
                "WorkingDir": "/work/dir"},
        host_config={"Memory": MEMORY, "ShmSize": SHM,
                     "Ulimits": [{"Name": "nofile", "Soft": 1234, "Hard": 1234}]},
        image_config={"Env": ["PATH=/bin:/usr/bin", "FOO=image"]},
        rootfs=private_rootfs, bundle=str(tmp_path / "spec"))
    bundle = _bundle(tmp_path, private_rootfs, "spec", spec)
    bundle.write()
    rt.ids.pop()  # start_detached names the container itself
    cid, pid = rt.start_detached(bundle, "spec")
    try:
        wait_for(lambda: "DONE" in read(bundle.out), what="the checks' output")
        out = _lines(read(bundle.out))
        # the memory limit is in the host's cgroup file for this container
        limit = f"/sys/fs/cgroup/memory/kobako/{cid}/memory.limit_in_bytes"
        assert int(read(limit)) == MEMORY
        memsw = f"/sys/fs/cgroup/memory/kobako/{cid}/memory.memsw.limit_in_bytes"
        if os.path.exists(memsw):
            assert int(read(memsw)) == 2 * MEMORY  # Docker's default swap: as much again
    finally:
        rt.delete(cid)
    default_mask = capabilities.to_mask(oci_spec.DEFAULT_CAPABILITIES)
    assert int(out["CapEff"], 16) == default_mask, out
    assert int(out["CapBnd"], 16) == default_mask
    assert int(out["CapInh"], 16) == 0
    assert out["Seccomp"] == "2" and out["NoNewPrivs"] == "0"
    assert out["unshare"] != "0"
    assert out["timer_list"] == "[]"
    assert out["procsys_write"] != "0"
    assert out["hostname"] == "kbt-host" and out["env_hostname"] == "kbt-host"
    assert out["pwd"] == "/work/dir"
    assert os.path.isdir(os.path.join(private_rootfs, "work", "dir"))
    assert out["nofile"] == "1234"
    assert f"size={SHM // 1024}k" in out["shm"], out["shm"]
    assert out["foo"] == "bar" and out["env_path"] == "/bin:/usr/bin"


def test_user_from_name_and_group_add(rt, tmp_path, private_rootfs):
    container_id = rt.new_id("user")
    spec = oci_spec.build_spec(
        container_id=container_id,
        config={"Cmd": ["sh", "-c", "id -u; id -g; id -G; grep CapEff /proc/self/status"],
                "User": "kbtuser"},
        host_config={"GroupAdd": ["daemon", "4321"], "SecurityOpt": ["no-new-privileges"]},
        image_config={}, rootfs=private_rootfs, bundle=str(tmp_path / "user"))
    bundle = _bundle(tmp_path, private_rootfs, "user", spec)
    bundle.write()
    proc = rt("run", "--bundle", bundle.path, container_id)
    uid, gid, groups, capeff = proc.stdout.split("\n")[:4]
    assert (uid, gid) == ("1000", "1000")
    assert sorted(groups.split()) == ["1", "1000", "4321"]
    assert int(capeff.split()[1], 16) == 0  # a non-root user gets no effective caps


def test_privileged_is_unconfined(rt, tmp_path, private_rootfs):
    container_id = rt.new_id("priv")
    spec = oci_spec.build_spec(
        container_id=container_id,
        config={"Cmd": ["sh", "-c", "grep -E '^(CapEff|Seccomp):' /proc/self/status; "
                                    "wc -c < /proc/timer_list; ls /dev/loop-control"]},
        host_config={"Privileged": True}, image_config={}, rootfs=private_rootfs,
        bundle=str(tmp_path / "priv"))
    bundle = _bundle(tmp_path, private_rootfs, "priv", spec)
    bundle.write()
    proc = rt("run", "--bundle", bundle.path, container_id, check=False)
    assert proc.returncode in (0, 1), proc.stderr  # /dev/loop-control may be absent
    out = _lines(proc.stdout)
    assert int(out["CapEff"], 16) == capabilities.to_mask(oci_spec.all_capabilities())
    assert out["Seccomp"] == "0"
    assert int(proc.stdout.splitlines()[2]) > 0  # /proc/timer_list is not masked
