import errno

import pytest

from kobako.linux import capabilities as caps
from kobako.linux import syscalls
from kobako.linux.syscalls import RecordingSyscalls


def test_known_numbers_match_the_kernel_header():
    assert caps.cap_number("CAP_CHOWN") == 0
    assert caps.cap_number("CAP_NET_BIND_SERVICE") == 10
    assert caps.cap_number("CAP_SYS_ADMIN") == 21
    assert caps.cap_number("CAP_AUDIT_WRITE") == 29
    assert caps.cap_number("CAP_CHECKPOINT_RESTORE") == 40
    assert len(caps.KNOWN_CAPS) == 41


def test_all_caps_stops_at_the_hosts_last_cap():
    top = caps.last_cap()
    assert max(caps.ALL_CAPS.values()) == min(top, 40)
    assert caps.ALL_CAPS["CAP_KILL"] == 5


@pytest.mark.parametrize("name", ["CAP_FOO", "chown", "cap_chown", "", None, 3])
def test_unknown_names_are_an_error(name):
    with pytest.raises(caps.CapabilityError) as info:
        caps.cap_number(name)
    assert "unknown capability" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_unknown_name_message_quotes_the_name():
    with pytest.raises(caps.CapabilityError, match=r'^unknown capability "CAP_FOO"$'):
        caps.cap_number("CAP_FOO")


def test_masks_round_trip():
    mask = caps.to_mask(["CAP_KILL", "CAP_CHOWN", "CAP_SYS_ADMIN"])
    assert mask == (1 << 0) | (1 << 5) | (1 << 21)
    assert caps.from_mask(mask) == ["CAP_CHOWN", "CAP_KILL", "CAP_SYS_ADMIN"]


def test_mask_skips_caps_the_kernel_lacks(monkeypatch):
    monkeypatch.setattr(caps, "last_cap", lambda: 37)
    assert caps.to_mask(["CAP_BPF", "CAP_KILL"]) == 1 << 5


def test_apply_bounding_drops_everything_not_kept(monkeypatch):
    monkeypatch.setattr(caps, "last_cap", lambda: 40)
    fake = RecordingSyscalls()
    caps.apply_bounding(["CAP_KILL", "CAP_AUDIT_WRITE"], sys=fake)
    dropped = [args["arg2"] for name, args in fake.calls
               if name == "prctl" and args["option"] == syscalls.PR_CAPBSET_DROP]
    assert dropped == [n for n in range(41) if n not in (5, 29)]


def test_apply_bounding_rejects_unknown_names():
    with pytest.raises(caps.CapabilityError):
        caps.apply_bounding(["CAP_NOPE"], sys=RecordingSyscalls())


def test_apply_bounding_propagates_real_failures():
    fake = RecordingSyscalls(fail={"prctl": errno.EPERM})
    with pytest.raises(syscalls.SyscallError):
        caps.apply_bounding([], sys=fake)


def test_apply_bounding_ignores_einval():
    fake = RecordingSyscalls(fail={"prctl": errno.EINVAL})
    caps.apply_bounding([], sys=fake)
    assert len(fake.calls) == caps.last_cap() + 1


def test_apply_sets_three_sets_then_ambient():
    fake = RecordingSyscalls()
    caps.apply(
        {
            "bounding": ["CAP_KILL", "CAP_CHOWN", "CAP_NET_RAW"],
            "effective": ["CAP_KILL", "CAP_CHOWN"],
            "permitted": ["CAP_KILL", "CAP_CHOWN", "CAP_NET_RAW"],
            "inheritable": ["CAP_KILL"],
            "ambient": ["CAP_KILL"],
        },
        sys=fake,
    )
    assert fake.calls == [
        ("capset", {"effective": (1 << 5) | 1, "permitted": (1 << 5) | 1 | (1 << 13),
                    "inheritable": 1 << 5}),
        ("prctl", {"option": syscalls.PR_CAP_AMBIENT,
                   "arg2": syscalls.PR_CAP_AMBIENT_CLEAR_ALL, "arg3": 0}),
        ("prctl", {"option": syscalls.PR_CAP_AMBIENT,
                   "arg2": syscalls.PR_CAP_AMBIENT_RAISE, "arg3": 5}),
    ]


def test_apply_missing_keys_mean_empty_sets():
    fake = RecordingSyscalls()
    caps.apply({}, sys=fake)
    assert fake.calls[0] == ("capset", {"effective": 0, "permitted": 0, "inheritable": 0})
    assert [c[0] for c in fake.calls] == ["capset", "prctl"]


def test_apply_rejects_unknown_set_and_name():
    with pytest.raises(caps.CapabilityError, match="capability set"):
        caps.apply({"efective": ["CAP_KILL"]}, sys=RecordingSyscalls())
    with pytest.raises(caps.CapabilityError, match="CAP_KIL"):
        caps.apply({"effective": ["CAP_KIL"]}, sys=RecordingSyscalls())


def test_apply_skips_ambient_the_kernel_refuses():
    class Refusing(RecordingSyscalls):
        def prctl(self, option, arg2=0, arg3=0, arg4=0, arg5=0):
            super().prctl(option, arg2, arg3)
            if arg2 == syscalls.PR_CAP_AMBIENT_RAISE:
                raise syscalls.SyscallError("prctl", {"arg3": arg3}, errno.EINVAL)
            return 0

    fake = Refusing()
    caps.apply({"ambient": ["CAP_KILL"]}, sys=fake)
    assert len(fake.calls) == 3


def test_parse_status():
    text = (
        "Name:\tsh\nCapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\n"
        "CapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\nCapAmb:\t0000000000000020\n"
    )
    parsed = caps.parse_status(text)
    assert parsed["inheritable"] == []
    assert parsed["ambient"] == ["CAP_KILL"]
    # Docker's 14 default capabilities are 0xa80425fb.
    assert sorted(parsed["effective"]) == sorted([
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
        "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
    ])
    assert set(parsed) == set(caps.SETS)


def test_current_reads_this_process():
    now = caps.current()
    assert set(now) == set(caps.SETS)
    assert all(isinstance(v, list) for v in now.values())
