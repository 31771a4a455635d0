import copy
import json
import os
import shutil
import subprocess

import pytest

from kobako.runtime import spec
from kobako.runtime.spec import SpecError, default_spec, validate


def test_default_spec_content():
    s = default_spec()
    assert s["ociVersion"] == "1.0.2-dev"
    assert s["hostname"] == "kobako"
    p = s["process"]
    assert p["terminal"] is True and p["args"] == ["sh"] and p["cwd"] == "/"
    assert p["user"] == {"uid": 0, "gid": 0}
    assert p["env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                        "TERM=xterm"]
    three = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    assert p["capabilities"] == {"bounding": three, "effective": three, "permitted": three}
    assert p["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    assert p["noNewPrivileges"] is True
    assert s["root"] == {"path": "rootfs", "readonly": True}
    assert [m["destination"] for m in s["mounts"]] == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]
    types = [ns["type"] for ns in s["linux"]["namespaces"]]
    assert types[:5] == ["pid", "network", "ipc", "uts", "mount"]
    assert s["linux"]["resources"] == {"devices": [{"allow": False, "access": "rwm"}]}
    assert "/proc/kcore" in s["linux"]["maskedPaths"]
    assert s["linux"]["readonlyPaths"] == [
        "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
    validate(s)


def test_default_spec_is_a_fresh_copy():
    a = default_spec()
    a["process"]["args"].append("x")
    a["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
    b = default_spec()
    assert b["process"]["args"] == ["sh"]
    assert "CAP_SYS_ADMIN" not in b["process"]["capabilities"]["effective"]


def test_rootless_adjustments():
    s = default_spec(rootless=True)
    types = [ns["type"] for ns in s["linux"]["namespaces"]]
    assert "network" not in types and types[-1] == "user"
    assert s["linux"]["uidMappings"] == [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    assert s["linux"]["gidMappings"] == [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    assert "resources" not in s["linux"]
    sys_mount = next(m for m in s["mounts"] if m["destination"] == "/sys")
    assert sys_mount == {"destination": "/sys", "type": "none", "source": "/sys",
                         "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
    pts = next(m for m in s["mounts"] if m["destination"] == "/dev/pts")
    assert "gid=5" not in pts["options"]
    validate(s)


def _runc_spec(tmp_path, rootless):
    if shutil.which("runc") is None:
        pytest.skip("runc not installed")
    args = ["runc", "spec"] + (["--rootless"] if rootless else [])
    subprocess.run(args, cwd=tmp_path, check=True)
    return json.loads((tmp_path / "config.json").read_text())


def _normalize_for_runc(ours, runc):
    """The documented differences: hostname, and newer runc's changes."""
    ours = copy.deepcopy(ours)
    ours["hostname"] = "runc"
    ours["linux"]["maskedPaths"].remove("/sys/devices/virtual/tpm")
    runc = copy.deepcopy(runc)
    runc["process"]["capabilities"].pop("ambient", None)  # dropped by runc >= 1.2
    runc["linux"]["maskedPaths"] = [p for p in runc["linux"]["maskedPaths"]
                                    if p != "/sys/devices/virtual/tpm"]
    return ours, runc


@pytest.mark.parametrize("rootless", [False, True])
def test_matches_runc_spec_on_this_machine(tmp_path, rootless):
    runc = _runc_spec(tmp_path, rootless)
    ours, runc = _normalize_for_runc(default_spec(rootless=rootless), runc)
    assert ours == runc


def base():
    return default_spec()


def expect(config, message, **kw):
    with pytest.raises(SpecError) as info:
        validate(config, **kw)
    text = str(info.value)
    assert message in text, text
    assert "\n" not in text
    return text


def edit(fn):
    config = base()
    fn(config)
    return config


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c.pop("ociVersion"), "ociVersion: missing"),
    (lambda c: c.update(ociVersion=1.0), "ociVersion: must be a string"),
    (lambda c: c.update(ociVersion="latest"), "ociVersion: must be a semantic version"),
    (lambda c: c.update(ociVersion="2.0.0"), "ociVersion: unsupported major version"),
    (lambda c: c.pop("root"), "root: missing"),
    (lambda c: c["root"].pop("path"), "root.path: missing"),
    (lambda c: c["root"].update(path=""), "root.path: must not be empty"),
    (lambda c: c["root"].update(readonly="yes"), "root.readonly: must be true or false"),
    (lambda c: c.pop("process"), "process: missing"),
    (lambda c: c["process"].update(args=[]), "process.args: must be a non-empty list of strings"),
    (lambda c: c["process"].update(args="sh"), "process.args: must be a non-empty list"),
    (lambda c: c["process"].update(args=["sh", 1]), "process.args: must be a non-empty list"),
    (lambda c: c["process"].update(env=["PATH"]), 'process.env[0]: must be "KEY=value"'),
    (lambda c: c["process"].update(env=["=x"]), "process.env[0]"),
    (lambda c: c["process"].update(env="A=b"), "process.env: must be a list"),
    (lambda c: c["process"].update(cwd="tmp"), "process.cwd: must be an absolute path"),
    (lambda c: c["process"].pop("cwd"), "process.cwd: missing"),
    (lambda c: c["process"].update(terminal=1), "process.terminal: must be true or false"),
    (lambda c: c["process"]["user"].update(uid=-1), "process.user.uid: must be an integer"),
    (lambda c: c["process"]["user"].update(gid="0"), "process.user.gid: must be an integer"),
    (lambda c: c["process"]["user"].update(additionalGids=["x"]),
     "process.user.additionalGids[0]"),
    (lambda c: c["process"].update(oomScoreAdj=1001), "process.oomScoreAdj"),
    (lambda c: c["process"]["capabilities"].update(effective=["CAP_FOO"]),
     'process.capabilities.effective: unknown capability "CAP_FOO"'),
    (lambda c: c["process"]["capabilities"].update(ambiant=[]),
     "process.capabilities.ambiant: unknown capability set"),
    (lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_NOFILE", "hard": 10, "soft": 20}]),
     "process.rlimits[0]: RLIMIT_NOFILE soft limit 20 is above its hard limit 10"),
    (lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_FOO", "hard": 1, "soft": 1}]),
     "process.rlimits[0].type: unknown rlimit 'RLIMIT_FOO'"),
    (lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_NOFILE", "hard": "1", "soft": 1}]),
     "process.rlimits[0].hard: must be an integer"),
    (lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_CORE", "hard": 1, "soft": 1}] * 2),
     "process.rlimits[1].type: duplicate rlimit RLIMIT_CORE"),
    (lambda c: c["mounts"].append({"type": "tmpfs"}), "mounts[7].destination: missing"),
    (lambda c: c["mounts"].append({"destination": "tmp"}),
     "mounts[7].destination: must be an absolute path"),
    (lambda c: c["mounts"][0].update(options="ro"), "mounts[0].options: must be a list"),
    (lambda c: c["linux"]["namespaces"].append({"type": "net"}),
     "linux.namespaces[5].type: unknown namespace type 'net'"),
    (lambda c: c["linux"]["namespaces"].append({"type": "pid"}),
     "linux.namespaces[5].type: duplicate namespace type 'pid'"),
    (lambda c: c["linux"]["namespaces"].append({"type": "time", "path": "ns/time"}),
     "linux.namespaces[5].path: must be an absolute path"),
    (lambda c: c["linux"].update(uidMappings=[{"containerID": 0, "hostID": 1000, "size": 1}],
                                 gidMappings=[{"containerID": 0, "hostID": 1000, "size": 1}]),
     "linux.uidMappings: id mappings need a user namespace"),
    (lambda c: c["linux"]["namespaces"].append({"type": "user"}),
     "linux.uidMappings: a new user namespace needs at least one uid mapping"),
    (lambda c: c["linux"]["namespaces"].remove({"type": "uts"}),
     "hostname: setting the hostname needs a private UTS namespace"),
    (lambda c: c["linux"]["maskedPaths"].append("proc/x"), "linux.maskedPaths[11]"),
    (lambda c: c["linux"].update(sysctl={"net.ipv4.ip_forward": 1}),
     "linux.sysctl['net.ipv4.ip_forward']: must be a string"),
    (lambda c: c["linux"].update(devices=[{"path": "/dev/fuse", "type": "x"}]),
     "linux.devices[0].type: must be one of c, b, u, p"),
    (lambda c: c["linux"].update(devices=[{"path": "/dev/fuse", "type": "c"}]),
     "linux.devices[0].major: missing"),
    (lambda c: c["linux"]["resources"]["devices"][0].update(access="rwx"),
     "linux.resources.devices[0].access"),
    (lambda c: c["linux"]["resources"].update(memory={"limit": "1g"}),
     "linux.resources.memory.limit: must be bytes or -1"),
    (lambda c: c["linux"].update(seccomp={"defaultAction": "SCMP_ACT_WHATEVER"}),
     "linux.seccomp.defaultAction: unknown action 'SCMP_ACT_WHATEVER'"),
    (lambda c: c.update(hooks={"prestrat": []}), "hooks.prestrat: unknown hook"),
    (lambda c: c.update(hooks={"prestart": [{"path": "hook"}]}),
     "hooks.prestart[0].path: must be an absolute path"),
    (lambda c: c.update(hooks={"poststop": [{"path": "/bin/true", "timeout": 0}]}),
     "hooks.poststop[0].timeout"),
    (lambda c: c.update(annotations={"a": 1}), "annotations['a']: must be a string"),
    (lambda c: c.update(linux=[]), "linux: must be an object"),
])
def test_validate_rejects(mutate, message):
    expect(edit(mutate), message)


def with_userns(uid_maps, gid_maps=None):
    def mutate(c):
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = uid_maps
        c["linux"]["gidMappings"] = gid_maps or [{"containerID": 0, "hostID": 0, "size": 1}]
    return edit(mutate)


def test_mappings():
    validate(with_userns([{"containerID": 0, "hostID": 100000, "size": 65536}]))
    expect(with_userns([{"containerID": 0, "hostID": 1000, "size": 0}]),
           "linux.uidMappings[0].size: must be greater than 0")
    expect(with_userns([{"containerID": 0, "hostID": 1000, "size": 10},
                        {"containerID": 5, "hostID": 5000, "size": 10}]),
           "linux.uidMappings[1]: containerID range 5-14 overlaps 0-9")
    expect(with_userns([{"containerID": 0, "hostID": 1000, "size": 10},
                        {"containerID": 10, "hostID": 1009, "size": 10}]),
           "linux.uidMappings[1]: hostID range 1009-1018 overlaps 1000-1009")
    expect(with_userns([{"containerID": 0, "hostID": 4294967295, "size": 2}]),
           "goes past 4294967295")
    expect(with_userns([{"containerID": 0, "size": 1}]), "linux.uidMappings[0].hostID: missing")
    # a user namespace joined by path needs no mappings
    config = base()
    config["linux"]["namespaces"].append({"type": "user", "path": "/proc/1/ns/user"})
    validate(config)


def test_process_optional_when_not_needed():
    config = base()
    del config["process"]
    validate(config, need_process=False)
    expect(config, "process: missing")


def test_not_an_object():
    expect([], "config: must be a JSON object")


def test_accepts_time_and_cgroup_namespaces_and_seccomp():
    from kobako.engine.seccomp_default import default_profile

    config = base()
    config["linux"]["namespaces"] += [{"type": "time"}, {"type": "cgroup"}]
    config["linux"]["seccomp"] = default_profile(config["process"]["capabilities"]["bounding"])
    config["process"]["rlimits"].append({"type": "RLIMIT_CORE", "hard": 2**64 - 1, "soft": 0})
    validate(config)


def test_namespace_list_is_the_spec_list():
    assert set(spec.NAMESPACE_TYPES) == {
        "pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"}


# --- runtime features (kobako.runtime.features) ------------------------------


def test_features_shape():
    from kobako.linux import capabilities
    from kobako.runtime.features import features

    f = features()
    assert f["ociVersionMin"] == "1.0.0" and f["ociVersionMax"] == "1.2.0"
    assert f["hooks"] == ["prestart", "createRuntime", "createContainer", "startContainer",
                          "poststart", "poststop"]
    linux = f["linux"]
    assert "time" in linux["namespaces"] and "network" in linux["namespaces"]
    assert linux["capabilities"][0] == "CAP_CHOWN"
    assert linux["capabilities"] == sorted(capabilities.ALL_CAPS, key=capabilities.cap_number)
    assert linux["cgroup"] == {"v1": True, "v2": True, "systemd": False, "systemdUser": False,
                               "rdma": False}
    sc = linux["seccomp"]
    assert sc["enabled"] is True
    assert "SCMP_ACT_NOTIFY" not in sc["actions"]  # not supported by kobako
    assert "SCMP_ACT_ERRNO" in sc["actions"] and "SCMP_CMP_MASKED_EQ" in sc["operators"]
    assert set(sc["supportedFlags"]) <= set(sc["knownFlags"])
    assert linux["apparmor"] == {"enabled": False}
    assert linux["mountExtensions"] == {"idmap": {"enabled": False}}
    assert f["annotations"]["io.github.kobako.version"]
    json.dumps(f)


def test_features_agree_with_runc_on_this_machine():
    if shutil.which("runc") is None:
        pytest.skip("runc not installed")
    from kobako.runtime.features import features

    runc = json.loads(subprocess.run(["runc", "features"], capture_output=True, text=True,
                                     check=True).stdout)
    ours = features()
    assert ours["hooks"] == runc["hooks"]
    assert ours["mountOptions"] == runc["mountOptions"]
    assert ours["linux"]["capabilities"] == runc["linux"]["capabilities"]
    assert set(runc["linux"]["namespaces"]) <= set(ours["linux"]["namespaces"])
    assert ours["linux"]["seccomp"]["operators"] == runc["linux"]["seccomp"]["operators"]
    assert set(runc["linux"]["seccomp"]["archs"]) <= set(ours["linux"]["seccomp"]["archs"])
    assert (set(runc["linux"]["seccomp"]["actions"]) - set(ours["linux"]["seccomp"]["actions"])
            == {"SCMP_ACT_NOTIFY"})
    runc_lib = runc["annotations"].get("io.github.seccomp.libseccomp.version")
    if runc_lib:
        assert ours["annotations"]["io.github.seccomp.libseccomp.version"] == runc_lib
