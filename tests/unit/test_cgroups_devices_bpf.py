"""The v2 device filter program: run it in a small interpreter of the opcodes it uses."""

import pytest

from kobako.linux.cgroups import CgroupError, devices_bpf, ebpf

BLOCK, CHAR = devices_bpf.DEV_BLOCK, devices_bpf.DEV_CHAR
M, R, W = devices_bpf.ACC_MKNOD, devices_bpf.ACC_READ, devices_bpf.ACC_WRITE


def run(code: bytes, dev_type: int, access: int, major: int, minor: int) -> int:
    ctx = [(access << 16) | dev_type, major, minor]
    regs = [0] * 11
    insns = ebpf.disassemble(code)
    pc = 0
    for _ in range(10_000):
        op, dst, src, off, imm = insns[pc]
        pc += 1
        if op == 0x61:
            assert src == 1 and off % 4 == 0, "only context loads are expected"
            regs[dst] = ctx[off // 4]
        elif op == 0x54:
            regs[dst] = regs[dst] & imm & 0xFFFFFFFF
        elif op == 0x74:
            regs[dst] = (regs[dst] & 0xFFFFFFFF) >> imm
        elif op == 0xB7:
            regs[dst] = imm
        elif op == 0xBC:
            regs[dst] = regs[src] & 0xFFFFFFFF
        elif op == 0x55:
            pc += off if regs[dst] != imm else 0
        elif op == 0x5D:
            pc += off if regs[dst] != regs[src] else 0
        elif op == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {op:#x}")
    raise AssertionError("program did not exit")


DOCKER_DEFAULT = [
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},   # null
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},   # zero
    {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},   # ptmx
    {"allow": True, "type": "c", "major": 136, "minor": -1, "access": "rwm"},  # pts
    {"allow": False, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
]


@pytest.mark.parametrize("dev_type, access, major, minor, allowed", [
    (CHAR, R | W, 1, 3, 1),
    (CHAR, M, 1, 5, 1),
    (CHAR, R, 136, 7, 1),
    (BLOCK, R, 136, 7, 0),   # type matters
    (CHAR, R, 1, 9, 0),      # urandom not listed: default deny
    (CHAR, R, 10, 229, 0),   # explicit deny
    (BLOCK, R | W, 8, 0, 0),
])
def test_docker_default_rules(dev_type, access, major, minor, allowed):
    assert run(devices_bpf.build(DOCKER_DEFAULT), dev_type, access, major, minor) == allowed


def test_access_subset_and_last_rule_wins():
    code = devices_bpf.build([
        {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"},
        {"allow": True, "type": "b", "major": 8, "minor": -1, "access": "rwm"},
        {"allow": False, "type": "b", "major": 8, "minor": 1, "access": "w"},
    ])
    assert run(code, CHAR, R, 1, 5) == 1
    assert run(code, CHAR, R | W, 1, 5) == 0  # write not granted
    assert run(code, BLOCK, R, 8, 1) == 1
    assert run(code, BLOCK, W, 8, 1) == 0     # the later deny decides
    assert run(code, BLOCK, W, 8, 2) == 1


def test_allow_all_after_deny_allows_everything_and_stops_early():
    code = devices_bpf.build([{"allow": False, "access": "rwm"},
                              {"allow": True, "type": "a", "access": "rwm"}])
    assert run(code, BLOCK, R | W | M, 8, 0) == 1
    assert len(ebpf.disassemble(code)) == 8  # prologue + one rule; nothing unreachable


def test_invalid_rule_is_rejected():
    with pytest.raises(CgroupError):
        devices_bpf.build([{"allow": True, "type": "z"}])
