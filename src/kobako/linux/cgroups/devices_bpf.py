"""cgroup v2 device rules: an eBPF BPF_PROG_TYPE_CGROUP_DEVICE program, as runc builds it.

The kernel calls the program for each device access with
struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }, where
access_type = (access bits << 16) | device type. The program returns 1 to allow.
Rules are OCI linux.resources.devices entries; the last matching rule wins,
and nothing matching means deny. So blocks are emitted last rule first, each
jumping to the next block when it does not match.
"""

from __future__ import annotations

import os

from . import convert, ebpf
from .ebpf import R0, R1, R2, R3, R4, R5
from .errors import CgroupError

DEV_BLOCK, DEV_CHAR = 1, 2
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4
_ACCESS_BITS = {"m": ACC_MKNOD, "r": ACC_READ, "w": ACC_WRITE}
_ALL_ACCESS = ACC_MKNOD | ACC_READ | ACC_WRITE


def build(rules: list[dict]) -> bytes:
    program = ebpf.Program()
    # r2 = device type, r3 = requested access, r4 = major, r5 = minor
    program.load_u32(R2, R1, 0)
    program.and_imm(R2, 0xFFFF)
    program.load_u32(R3, R1, 0)
    program.rsh_imm(R3, 16)
    program.load_u32(R4, R1, 4)
    program.load_u32(R5, R1, 8)
    for index, rule in enumerate(reversed(rules)):
        converted = convert.device_rule(rule)  # validates type/access
        if converted is None:
            continue  # a fifo: not the device cgroup's business
        allow, text = converted
        dev_type, numbers, access = text.split()
        major, minor = numbers.split(":")
        next_block = f"rule{index}"
        if dev_type != "a":
            program.jne_imm(R2, DEV_BLOCK if dev_type == "b" else DEV_CHAR, next_block)
        mask = sum(_ACCESS_BITS[char] for char in set(access))
        if mask != _ALL_ACCESS:
            # every requested access bit must be in the rule's mask
            program.mov_reg(R1, R3)
            program.and_imm(R1, mask)
            program.jne_reg(R1, R3, next_block)
        if major != "*":
            program.jne_imm(R4, int(major), next_block)
        if minor != "*":
            program.jne_imm(R5, int(minor), next_block)
        program.mov_imm(R0, 1 if allow else 0)
        program.exit()
        if (dev_type, major, minor, mask) == ("a", "*", "*", _ALL_ACCESS):
            # matches every access: earlier rules can never decide (and the verifier
            # refuses unreachable code)
            return program.assemble()
        program.label(next_block)
    program.mov_imm(R0, 0)  # no rule matched: deny
    program.exit()
    return program.assemble()


def apply(cgroup_dir: str, rules: list[dict]) -> None:
    """Attach a filter for `rules` to the cgroup, replacing the one attached before."""
    code = build(rules)
    try:
        cgroup_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise CgroupError(f"open {cgroup_dir}: {err.strerror}", cgroup_dir, err.errno) from None
    try:
        old = ebpf.attached_ids(cgroup_fd)
        prog_fd = ebpf.load_device_program(code)
        try:
            # attach first, detach the old ones after: no moment without a filter
            ebpf.attach(cgroup_fd, prog_fd)
            new_id = ebpf.prog_id(prog_fd)
        finally:
            os.close(prog_fd)  # the cgroup holds its own reference
        for program_id in old:
            if program_id != new_id:
                ebpf.detach_id(cgroup_fd, program_id)
    except CgroupError as err:
        raise CgroupError(f"device rules for {cgroup_dir}: {err}", cgroup_dir, err.errno) from None
    finally:
        os.close(cgroup_fd)
