"""Docker Config + HostConfig -> OCI config.json: defaults, conversions and Docker's errors."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from kobako.engine import oci_spec, seccomp_default
from kobako.engine.errors import EngineError, InvalidParameter, NotImplementedYet
from kobako.linux import capabilities
from kobako.linux.cgroups.sysinfo import SysInfo
from kobako.runtime import spec as runtime_spec

CID = "0123456789abcdef" * 4
# a host whose cgroups can enforce every limit
EVERY_LIMIT = SysInfo(**{f.name: True for f in dataclasses.fields(SysInfo) if f.type == "bool"},
                      cpus="0-3", mems="0")


@pytest.fixture
def rootfs(tmp_path):
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\nwww:x:33:\nstaff:x:50:www\n")
    return str(root)


def build(rootfs, host_config=None, config=None, image_config=None, **kwargs):
    kwargs.setdefault("cgroup_mode", "v1")
    kwargs.setdefault("create_paths", False)
    return oci_spec.build_spec(
        container_id=CID, config={"Cmd": ["true"], **(config or {})},
        host_config=host_config or {}, image_config=image_config or {}, rootfs=rootfs,
        bundle=os.path.dirname(rootfs), **kwargs)


def mount_at(spec, destination):
    found = [m for m in spec["mounts"] if m["destination"] == destination]
    assert len(found) == 1, f"{destination}: {found}"
    return found[0]


# --- the default spec ----------------------------------------------------------------


def test_default_spec_is_dockers_and_valid(rootfs):
    spec = build(rootfs)
    runtime_spec.validate(spec)
    process, linux = spec["process"], spec["linux"]
    assert process["capabilities"] == {key: oci_spec.DEFAULT_CAPABILITIES
                                       for key in ("bounding", "effective", "permitted")}
    assert len(oci_spec.DEFAULT_CAPABILITIES) == 14
    assert "inheritable" not in process["capabilities"]
    assert "noNewPrivileges" not in process
    assert process["user"] == {"uid": 0, "gid": 0, "additionalGids": [0]}
    assert process["cwd"] == "/"
    assert process["env"] == [f"PATH={oci_spec.DEFAULT_PATH_ENV}", f"HOSTNAME={CID[:12]}"]
    assert spec["hostname"] == CID[:12]
    assert spec["root"] == {"path": rootfs, "readonly": False}
    assert spec["annotations"] == {}
    assert linux["cgroupsPath"] == f"/kobako/{CID}"
    assert [ns["type"] for ns in linux["namespaces"]] == ["mount", "network", "uts", "pid", "ipc"]
    assert linux["maskedPaths"][:12] == oci_spec.DEFAULT_MASKED_PATHS
    assert "/proc/timer_list" in linux["maskedPaths"]
    assert linux["readonlyPaths"] == ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                      "/proc/sysrq-trigger"]
    assert linux["resources"]["devices"][0] == {"allow": False, "access": "rwm"}
    allowed = {(r["type"], r["major"], r["minor"]) for r in linux["resources"]["devices"]
               if r["allow"]}
    assert allowed == {("c", 1, 3), ("c", 1, 5), ("c", 1, 8), ("c", 1, 9), ("c", 5, 0),
                       ("c", 5, 1)}
    assert linux["seccomp"] == seccomp_default.default_profile(oci_spec.DEFAULT_CAPABILITIES)
    assert mount_at(spec, "/dev/shm")["options"] == ["nosuid", "noexec", "nodev", "mode=1777",
                                                     f"size={64 << 20}"]
    assert mount_at(spec, "/sys")["options"][-1] == "ro"
    assert "ro" in mount_at(spec, "/sys/fs/cgroup")["options"]
    assert mount_at(spec, "/dev")["options"] == ["nosuid", "strictatime", "mode=755",
                                                 "size=65536k"]
    assert "newinstance" in mount_at(spec, "/dev/pts")["options"]
    assert mount_at(spec, "/dev/mqueue")["type"] == "mqueue"
    assert mount_at(spec, "/proc")["type"] == "proc"


def test_cgroup_namespace_follows_the_cgroup_mode(rootfs):
    def types(spec):
        return [ns["type"] for ns in spec["linux"]["namespaces"]]
    assert "cgroup" in types(build(rootfs, cgroup_mode="v2"))
    assert "cgroup" not in types(build(rootfs, cgroup_mode="v1"))
    assert "cgroup" in types(build(rootfs, {"CgroupnsMode": "private"}, cgroup_mode="v1"))
    assert "cgroup" not in types(build(rootfs, {"CgroupnsMode": "host"}, cgroup_mode="v2"))
    assert "time" not in types(build(rootfs, cgroup_mode="v2"))


@pytest.mark.parametrize("host_config, absent", [
    ({"NetworkMode": "host"}, "network"),
    ({"PidMode": "host"}, "pid"),
    ({"IpcMode": "host"}, "ipc"),
    ({"UTSMode": "host"}, "uts"),
])
def test_host_modes_share_the_hosts_namespace(rootfs, host_config, absent):
    spec = build(rootfs, host_config)
    assert absent not in [ns["type"] for ns in spec["linux"]["namespaces"]]
    runtime_spec.validate(spec)
    if absent == "uts":
        assert "hostname" not in spec
    if absent == "network":
        assert "sysctl" not in spec["linux"]  # no ping/port sysctls for the host's netns
    if absent == "ipc":
        assert mount_at(spec, "/dev/shm")["source"] == "/dev/shm"


def test_caller_namespaces_join_paths(rootfs):
    spec = build(rootfs, {"PidMode": "container:other", "Init": True},
                 namespaces={"mount": None, "pid": "/proc/42/ns/pid", "uts": None},
                 init_path="/usr/bin/tini")
    assert {"type": "pid", "path": "/proc/42/ns/pid"} in spec["linux"]["namespaces"]
    assert spec["process"]["args"] == ["true"]  # no init in someone else's pid namespace
    with pytest.raises(EngineError, match="caller must pass"):
        build(rootfs, {"NetworkMode": "container:abc"})


# --- capabilities ---------------------------------------------------------------------


ALL = oci_spec.all_capabilities()


def test_all_capabilities_are_those_this_process_holds():
    held = set(capabilities.current()["effective"]) or set(capabilities.ALL_CAPS)
    assert ALL and set(ALL) <= held and set(ALL) <= set(capabilities.ALL_CAPS)
    assert ALL == sorted(ALL, key=capabilities.KNOWN_CAPS.__getitem__)


@pytest.mark.parametrize("cap_add, cap_drop, expected", [
    (["NET_ADMIN"], [], oci_spec.DEFAULT_CAPABILITIES + ["CAP_NET_ADMIN"]),
    (["cap_sys_admin"], ["chown", "CAP_KILL"],
     [c for c in oci_spec.DEFAULT_CAPABILITIES if c not in ("CAP_CHOWN", "CAP_KILL")]
     + ["CAP_SYS_ADMIN"]),
    ([], ["ALL"], []),
    (["NET_RAW", "sys_time"], ["all"], ["CAP_NET_RAW", "CAP_SYS_TIME"]),
    (["ALL"], ["MKNOD"], [c for c in ALL if c != "CAP_MKNOD"]),
    (["CHOWN"], [], oci_spec.DEFAULT_CAPABILITIES),  # already there: not twice
])
def test_capabilities(rootfs, cap_add, cap_drop, expected):
    spec = build(rootfs, {"CapAdd": cap_add, "CapDrop": cap_drop})
    assert spec["process"]["capabilities"]["bounding"] == expected
    assert spec["linux"]["seccomp"] == seccomp_default.default_profile(expected)


def test_unknown_capability(rootfs):
    with pytest.raises(InvalidParameter, match='unknown capability: "CAP_FOO"'):
        build(rootfs, {"CapAdd": ["foo"]})


def test_non_root_user_gets_only_the_bounding_set(rootfs):
    spec = build(rootfs, config={"User": "www"})
    assert spec["process"]["capabilities"] == {"bounding": oci_spec.DEFAULT_CAPABILITIES}
    assert spec["process"]["user"] == {"uid": 33, "gid": 33, "additionalGids": [33, 50]}


def test_privileged(rootfs):
    spec = build(rootfs, {"Privileged": True, "ReadonlyPaths": ["/x"]})
    runtime_spec.validate(spec)
    linux = spec["linux"]
    assert spec["process"]["capabilities"]["bounding"] == ALL
    assert "seccomp" not in linux
    assert "maskedPaths" not in linux and "readonlyPaths" not in linux
    assert linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    paths = {d["path"] for d in linux["devices"]}
    assert "/dev/null" in paths and "/dev/console" not in paths
    assert not any(p.startswith(("/dev/pts/", "/dev/shm/")) for p in paths)
    assert "ro" not in mount_at(spec, "/sys")["options"]
    assert "ro" not in mount_at(spec, "/sys/fs/cgroup")["options"]


# --- command, env, user, hostname -------------------------------------------------------


@pytest.mark.parametrize("config, image, expected", [
    ({"Cmd": ["ls"]}, {"Entrypoint": ["/ep"], "Cmd": ["x"]}, ["/ep", "ls"]),
    ({}, {"Entrypoint": ["/ep"], "Cmd": ["x"]}, ["/ep", "x"]),
    ({"Entrypoint": ["/mine"]}, {"Entrypoint": ["/ep"], "Cmd": ["x"]}, ["/mine"]),
    ({"Entrypoint": [], "Cmd": None}, {"Entrypoint": ["/ep"], "Cmd": ["x"]}, ["x"]),
    ({"Entrypoint": [""], "Cmd": ["echo", "hi"]}, {"Entrypoint": ["/ep"]}, ["echo", "hi"]),
    ({"Entrypoint": ["/a", "-v"], "Cmd": ["b"]}, {}, ["/a", "-v", "b"]),
])
def test_resolve_command(config, image, expected):
    assert oci_spec.resolve_command(config, image) == expected


@pytest.mark.parametrize("config, image", [
    ({}, {}),
    ({"Entrypoint": [""]}, {"Cmd": ["sh"]}),  # --entrypoint "" does not take the image's Cmd
])
def test_no_command(config, image):
    with pytest.raises(InvalidParameter, match="no command specified"):
        oci_spec.resolve_command(config, image)


def test_merged_env():
    config = {"Env": ["A=container", "UNSET_ME", "PATH=/mine"], "Tty": True,
              "Hostname": "web"}
    image = {"Env": ["A=image", "B=image", "PATH=/img"]}
    assert oci_spec.merged_env(config, image) == [
        "PATH=/mine", "HOSTNAME=web", "TERM=xterm", "A=container", "B=image"]
    assert oci_spec.merged_env({"Env": ["HOSTNAME"]}, {}) == [f"PATH={oci_spec.DEFAULT_PATH_ENV}"]
    assert oci_spec.merged_env({}, {"Env": ["PATH=/img"]}) == ["PATH=/img", "HOSTNAME="]


def test_process_from_config(rootfs):
    spec = build(rootfs, {"GroupAdd": ["staff", "9"], "OomScoreAdj": 300,
                          "ConsoleSize": [40, 120], "SecurityOpt": ["no-new-privileges"]},
                 config={"User": "www:root", "WorkingDir": "/srv", "Tty": True,
                         "Hostname": "h", "Domainname": "example.org"},
                 image_config={"User": "root", "WorkingDir": "/img"})
    process = spec["process"]
    assert process["user"] == {"uid": 33, "gid": 0, "additionalGids": [0, 50, 9]}
    assert process["cwd"] == "/srv" and process["terminal"] is True
    assert process["oomScoreAdj"] == 300 and process["noNewPrivileges"] is True
    assert process["consoleSize"] == {"height": 40, "width": 120}
    assert spec["hostname"] == "h" and spec["domainname"] == "example.org"
    runtime_spec.validate(spec)


def test_unknown_user(rootfs):
    with pytest.raises(InvalidParameter,
                       match="unable to find user nope: no matching entries in passwd file"):
        build(rootfs, config={"User": "nope"})


def test_working_dir_is_created_inside_the_rootfs(rootfs, tmp_path):
    # A symlink in the image cannot make us create directories on the host: a dangling
    # absolute link resolves inside the rootfs, and so does a relative one with "..".
    os.symlink(str(tmp_path / "outside"), os.path.join(rootfs, "escape"))
    build(rootfs, config={"WorkingDir": "/escape/app"}, create_paths=True)
    assert not (tmp_path / "outside").exists()
    assert os.path.isdir(rootfs + str(tmp_path / "outside" / "app"))
    os.symlink("../../../../../../../../up", os.path.join(rootfs, "rel"))
    build(rootfs, config={"WorkingDir": "/rel/./x/../y"}, create_paths=True)
    assert os.path.isdir(os.path.join(rootfs, "up", "y"))
    assert not os.path.exists(os.path.join(rootfs, "up", "x"))  # ".." is lexical, as Docker
    build(rootfs, config={"WorkingDir": "/up/y"}, create_paths=True)  # existing: fine
    open(os.path.join(rootfs, "afile"), "w").close()
    with pytest.raises(InvalidParameter, match="Cannot mkdir: /afile/x is not a directory"):
        build(rootfs, config={"WorkingDir": "/afile/x"}, create_paths=True)


def test_init(rootfs):
    spec = build(rootfs, {"Init": True}, config={"Cmd": ["sleep", "1"]},
                 init_path="/usr/libexec/kobako-init")
    assert spec["process"]["args"] == ["/sbin/docker-init", "--", "sleep", "1"]
    assert mount_at(spec, "/sbin/docker-init") == {
        "destination": "/sbin/docker-init", "type": "bind",
        "source": "/usr/libexec/kobako-init", "options": ["bind", "ro"]}
    with pytest.raises(EngineError, match="no init binary"):
        build(rootfs, {"Init": True})


# --- resources -------------------------------------------------------------------------


@pytest.mark.parametrize("host_config, expected", [
    ({"NanoCpus": 1_500_000_000}, {"cpu": {"period": 100000, "quota": 150000}}),
    ({"CpuShares": 512, "CpuPeriod": 50000, "CpuQuota": 25000, "CpusetCpus": "0",
      "CpusetMems": "0"},
     {"cpu": {"shares": 512, "period": 50000, "quota": 25000, "cpus": "0", "mems": "0"}}),
    ({"CpuRealtimePeriod": 1000000, "CpuRealtimeRuntime": 950000},
     {"cpu": {"realtimePeriod": 1000000, "realtimeRuntime": 950000}}),
    ({"Memory": 64 << 20}, {"memory": {"limit": 64 << 20, "swap": 128 << 20,
                                       "disableOOMKiller": False}}),
    ({"Memory": 64 << 20, "MemorySwap": -1, "MemoryReservation": 32 << 20,
      "MemorySwappiness": 10, "OomKillDisable": True},
     {"memory": {"limit": 64 << 20, "swap": -1, "reservation": 32 << 20, "swappiness": 10,
                 "disableOOMKiller": True}}),
    ({"MemorySwappiness": -1}, {"memory": {"disableOOMKiller": False}}),
    ({"PidsLimit": 100}, {"pids": {"limit": 100}}),
    ({"PidsLimit": 0}, {}),  # unlimited: dockerd keeps no limit (null in inspect)
    ({"PidsLimit": -1}, {}),
    ({"PidsLimit": None}, {}),
    ({"BlkioWeight": 300}, {"blockIO": {"weight": 300}}),
])
def test_resources(host_config, expected):
    got = oci_spec.resources(oci_spec.adapt_host_config(host_config, "v1"))
    if "memory" not in expected:
        expected = {"memory": {"disableOOMKiller": False}, **expected}
    assert got == expected


def test_blkio_devices_use_the_host_device_numbers():
    rdev = os.stat("/dev/null").st_rdev
    major, minor = os.major(rdev), os.minor(rdev)
    got = oci_spec.resources({
        "BlkioWeightDevice": [{"Path": "/dev/null", "Weight": 200}],
        "BlkioDeviceReadBps": [{"Path": "/dev/null", "Rate": 1048576}],
        "BlkioDeviceWriteBps": [{"Path": "/dev/null", "Rate": 2}],
        "BlkioDeviceReadIOps": [{"Path": "/dev/null", "Rate": 3}],
        "BlkioDeviceWriteIOps": [{"Path": "/dev/null", "Rate": 4}],
    })["blockIO"]
    assert got == {
        "weightDevice": [{"major": major, "minor": minor, "weight": 200}],
        "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}],
        "throttleWriteBpsDevice": [{"major": major, "minor": minor, "rate": 2}],
        "throttleReadIOPSDevice": [{"major": major, "minor": minor, "rate": 3}],
        "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 4}],
    }
    with pytest.raises(InvalidParameter, match="stat /dev/nope: no such file or directory"):
        oci_spec.resources({"BlkioDeviceReadBps": [{"Path": "/dev/nope", "Rate": 1}]})


def test_devices_and_cgroup_rules(rootfs):
    spec = build(rootfs, {"Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/xnull",
                                       "CgroupPermissions": "rw"}],
                          "DeviceCgroupRules": ["c 42:* rmw", "a"]})
    device = spec["linux"]["devices"][0]
    assert device["path"] == "/dev/xnull" and device["type"] == "c"
    assert (device["major"], device["minor"]) == (1, 3)
    rules = spec["linux"]["resources"]["devices"]
    assert rules[-3:] == [
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
        {"allow": True, "type": "c", "major": 42, "minor": -1, "access": "rmw"},
        {"allow": True, "type": "a", "major": -1, "minor": -1, "access": "rwm"},
    ]
    runtime_spec.validate(spec)
    with pytest.raises(InvalidParameter, match="invalid device cgroup rule format: 'x 1:1 r'"):
        build(rootfs, {"DeviceCgroupRules": ["x 1:1 r"]})
    with pytest.raises(InvalidParameter, match="error gathering device information"):
        build(rootfs, {"Devices": [{"PathOnHost": "/dev/none-such", "PathInContainer": "/x",
                                    "CgroupPermissions": "rwm"}]})


# --- rlimits, sysctls, security options ------------------------------------------------


def test_ulimits(rootfs):
    spec = build(rootfs, {"Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 2048},
                                      {"Name": "core", "Soft": -1, "Hard": -1}]},
                 default_ulimits=[{"Name": "nofile", "Soft": 1, "Hard": 1},
                                  {"Name": "nproc", "Soft": 50, "Hard": 60}])
    assert spec["process"]["rlimits"] == [
        {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 2048},
        {"type": "RLIMIT_CORE", "soft": 2**64 - 1, "hard": 2**64 - 1},
        {"type": "RLIMIT_NPROC", "soft": 50, "hard": 60},
    ]
    runtime_spec.validate(spec)
    with pytest.raises(InvalidParameter, match="invalid ulimit type: bogus"):
        build(rootfs, {"Ulimits": [{"Name": "bogus", "Soft": 1, "Hard": 1}]})


@pytest.mark.parametrize("host_config, message", [
    ({"Sysctls": {"kernel.panic": "1"}}, 'sysctl "kernel.panic" is not in a separate kernel'),
    ({"Sysctls": {"net.ipv4.ip_forward": "1"}, "NetworkMode": "host"},
     'sysctl "net.ipv4.ip_forward" not allowed in host network namespace'),
    ({"Sysctls": {"kernel.shmmax": "1"}, "IpcMode": "host"},
     'sysctl "kernel.shmmax" is not allowed in the hosts ipc namespace'),
])
def test_sysctl_errors(rootfs, host_config, message):
    with pytest.raises(InvalidParameter, match=message):
        build(rootfs, host_config)


def test_sysctls(rootfs):
    spec = build(rootfs, {"Sysctls": {"net.core.somaxconn": "1024", "kernel.sem": "1 2 3 4",
                                      "fs.mqueue.msg_max": "20",
                                      "net.ipv4.ip_unprivileged_port_start": "80"}})
    sysctl = spec["linux"]["sysctl"]
    assert sysctl["net.core.somaxconn"] == "1024" and sysctl["kernel.sem"] == "1 2 3 4"
    assert sysctl["net.ipv4.ip_unprivileged_port_start"] == "80"  # the user's wins
    assert sysctl["net.ipv4.ping_group_range"] == "0 2147483647"


@pytest.mark.parametrize("opts, nnp", [
    (["no-new-privileges"], True),
    (["no-new-privileges:true"], True),
    (["no-new-privileges=false"], False),
    (["label=disable", "apparmor=unconfined"], False),
])
def test_security_opts(rootfs, opts, nnp):
    spec = build(rootfs, {"SecurityOpt": opts})
    assert spec["process"].get("noNewPrivileges", False) is nnp


@pytest.mark.parametrize("opt, message", [
    ("bogus", 'invalid --security-opt 1: "bogus"'),
    ("foo=bar", 'invalid --security-opt 2: "foo=bar"'),
    ("no-new-privileges=maybe", 'invalid --security-opt 2: "no-new-privileges=maybe"'),
    ("seccomp={not json", "Decoding seccomp profile failed"),
])
def test_security_opt_errors(rootfs, opt, message):
    with pytest.raises(InvalidParameter, match=message):
        build(rootfs, {"SecurityOpt": [opt]})


def test_seccomp_unconfined_and_custom_profile(rootfs):
    assert "seccomp" not in build(rootfs, {"SecurityOpt": ["seccomp=unconfined"]})["linux"]
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
                    {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
        "syscalls": [
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"name": "chmod", "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 1, "value": 511, "op": "SCMP_CMP_EQ"}]},
            {"names": ["reboot"], "action": "SCMP_ACT_ALLOW",
             "includes": {"caps": ["CAP_SYS_BOOT"]}},
            {"names": ["unshare"], "action": "SCMP_ACT_ERRNO",
             "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        ],
    }
    spec = build(rootfs, {"SecurityOpt": ["seccomp=" + json.dumps(profile)]})
    filt = spec["linux"]["seccomp"]
    assert filt["defaultAction"] == "SCMP_ACT_ALLOW"
    native = seccomp_default.ARCH_MAP.get(seccomp_default.host_arch())
    if native in (("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
                  ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM")):
        assert filt["architectures"][0] == native[0]
    assert [s["names"] for s in filt["syscalls"]] == [["mkdir"], ["chmod"], ["unshare"]]
    assert filt["syscalls"][0]["errnoRet"] == 1
    assert filt["syscalls"][1]["args"] == [{"index": 1, "value": 511, "valueTwo": 0,
                                            "op": "SCMP_CMP_EQ"}]
    runtime_spec.validate(spec)
    # With CAP_SYS_ADMIN the excluded rule goes, and CAP_SYS_BOOT brings reboot in.
    spec = build(rootfs, {"SecurityOpt": ["seccomp=" + json.dumps(profile)],
                          "CapAdd": ["SYS_ADMIN", "SYS_BOOT"]})
    assert [s["names"] for s in spec["linux"]["seccomp"]["syscalls"]] == [
        ["mkdir"], ["chmod"], ["reboot"]]


# --- mounts ------------------------------------------------------------------------------


def test_binds(rootfs, tmp_path):
    src = tmp_path / "data"
    src.mkdir()
    spec = build(rootfs, {"Binds": [f"{src}:/data:ro", f"{src}/:/a/b/c:rshared,z",
                                    f"{tmp_path}:/a"]})
    user = spec["mounts"][-3:]
    assert user == [  # parents first
        {"destination": "/data", "type": "bind", "source": str(src),
         "options": ["rbind", "ro", "rprivate"]},
        {"destination": "/a", "type": "bind", "source": str(tmp_path),
         "options": ["rbind", "rprivate"]},
        {"destination": "/a/b/c", "type": "bind", "source": str(src),
         "options": ["rbind", "rshared"]},
    ]
    runtime_spec.validate(spec)


def test_bind_creates_a_missing_source_for_v_but_not_for_mount(rootfs, tmp_path):
    missing = tmp_path / "made" / "by" / "v"
    build(rootfs, {"Binds": [f"{missing}:/x"]}, create_paths=True)
    assert missing.is_dir()
    gone = tmp_path / "gone"
    with pytest.raises(InvalidParameter) as err:
        build(rootfs, {"Mounts": [{"Type": "bind", "Source": str(gone), "Target": "/x"}]})
    assert str(err.value) == (f'invalid mount config for type "bind": bind source path '
                              f'does not exist: {gone}')


@pytest.mark.parametrize("raw, message", [
    ("", "invalid volume specification: ''"),
    ("/a:/b:/c:/d", "invalid volume specification: '/a:/b:/c:/d'"),
    ("/data:rw", "invalid volume specification: '/data:rw'"),
    ("/a:/b:bogus", "invalid mode: bogus"),
    ("/a:/b:ro,rw", "invalid mode: ro,rw"),
    ("/a:relative", "invalid volume specification: '/a:relative': invalid mount path: "
                    "'relative' mount path must be absolute"),
    ("/a:/", "invalid volume specification: '/a:/': invalid specification: destination "
             "can't be '/'"),
    ("/a:/b:nocopy", "invalid volume specification: '/a:/b:nocopy': invalid mount config "
                     "for type \"bind\": field VolumeOptions must not be specified"),
])
def test_bind_errors(raw, message):
    with pytest.raises(InvalidParameter) as err:
        oci_spec.parse_bind(raw)
    assert str(err.value) == message


def test_mounts_bind_and_tmpfs(rootfs, tmp_path):
    spec = build(rootfs, {"Mounts": [
        {"Type": "bind", "Source": str(tmp_path), "Target": "/host", "ReadOnly": True,
         "BindOptions": {"Propagation": "rslave", "NonRecursive": True}},
        {"Type": "tmpfs", "Target": "/scratch",
         "TmpfsOptions": {"SizeBytes": 16 << 20, "Mode": 0o1777, "Options": [["exec"]]}},
    ]})
    assert mount_at(spec, "/host") == {"destination": "/host", "type": "bind",
                                       "source": str(tmp_path),
                                       "options": ["bind", "ro", "rslave"]}
    assert mount_at(spec, "/scratch")["options"] == [
        "nosuid", "nodev", "rprivate", "mode=1777", "size=16m", "exec"]
    runtime_spec.validate(spec)


@pytest.mark.parametrize("mount, message", [
    ({"Type": "bind", "Target": "/x"},
     'invalid mount config for type "bind": field Source must not be empty'),
    ({"Type": "bind", "Source": "/", "Target": "/x", "TmpfsOptions": {}},
     'invalid mount config for type "bind": field TmpfsOptions must not be specified'),
    ({"Type": "tmpfs", "Source": "x", "Target": "/x"},
     'invalid mount config for type "tmpfs": field Source must not be specified'),
    ({"Type": "tmpfs", "Target": "/x", "TmpfsOptions": {"Options": [["size", "1"]]}},
     'invalid mount config for type "tmpfs": invalid option: size'),
    ({"Type": "weird", "Target": "/x"}, 'invalid mount config for type "weird": mount type unknown'),
    ({"Type": "bind", "Source": "/"},
     'invalid mount config for type "bind": field Target must not be empty'),
])
def test_mount_errors(mount, message):
    with pytest.raises(InvalidParameter) as err:
        oci_spec.parse_mount(mount)
    assert str(err.value) == message


def test_volumes_wait_for_the_volumes_code(rootfs):
    with pytest.raises(NotImplementedYet, match="volume mounts are not supported yet"):
        build(rootfs, {"Binds": ["myvol:/data"]})
    with pytest.raises(NotImplementedYet):
        build(rootfs, {"Mounts": [{"Type": "volume", "Source": "v", "Target": "/v"}]})
    supplied = {"destination": "/data", "type": "bind", "source": "/var/lib/kobako/volumes/v",
                "options": ["rbind", "rprivate"]}
    spec = build(rootfs, {"Binds": ["myvol:/data"]}, extra_mounts=[supplied])
    assert mount_at(spec, "/data") == supplied


def test_duplicate_mount_point(rootfs, tmp_path):
    with pytest.raises(InvalidParameter, match="Duplicate mount point: /x"):
        build(rootfs, {"Binds": [f"{tmp_path}:/x"], "Tmpfs": {"/x": ""}})


@pytest.mark.parametrize("data, expected", [
    ("", ["noexec", "nosuid", "nodev", "rprivate"]),
    ("rw,size=64m", ["noexec", "nosuid", "nodev", "rprivate", "rw", "size=64m"]),
    ("exec,mode=700,size=1g,size=2g", ["nosuid", "nodev", "rprivate", "exec", "mode=700",
                                      "size=2g"]),
    ("shared", ["noexec", "nosuid", "nodev", "shared"]),
])
def test_tmpfs_options(rootfs, data, expected):
    spec = build(rootfs, {"Tmpfs": {"/run": data}})
    assert mount_at(spec, "/run") == {"destination": "/run", "type": "tmpfs",
                                      "source": "tmpfs", "options": expected}


def test_tmpfs_bad_option(rootfs):
    with pytest.raises(InvalidParameter, match=r'invalid tmpfs option \["foo"\]'):
        build(rootfs, {"Tmpfs": {"/run": "foo"}})


def test_shm_size_ipc_none_and_user_dev(rootfs, tmp_path):
    spec = build(rootfs, {"ShmSize": 1 << 30})
    assert mount_at(spec, "/dev/shm")["options"][-1] == f"size={1 << 30}"
    spec = build(rootfs, {"IpcMode": "none"})
    assert not [m for m in spec["mounts"] if m["destination"] == "/dev/shm"]
    spec = build(rootfs, {"Binds": [f"{tmp_path}:/dev"]})
    assert not [m for m in spec["mounts"] if m["destination"].startswith("/dev/")]
    assert mount_at(spec, "/dev")["type"] == "bind"


def test_readonly_rootfs(rootfs, tmp_path):
    spec = build(rootfs, {"ReadonlyRootfs": True, "Binds": [f"{tmp_path}:/rw"]})
    assert spec["root"]["readonly"] is True
    assert "ro" not in mount_at(spec, "/rw")["options"]  # the user's mount stays writable
    for destination in ("/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue"):
        assert "ro" not in mount_at(spec, destination)["options"]


def test_masked_and_readonly_overrides(rootfs):
    spec = build(rootfs, {"MaskedPaths": ["/proc/x"], "ReadonlyPaths": []})
    assert spec["linux"]["maskedPaths"] == ["/proc/x"]
    assert spec["linux"]["readonlyPaths"] == []


def test_annotations_and_cgroup_parent(rootfs):
    spec = build(rootfs, {"Annotations": {"a": "b"}, "CgroupParent": "/custom"},
                 config={"Labels": {"not": "annotations"}})
    assert spec["annotations"] == {"a": "b"}
    assert spec["linux"]["cgroupsPath"] == f"/custom/{CID}"


# --- create-time helpers ----------------------------------------------------------------


def test_merge_config():
    merged = oci_spec.merge_config(
        {"Env": ["A=1"], "Labels": {"x": "c"}, "ExposedPorts": {"80/tcp": {}}},
        {"Env": ["A=2", "B=2"], "Labels": {"x": "i", "y": "i"}, "ExposedPorts": {"53/udp": {}},
         "User": "www", "WorkingDir": "/w", "StopSignal": "SIGQUIT", "Cmd": ["sh"]})
    assert merged["Env"] == ["A=1", "B=2"]
    assert merged["Labels"] == {"x": "c", "y": "i"}
    assert merged["ExposedPorts"] == {"53/udp": {}, "80/tcp": {}}
    assert (merged["User"], merged["WorkingDir"], merged["StopSignal"]) == (
        "www", "/w", "SIGQUIT")
    assert merged["Cmd"] == ["sh"]


def test_adapt_host_config():
    hc = oci_spec.adapt_host_config({"Memory": 100 << 20}, "v2")
    assert hc["MemorySwap"] == 200 << 20 and hc["ShmSize"] == 64 << 20
    assert hc["IpcMode"] == "private" and hc["CgroupnsMode"] == "private"
    assert hc["OomKillDisable"] is False
    assert oci_spec.adapt_host_config({"Privileged": True}, "v1")["CgroupnsMode"] == "host"
    # inspect shows what will be masked, as dockerd's does; privileged ones have none
    assert "/proc/kcore" in hc["MaskedPaths"] and "/proc/sys" in hc["ReadonlyPaths"]
    assert oci_spec.adapt_host_config({"Privileged": True}).get("MaskedPaths") is None
    assert oci_spec.adapt_host_config({"MaskedPaths": []})["MaskedPaths"] == []


@pytest.mark.parametrize("host_config, message", [
    ({"Memory": 1024}, "Minimum memory limit allowed is 6MB"),
    ({"Memory": 10 << 20, "MemorySwap": 8 << 20}, "Minimum memoryswap limit should be larger"),
    ({"MemorySwap": 8 << 20}, "You should always set the Memory limit"),
    ({"NanoCpus": 10**9, "CpuQuota": 5000}, "Nano CPUs and CPU Quota cannot both be set"),
    ({"CpuPeriod": 10}, "CPU cfs period can not be less than 1ms"),
    ({"NanoCpus": 10**15}, "range of CPUs is from 0.01 to"),
    ({"BlkioWeight": 5}, "Range of blkio weight is from 10 to 1000"),
    ({"OomScoreAdj": 1001}, r"range for oom score adj is \[-1000, 1000\]"),
    ({"PidMode": "bogus"}, "invalid PID mode: bogus"),
    ({"UTSMode": "container:x"}, "invalid UTS mode: container:x"),
    ({"IpcMode": "weird"}, "invalid IPC mode: weird"),
    ({"ShmSize": -1}, "SHM size can not be less than 0"),
    ({"CapAdd": ["CAP_FOO"]}, 'unknown capability: "CAP_FOO"'),
    ({"Ulimits": [{"Name": "x", "Soft": 1, "Hard": 1}]}, "invalid ulimit type: x"),
    ({"Tmpfs": {"rel": ""}}, "invalid mount path: 'rel' mount path must be absolute"),
    ({"Binds": ["a:b:c:d"]}, "invalid volume specification: 'a:b:c:d'"),
    ({"Devices": [{"PathOnHost": "/dev/null", "CgroupPermissions": "rwx"}]},
     "invalid device mode: rwx"),
    ({"Tmpfs": {"//": ""}}, "destination can't be '/'"),
    ({"CapDrop": ["bogus"]}, 'invalid CapDrop: unknown capability: "CAP_BOGUS"'),
    ({"PortBindings": {"80/tcp": [{"HostPort": "abc"}]}}, 'invalid port specification: "abc"'),
    ({"PortBindings": {"x/tcp": []}}, 'invalid port specification: "x"'),
    ({"Annotations": {"": "a"}}, "the empty string is not permitted as an annotation key"),
    ({"CpusetCpus": "abc"}, "Invalid value abc for cpuset cpus: invalid format: abc"),
    ({"CpusetCpus": "3-1"}, "Invalid value 3-1 for cpuset cpus"),
    ({"CpusetCpus": "1,99"},
     "Requested CPUs are not available - requested 1,99, available: 0-3"),
    ({"CpusetMems": "1"},
     "Requested memory nodes are not available - requested 1, available: 0"),
])
def test_verify_host_config(host_config, message):
    with pytest.raises(InvalidParameter, match=message):
        oci_spec.verify_host_config(host_config, sysinfo=EVERY_LIMIT)


@pytest.mark.parametrize("config, message", [
    ({"WorkingDir": "rel"}, "it needs to be an absolute path"),
    ({"Env": [""]}, "invalid environment variable: $"),
    ({"Env": ["A=1", "=foo"]}, "invalid environment variable: =foo"),
    ({"StopSignal": "SIGFOO"}, "Invalid signal: SIGFOO"),
    ({"StopSignal": "0"}, "Invalid signal: 0"),
    ({"StopSignal": "99"}, "the linux daemon does not support signal 99"),
    ({"Healthcheck": {"Interval": 100}}, "Interval in Healthcheck cannot be less than 1ms"),
    ({"Healthcheck": {"Timeout": -1}}, "Timeout in Healthcheck cannot be less than 1ms"),
    ({"Healthcheck": {"StartInterval": 10}}, "StartInterval in Healthcheck cannot be less"),
    ({"Healthcheck": {"Retries": -1}}, "Retries in Healthcheck cannot be negative"),
])
def test_verify_config(config, message):
    with pytest.raises(InvalidParameter, match=message):
        oci_spec.verify_host_config({}, config, sysinfo=EVERY_LIMIT)


def test_verify_config_accepts_what_dockerd_accepts():
    ok = {"Env": ["A=1", "B=", "C"], "StopSignal": "RTMIN+3",
          "Healthcheck": {"Interval": 10**6, "Timeout": 0, "Retries": 0}}
    assert oci_spec.verify_host_config({"CpusetCpus": "0-1,3", "CpusetMems": "0"}, ok,
                                       sysinfo=EVERY_LIMIT) == []


def test_verify_host_config_warnings_and_workdir():
    assert oci_spec.verify_host_config({"OomKillDisable": True}, sysinfo=EVERY_LIMIT)[0]\
        .startswith("OOM killer is disabled")
    assert oci_spec.verify_host_config({"Memory": 10 << 20, "MemorySwap": -1},
                                       sysinfo=EVERY_LIMIT) == []


def test_verify_host_config_discards_what_the_host_cannot_limit():
    # a 6.x kernel without BFQ/CFQ has no blkio weight files; no swap accounting
    host = dataclasses.replace(EVERY_LIMIT, blkio_weight=False, blkio_weight_device=False,
                               swap_limit=False, pids_limit=False)
    hc = {"Memory": 64 << 20, "BlkioWeight": 300, "PidsLimit": 10, "CpuShares": 512,
          "BlkioWeightDevice": [{"Path": "/dev/sda", "Weight": 200}]}
    warnings = oci_spec.verify_host_config(hc, sysinfo=host)
    assert warnings == [
        "Your kernel does not support swap limit capabilities or the cgroup is not mounted. "
        "Memory limited without swap.",
        "Your kernel does not support PIDs limit capabilities or the cgroup is not mounted. "
        "PIDs limit discarded.",
        "Your kernel does not support Block I/O weight or the cgroup is not mounted. "
        "Weight discarded.",
        "Your kernel does not support Block I/O weight_device or the cgroup is not mounted. "
        "Weight-device discarded."]
    assert hc == {"Memory": 64 << 20, "MemorySwap": -1, "BlkioWeight": 0, "PidsLimit": None,
                  "CpuShares": 512, "BlkioWeightDevice": []}
    # the swap default (twice the memory) is not applied on top of the discard
    assert oci_spec.adapt_host_config(hc, "v1")["MemorySwap"] == -1
    # out-of-range values of a discarded setting are not an error, as in dockerd
    assert oci_spec.verify_host_config({"BlkioWeight": 5}, sysinfo=host)
    with pytest.raises(InvalidParameter, match="does not support CPU CFS"):
        oci_spec.verify_host_config({"NanoCpus": 10**9},
                                    sysinfo=dataclasses.replace(EVERY_LIMIT, cpu_cfs=False))
    with pytest.raises(InvalidParameter, match="does not support cgroup cpu real-time period"):
        oci_spec.verify_host_config({"CpuRealtimePeriod": 1000},
                                    sysinfo=dataclasses.replace(EVERY_LIMIT, cpu_realtime=False))


def test_exec_process(rootfs):
    spec = build(rootfs, {"Ulimits": [{"Name": "nofile", "Soft": 5, "Hard": 5}]},
                 config={"Env": ["A=1"], "WorkingDir": "/w", "Hostname": "h"})
    process = oci_spec.exec_process(
        container_spec=spec, container_config={"Env": ["A=1"], "WorkingDir": "/w"},
        host_config={"GroupAdd": ["staff"]}, rootfs=rootfs,
        exec_config={"Cmd": ["ps"], "Env": ["B=2", "A=3"], "User": "www", "Tty": True})
    assert process["args"] == ["ps"] and process["terminal"] is True
    assert process["env"] == [f"PATH={oci_spec.DEFAULT_PATH_ENV}", "HOSTNAME=h", "TERM=xterm",
                              "A=3", "B=2"]
    assert process["cwd"] == "/w"
    assert process["user"] == {"uid": 33, "gid": 33, "additionalGids": [33, 50, 50]}
    assert process["rlimits"] == spec["process"]["rlimits"]
    privileged = oci_spec.exec_process(container_spec=spec, container_config={},
                                       host_config={}, rootfs=rootfs,
                                       exec_config={"Cmd": ["id"], "Privileged": True})
    assert privileged["capabilities"]["effective"] == ALL
    assert privileged["user"] == spec["process"]["user"]


def test_write_config(rootfs, tmp_path):
    spec = build(rootfs)
    path = oci_spec.write_config(str(tmp_path / "bundle"), spec)
    with open(path) as handle:
        assert json.load(handle) == spec
    assert os.listdir(tmp_path / "bundle") == ["config.json"]
