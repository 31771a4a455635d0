"""kobako-runtime on the real kernel: the process's capabilities, rlimits, seccomp, masked and
read-only paths, read-only root, user and time namespaces, sysctl."""

from __future__ import annotations

import os
import resource
import shutil
import tempfile

import pytest
from bundles import build_rootfs, read

CAP_CHOWN, CAP_KILL, CAP_NET_BIND_SERVICE, CAP_SYS_ADMIN = 0, 5, 10, 21


def caps_of(text: str) -> dict[str, int]:
    """The Cap* lines of /proc/<pid>/status as numbers."""
    return {key: int(value, 16) for key, _, value in
            (line.partition(":\t") for line in text.splitlines()) if key.startswith("Cap")}


def mask(*caps: int) -> int:
    return sum(1 << cap for cap in caps)


def test_capability_sets_are_as_configured_and_inheritable_is_empty(rt, bundle):
    bundle.process["capabilities"] = {
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "effective": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
    }
    caps = caps_of(rt.run(bundle.args("grep", "^Cap", "/proc/self/status")).stdout)
    assert caps["CapInh"] == 0
    assert caps["CapBnd"] == mask(CAP_CHOWN, CAP_KILL, CAP_NET_BIND_SERVICE)
    assert caps["CapEff"] == mask(CAP_CHOWN, CAP_KILL, CAP_NET_BIND_SERVICE)
    assert caps["CapPrm"] == mask(CAP_CHOWN, CAP_KILL, CAP_NET_BIND_SERVICE)
    assert caps["CapAmb"] == 0


def test_capability_sets_of_a_non_root_user(rt, bundle):
    # uid 0 regains its whole permitted set as effective at execve (as with runc); a
    # non-root user keeps only its ambient set, so the configured sets show through
    bundle.process["user"] = {"uid": 1000, "gid": 1000}
    bundle.process["capabilities"] = {
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "effective": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "inheritable": ["CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_NET_BIND_SERVICE"],
    }
    caps = caps_of(rt.run(bundle.args("grep", "^Cap", "/proc/self/status")).stdout)
    assert caps["CapBnd"] == mask(CAP_CHOWN, CAP_KILL, CAP_NET_BIND_SERVICE)
    assert caps["CapInh"] == mask(CAP_NET_BIND_SERVICE)
    assert caps["CapAmb"] == mask(CAP_NET_BIND_SERVICE)
    assert caps["CapEff"] == caps["CapPrm"] == mask(CAP_NET_BIND_SERVICE)


def test_capabilities_are_enforced(rt, bundle):
    # without CAP_SYS_ADMIN (runc's default set), mounting fails even as uid 0
    out = rt.run(bundle.sh("mount -t tmpfs none /tmp 2>&1; echo rc=$?"), check=False).stdout
    assert "rc=0" not in out
    assert "denied" in out or "not permitted" in out


def test_inheritable_set_only_when_asked_for(rt, bundle):
    bundle.process["capabilities"]["inheritable"] = ["CAP_KILL"]
    caps = caps_of(rt.run(bundle.args("grep", "^Cap", "/proc/self/status")).stdout)
    assert caps["CapInh"] == mask(CAP_KILL)


def test_rlimits_within_the_hard_limit_are_in_force(rt, bundle):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft_wanted = min(hard, 4096) // 2
    bundle.process["rlimits"] = [
        {"type": "RLIMIT_NOFILE", "soft": soft_wanted, "hard": min(hard, 4096)},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
    ]
    out = rt.run(bundle.sh("ulimit -n; ulimit -Hn; ulimit -c")).stdout.split()
    assert out == [str(soft_wanted), str(min(hard, 4096)), "0"]


def test_raising_a_hard_rlimit_fails_with_a_clear_error(rt, bundle):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("RLIMIT_NOFILE is unlimited here")
    if _has_cap_sys_resource():
        pytest.skip("root here has CAP_SYS_RESOURCE: raising a hard limit would succeed")
    bundle.process["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": soft, "hard": hard + 1}]
    proc = rt.run(bundle, check=False)
    assert proc.returncode != 0
    line = proc.stderr.strip()
    assert "\n" not in line
    assert "setrlimit RLIMIT_NOFILE" in line and "CAP_SYS_RESOURCE" in line
    assert rt.log_records()[-1]["level"] == "error"


def _has_cap_sys_resource() -> bool:
    with open("/proc/self/status") as f:
        caps = caps_of(f.read())
    return bool(caps["CapEff"] & (1 << 24))


DENY_MKDIR = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
}


def test_seccomp_denied_syscall_returns_eperm(rt, bundle):
    bundle.tmpfs("/tmp")
    bundle.linux["seccomp"] = DENY_MKDIR
    out = rt.run(bundle.sh("touch /tmp/file && echo touched; mkdir /tmp/dir 2>&1; echo rc=$?"),
                 check=False).stdout
    assert "touched" in out
    assert "Operation not permitted" in out and "rc=1" in out


def test_seccomp_also_binds_exec(rt, bundle):
    bundle.tmpfs("/tmp")
    bundle.linux["seccomp"] = DENY_MKDIR
    container_id, _ = rt.start_detached(bundle.args("sleep", "60"))
    out = rt("exec", container_id, "sh", "-c", "mkdir /tmp/x 2>&1; echo rc=$?", check=False)
    assert "Operation not permitted" in out.stdout and "rc=1" in out.stdout
    rt.delete(container_id)


def test_masked_file_reads_empty_and_masked_dir_is_an_empty_readonly_tmpfs(rt, bundle,
                                                                           tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("hunter2")
    bundle.add_mount("/mnt/secret", "bind", str(secret), ["rbind", "rw"])
    bundle.linux["maskedPaths"] += ["/mnt/secret", "/etc/hostname"]
    out = rt.run(bundle.sh(
        "echo timer_list=$(wc -c < /proc/timer_list); echo hostname=$(cat /etc/hostname);"
        "echo firmware=$(ls -A /sys/firmware);"
        "echo ls=$(ls -A /mnt/secret); touch /mnt/secret/x 2>&1; echo rc=$?;"
        "grep ' /mnt/secret ' /proc/self/mountinfo"
    ), check=False).stdout
    assert "timer_list=0\n" in out and "hostname=\n" in out and "firmware=\n" in out, out
    assert "ls=\n" in out and "Read-only file system" in out and "rc=1" in out, out
    mount_line = out.strip().splitlines()[-1]
    assert " - tmpfs " in mount_line and " ro," in mount_line, out
    assert (secret / "key").read_text() == "hunter2"
    assert not (secret / "x").exists()


def test_readonly_paths_cannot_be_written(rt, bundle):
    script = "echo kbt-changed > /proc/sys/kernel/hostname 2>&1; echo rc=$?; hostname"
    out = rt.run(bundle.sh(script), check=False).stdout
    assert "rc=1" in out and "kbt-changed" not in out, out
    # the same write succeeds (in the container's own UTS namespace) once not read-only
    bundle.linux["readonlyPaths"].remove("/proc/sys")
    assert rt.run(bundle.sh(script)).stdout.split() == ["rc=0", "kbt-changed"]


def test_readonly_root(rt, bundle, rootfs):
    bundle.tmpfs("/tmp")
    out = rt.run(bundle.sh("touch /kbt-file 2>&1; echo rc=$?; touch /tmp/ok && echo tmp-ok"),
                 check=False).stdout
    assert "Read-only file system" in out and "rc=1" in out and "tmp-ok" in out, out
    assert not os.path.exists(os.path.join(rootfs, "kbt-file"))


def test_writable_root_when_not_readonly(rt, bundle, private_rootfs):
    bundle.config["root"] = {"path": private_rootfs, "readonly": False}
    rt.run(bundle.args("touch", "/kbt-file"))
    assert os.path.exists(os.path.join(private_rootfs, "kbt-file"))


@pytest.fixture
def open_dir():
    """A directory every uid can traverse (pytest's tmp dirs are 0700 root): the user
    namespace's root, host uid 100000, must reach its rootfs and mount sources."""
    path = tempfile.mkdtemp(prefix="kbt-userns-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def test_user_namespace_maps_ids(rt, bundle, open_dir):
    rootfs = build_rootfs(os.path.join(open_dir, "rootfs"))
    shared = os.path.join(open_dir, "shared")
    os.mkdir(shared, 0o777)
    os.chmod(shared, 0o777)
    os.mkdir(os.path.join(rootfs, "shared"))  # container root may not create it in the rootfs
    bundle.config["root"]["path"] = rootfs
    bundle.namespace("user")
    bundle.linux["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    bundle.linux["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    bundle.add_mount("/shared", "bind", shared, ["rbind", "rw"])
    out = rt.run(bundle.sh("cat /proc/self/uid_map /proc/self/gid_map; id -u; "
                           "touch /shared/made-inside")).stdout.split()
    assert out == ["0", "100000", "65536", "0", "100000", "65536", "0"]
    st = os.stat(os.path.join(shared, "made-inside"))
    assert (st.st_uid, st.st_gid) == (100000, 100000)


def test_time_namespace_offsets(rt, bundle):
    if not os.path.exists("/proc/self/ns/time"):
        pytest.skip("the kernel has no time namespaces")
    year = 365 * 24 * 3600
    bundle.namespace("time")
    bundle.linux["timeOffsets"] = {"monotonic": {"secs": year, "nanosecs": 0},
                                   "boottime": {"secs": 2 * year, "nanosecs": 0}}
    uptime_inside = float(rt.run(bundle.args("cat", "/proc/uptime")).stdout.split()[0])
    host_uptime = float(read("/proc/uptime").split()[0])
    assert 2 * year <= uptime_inside - host_uptime + 5 < 2 * year + 60


def test_sysctl_in_a_new_network_namespace(rt, bundle):
    host_value = read("/proc/sys/net/ipv4/ip_forward")
    wanted = "0" if host_value == "1" else "1"
    bundle.linux["sysctl"] = {"net.ipv4.ip_forward": wanted}
    assert rt.run(bundle.args("cat", "/proc/sys/net/ipv4/ip_forward")).stdout.strip() == wanted
    assert read("/proc/sys/net/ipv4/ip_forward") == host_value


def test_the_cgroup_filesystem_is_read_only_inside(rt, bundle):
    # CVE-2022-0492 went through a writable cgroupfs (release_agent): keep it read-only
    out = rt.run(bundle.sh(
        "ls /sys/fs/cgroup; echo 1 > /sys/fs/cgroup/memory/notify_on_release;"
        "echo rc=$?; grep ' /sys/fs/cgroup/memory ' /proc/self/mountinfo | cut -d' ' -f6;"
        "cat /sys/fs/cgroup/pids/pids.max"
    ), check=False).stdout
    lines = out.splitlines()
    assert {"memory", "pids", "cpu", "freezer"} <= set(lines), out
    assert "rc=1" in lines, out
    assert "ro" in lines[-2].split(","), out
    assert lines[-1] == "max"  # its own cgroup, not the host's root


def test_user_and_time_namespaces_together_and_exec_joins_them(rt, bundle, open_dir):
    if not os.path.exists("/proc/self/ns/time"):
        pytest.skip("the kernel has no time namespaces")
    year = 365 * 24 * 3600
    bundle.config["root"]["path"] = build_rootfs(os.path.join(open_dir, "rootfs"))
    bundle.namespace("user").namespace("time").namespace("cgroup")
    bundle.linux["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    bundle.linux["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    bundle.linux["timeOffsets"] = {"boottime": {"secs": year, "nanosecs": 0}}
    container_id, pid = rt.start_detached(bundle.args("sleep", "60"))
    out = rt("exec", container_id, "sh", "-c",
             "cut -d' ' -f1 /proc/uptime; cat /proc/self/uid_map; ps -o comm | grep -c '^sleep$'"
             ).stdout.split()
    assert float(out[0]) > year
    assert out[1:4] == ["0", "100000", "65536"]
    assert out[4] == "1"  # the init's sleep, in the same pid namespace
    # born in the container's cgroup in every hierarchy, and inside its cgroup namespace
    lines = rt("exec", container_id, "cat", "/proc/self/cgroup").stdout.split()
    assert lines and all(line.endswith(":/") for line in lines), lines
    for ns in ("user", "time", "cgroup", "pid", "mnt", "net"):
        assert os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}")
    rt.delete(container_id)
