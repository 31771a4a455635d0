"""Docker's default seccomp profile: which calls it allows, for which containers."""

import errno

import pytest

from kobako.engine import seccomp_default as sd
from kobako.linux import seccomp

DOCKER_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]
NEW_KERNEL = (6, 1)


def profile(caps=DOCKER_CAPS, arch="amd64", kernel=NEW_KERNEL):
    return sd.default_profile(caps, arch=arch, kernel=kernel)


def unconditional(p):
    """Names allowed with no argument condition."""
    return {n for rule in p["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW"
            and not rule.get("args") for n in rule["names"]}


def rules_for(p, name):
    return [rule for rule in p["syscalls"] if name in rule["names"]]


def test_shape():
    p = profile()
    assert p["defaultAction"] == "SCMP_ACT_ERRNO"
    assert p["defaultErrnoRet"] == errno.EPERM
    assert p["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    seccomp.validate(p)


def test_size_of_the_allowlist():
    # moby's default.json allows 361 names with no condition at all.
    assert len(sd.ALWAYS) == 361


@pytest.mark.parametrize("name", [
    "read", "write", "openat", "execve", "fork", "mmap", "futex",
    "epoll_pwait", "io_submit", "setuid", "chown", "mknod",
    "capset", "prctl", "seccomp", "rseq", "statx", "close_range", "pidfd_open", "getrandom",
    "arch_prctl", "modify_ldt", "chroot", "ptrace", "process_vm_readv",
])
def test_allowed_for_a_default_container(name):
    assert name in unconditional(profile())


@pytest.mark.parametrize("name", [
    "mount", "umount2", "unshare", "setns", "keyctl", "add_key", "request_key", "bpf",
    "perf_event_open", "kexec_load", "kexec_file_load", "init_module", "finit_module",
    "delete_module", "reboot", "swapon", "swapoff", "acct", "settimeofday", "clock_settime",
    "stime", "syslog", "open_by_handle_at", "kcmp", "pidfd_getfd", "iopl", "ioperm",
    "userfaultfd", "io_uring_setup", "pivot_root", "quotactl", "sethostname", "vhangup",
    "lookup_dcookie", "fsopen", "move_mount", "open_tree", "mbind", "set_mempolicy",
    "nfsservctl", "uselib", "ustat", "sysfs", "_sysctl", "create_module", "vm86",
])
def test_denied_for_a_default_container(name):
    assert name not in unconditional(profile())
    assert all(rule["action"] != "SCMP_ACT_ALLOW" or rule.get("args")
               for rule in rules_for(profile(), name))


def test_clone_without_sys_admin_masks_namespace_flags():
    [clone] = rules_for(profile(), "clone")
    assert clone["args"] == [{"index": 0, "value": 0x7E020000, "valueTwo": 0,
                              "op": "SCMP_CMP_MASKED_EQ"}]
    assert clone["action"] == "SCMP_ACT_ALLOW"
    [clone3] = rules_for(profile(), "clone3")
    assert clone3 == {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS}


def test_sys_admin_unlocks_namespaces_and_mounts():
    p = profile(DOCKER_CAPS + ["CAP_SYS_ADMIN"])
    allowed = unconditional(p)
    for name in ("mount", "umount2", "unshare", "setns", "clone", "clone3", "sethostname",
                 "bpf", "perf_event_open", "fsopen", "syslog", "quotactl"):
        assert name in allowed, name
    # the masked clone rule and the clone3 ENOSYS rule are gone
    assert all(not r.get("args") for r in rules_for(p, "clone"))
    assert all(r["action"] == "SCMP_ACT_ALLOW" for r in rules_for(p, "clone3"))
    # still never allowed
    for name in ("keyctl", "add_key", "kexec_load", "init_module", "reboot"):
        assert name not in allowed, name


@pytest.mark.parametrize("cap, names", [
    ("CAP_SYS_PTRACE", ["kcmp", "pidfd_getfd", "process_madvise", "ptrace"]),
    ("CAP_SYS_MODULE", ["init_module", "finit_module", "delete_module"]),
    ("CAP_SYS_TIME", ["settimeofday", "stime", "clock_settime", "clock_settime64"]),
    ("CAP_SYSLOG", ["syslog"]),
    ("CAP_SYS_BOOT", ["reboot"]),
    ("CAP_SYS_NICE", ["mbind", "get_mempolicy", "set_mempolicy", "set_mempolicy_home_node"]),
    ("CAP_SYS_RAWIO", ["iopl", "ioperm"]),
    ("CAP_SYS_PACCT", ["acct"]),
    ("CAP_BPF", ["bpf"]),
    ("CAP_PERFMON", ["perf_event_open"]),
    ("CAP_DAC_READ_SEARCH", ["open_by_handle_at"]),
    ("CAP_SYS_TTY_CONFIG", ["vhangup"]),
])
def test_capability_unlocks(cap, names):
    before = unconditional(profile())
    after = unconditional(profile(DOCKER_CAPS + [cap]))
    for name in names:
        if name != "ptrace":
            assert name not in before, name
        assert name in after, name
    # nothing else changes (clone/clone3 only move with CAP_SYS_ADMIN)
    assert after - before <= set(names)


def test_chroot_needs_sys_chroot():
    caps = [c for c in DOCKER_CAPS if c != "CAP_SYS_CHROOT"]
    assert "chroot" not in unconditional(profile(caps))
    assert "chroot" in unconditional(profile())


def test_ptrace_needs_kernel_4_8_without_the_capability():
    assert "ptrace" not in unconditional(profile(kernel=(4, 4)))
    assert "ptrace" in unconditional(profile(kernel=(4, 8)))
    assert "ptrace" in unconditional(profile(DOCKER_CAPS + ["CAP_SYS_PTRACE"], kernel=(4, 4)))


def test_socket_refuses_af_alg_and_af_vsock():
    rules = rules_for(profile(), "socket")
    conds = sorted((r["args"][0]["op"], r["args"][0]["value"]) for r in rules)
    assert conds == [("SCMP_CMP_EQ", 39), ("SCMP_CMP_GT", 40), ("SCMP_CMP_LT", 38)]

    def allowed(domain):
        ops = {"SCMP_CMP_EQ": domain.__eq__, "SCMP_CMP_GT": domain.__gt__,
               "SCMP_CMP_LT": domain.__lt__}
        return any(ops[op](value) for op, value in conds)

    # unix, inet, inet6, netlink, packet, nfc, xdp
    assert all(allowed(d) for d in (1, 2, 10, 16, 17, 39, 44))
    assert not allowed(38) and not allowed(40)  # AF_ALG, AF_VSOCK


def test_personality_values():
    values = sorted(r["args"][0]["value"] for r in rules_for(profile(), "personality"))
    assert values == [0, 8, 0x20000, 0x20008, 0xFFFFFFFF]


def test_arch_specific_rules():
    assert "arch_prctl" in unconditional(profile(arch="amd64"))
    assert "arch_prctl" not in unconditional(profile(arch="arm64"))
    assert "set_tls" in unconditional(profile(arch="arm64"))
    assert profile(arch="arm64")["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert "swapcontext" in unconditional(profile(arch="ppc64le"))
    assert "architectures" not in profile(arch="ppc64le")  # not in moby's archMap
    s390 = profile(arch="s390x")
    [clone] = rules_for(s390, "clone")
    assert clone["args"][0]["index"] == 1  # s390 swaps clone's first two arguments
    assert profile(arch="x86_64") == profile(arch="amd64")


def test_kernel_version_parsing():
    assert sd.kernel_version("6.18.44-fc-v669") == (6, 18)
    assert sd.kernel_version("4.8.0-1-amd64") == (4, 8)
    assert sd.kernel_version("5.10") == (5, 10)
    assert sd.kernel_version("weird") == (0, 0)


def test_libseccomp_accepts_the_profile():
    # Every arch and rule goes through libseccomp (without loading it).
    import tempfile

    filt = seccomp.build(profile(DOCKER_CAPS, arch=sd.host_arch(),
                                 kernel=sd.kernel_version()))
    with tempfile.TemporaryFile("w+") as f:
        filt.export_pfc(f)
        f.seek(0)
        text = f.read()
    assert 'syscall "mkdir"' in text
    assert 'syscall "keyctl"' not in text
