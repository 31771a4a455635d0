"""Capabilities against the real kernel: each test changes caps in a forked child."""

import os
import subprocess

import pytest
from forked import in_child

from kobako.linux import capabilities as caps
from kobako.linux import syscalls

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

KEEP = ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"]


def test_bounding_drop_is_visible_in_proc_status():
    def child():
        caps.apply_bounding(KEEP)
        return caps.current()

    got = in_child(child)
    assert sorted(got["bounding"]) == sorted(KEEP)
    # The bounding set alone does not change the effective set of a running process.
    assert "CAP_SYS_ADMIN" in got["effective"]


def test_apply_sets_all_five_sets():
    def child():
        caps.apply_bounding(KEEP)
        caps.apply({
            "effective": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID"],
            "inheritable": ["CAP_KILL"],
            "ambient": ["CAP_KILL"],
        })
        return caps.current()

    got = in_child(child)
    assert got == {
        "bounding": sorted(KEEP, key=caps.cap_number),
        "effective": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "permitted": ["CAP_KILL", "CAP_SETUID", "CAP_NET_BIND_SERVICE"],
        "inheritable": ["CAP_KILL"],
        "ambient": ["CAP_KILL"],
    }


def test_runtime_sequence_keeps_caps_across_uid_switch_and_exec():
    """bounding -> keepcaps -> setresuid(1000) -> apply -> exec, as runc's init does."""

    def child():
        sys = syscalls.real()
        caps.apply_bounding(KEEP)
        sys.prctl(syscalls.PR_SET_KEEPCAPS, 1)
        os.setgroups([])
        os.setresgid(1000, 1000, 1000)
        os.setresuid(1000, 1000, 1000)
        caps.apply({
            "bounding": KEEP,
            "effective": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "inheritable": ["CAP_NET_BIND_SERVICE"],
            "ambient": ["CAP_NET_BIND_SERVICE"],
        })
        status = subprocess.run(
            ["cat", "/proc/self/status"], capture_output=True, text=True, check=True
        ).stdout
        return {"self": caps.current(), "exec": caps.parse_status(status),
                "uid": os.getuid()}

    got = in_child(child)
    assert got["uid"] == 1000
    assert got["self"]["effective"] == ["CAP_KILL", "CAP_NET_BIND_SERVICE"]
    # A non-root exec keeps only ambient caps: they become permitted and effective.
    assert got["exec"]["effective"] == ["CAP_NET_BIND_SERVICE"]
    assert got["exec"]["permitted"] == ["CAP_NET_BIND_SERVICE"]
    assert got["exec"]["ambient"] == ["CAP_NET_BIND_SERVICE"]
    assert sorted(got["exec"]["bounding"]) == sorted(KEEP)


def test_capset_beyond_permitted_fails():
    def child():
        caps.apply({"effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]})
        try:
            caps.apply({"effective": ["CAP_CHOWN"], "permitted": ["CAP_CHOWN"]})
        except syscalls.SyscallError as e:
            return [e.errno, str(e)]
        return None

    got = in_child(child)
    assert got is not None and got[0] == 1  # EPERM
    assert got[1].startswith("capset(")
