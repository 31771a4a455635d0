"""A tiny eBPF instruction emitter and the few bpf(2) commands cgroup device filters need.

Only what a BPF_PROG_TYPE_CGROUP_DEVICE program uses: 32-bit loads from the
context, AND/RSH/MOV, conditional jumps to labels, exit. bpf(2) goes through
ctypes' libc `syscall`, as the rest of kobako.linux does.
"""

from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass, field

from .errors import CgroupError

# registers
R0, R1, R2, R3, R4, R5 = range(6)

# opcode = operation | source | class
_LDX_MEM_W = 0x61          # dst = *(u32 *)(src + off)
_ALU32_AND_K = 0x54        # dst = (u32)(dst & imm)
_ALU32_RSH_K = 0x74        # dst = (u32)(dst >> imm)
_ALU64_MOV_K = 0xB7        # dst = imm
_ALU32_MOV_X = 0xBC        # dst = (u32)src
_JMP_JNE_K = 0x55          # if dst != imm goto +off
_JMP_JNE_X = 0x5D          # if dst != src goto +off
_JMP_EXIT = 0x95

BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2

_BPF_PROG_LOAD = 5
_BPF_PROG_ATTACH = 8
_BPF_PROG_DETACH = 9
_BPF_PROG_GET_FD_BY_ID = 13
_BPF_OBJ_GET_INFO_BY_FD = 15
_BPF_PROG_QUERY = 16

_SYS_BPF = {"x86_64": 321, "aarch64": 280}


@dataclass
class Program:
    """Instructions with symbolic jump targets, resolved by `assemble()`."""

    insns: list[tuple[int, int, int, int, int | str]] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)

    def _emit(self, code: int, dst: int = 0, src: int = 0, off: int | str = 0,
              imm: int = 0) -> None:
        self.insns.append((code, dst, src, imm, off))

    def load_u32(self, dst: int, src: int, offset: int) -> None:
        self._emit(_LDX_MEM_W, dst, src, offset)

    def and_imm(self, dst: int, imm: int) -> None:
        self._emit(_ALU32_AND_K, dst, imm=imm)

    def rsh_imm(self, dst: int, imm: int) -> None:
        self._emit(_ALU32_RSH_K, dst, imm=imm)

    def mov_imm(self, dst: int, imm: int) -> None:
        self._emit(_ALU64_MOV_K, dst, imm=imm)

    def mov_reg(self, dst: int, src: int) -> None:
        self._emit(_ALU32_MOV_X, dst, src)

    def jne_imm(self, dst: int, imm: int, label: str) -> None:
        self._emit(_JMP_JNE_K, dst, off=label, imm=imm)

    def jne_reg(self, dst: int, src: int, label: str) -> None:
        self._emit(_JMP_JNE_X, dst, src, off=label)

    def exit(self) -> None:
        self._emit(_JMP_EXIT)

    def label(self, name: str) -> None:
        self.labels[name] = len(self.insns)

    def assemble(self) -> bytes:
        out = bytearray()
        for index, (code, dst, src, imm, off) in enumerate(self.insns):
            if isinstance(off, str):
                off = self.labels[off] - index - 1  # jumps are relative to the next insn
            out += struct.pack("<BBhi", code, (src << 4) | dst, off, imm)
        return bytes(out)


def disassemble(code: bytes) -> list[tuple[int, int, int, int, int]]:
    """(opcode, dst, src, off, imm) per instruction: for tests and debugging."""
    result = []
    for index in range(0, len(code), 8):
        op, regs, off, imm = struct.unpack_from("<BBhi", code, index)
        result.append((op, regs & 0xF, regs >> 4, off, imm))
    return result


class _Bpf:
    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long
        self._number = _SYS_BPF.get(os.uname().machine, _SYS_BPF["x86_64"])

    def call(self, command: int, attr: ctypes.Array, what: str) -> int:
        result = self._libc.syscall(ctypes.c_long(self._number), ctypes.c_int(command),
                                    attr, ctypes.c_uint(len(attr)))
        if result < 0:
            err = ctypes.get_errno()
            raise CgroupError(f"bpf({what}): {os.strerror(err)}", errno=err)
        return result


_bpf: _Bpf | None = None


def _sys() -> _Bpf:
    global _bpf
    if _bpf is None:
        _bpf = _Bpf()
    return _bpf


def _attr(size: int = 128) -> ctypes.Array:
    return ctypes.create_string_buffer(size)


def load_device_program(code: bytes) -> int:
    """BPF_PROG_LOAD a cgroup device program; returns its fd (the verifier log on failure)."""
    insns = ctypes.create_string_buffer(code, len(code))
    license_text = ctypes.create_string_buffer(b"Apache")
    log = ctypes.create_string_buffer(65536)
    attr = _attr()
    struct.pack_into("<IIQQIIQ", attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE, len(code) // 8,
                     ctypes.addressof(insns), ctypes.addressof(license_text), 1, len(log),
                     ctypes.addressof(log))
    try:
        return _sys().call(_BPF_PROG_LOAD, attr, "PROG_LOAD device filter")
    except CgroupError as err:
        verifier = log.value.decode(errors="replace").strip()
        raise CgroupError(f"{err}{': ' + verifier if verifier else ''}", errno=err.errno) from None


def prog_id(prog_fd: int) -> int:
    info = _attr(256)
    attr = _attr()
    struct.pack_into("<IIQ", attr, 0, prog_fd, len(info), ctypes.addressof(info))
    _sys().call(_BPF_OBJ_GET_INFO_BY_FD, attr, "OBJ_GET_INFO_BY_FD")
    return struct.unpack_from("<I", info, 4)[0]  # bpf_prog_info: type, id, ...


def attached_ids(cgroup_fd: int) -> list[int]:
    ids = (ctypes.c_uint32 * 64)()
    attr = _attr()
    struct.pack_into("<IIIIQI", attr, 0, cgroup_fd, BPF_CGROUP_DEVICE, 0, 0,
                     ctypes.addressof(ids), len(ids))
    _sys().call(_BPF_PROG_QUERY, attr, "PROG_QUERY")
    count = struct.unpack_from("<I", attr, 24)[0]
    return list(ids[:count])


def attach(cgroup_fd: int, prog_fd: int) -> None:
    attr = _attr()
    struct.pack_into("<IIII", attr, 0, cgroup_fd, prog_fd, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI)
    _sys().call(_BPF_PROG_ATTACH, attr, "PROG_ATTACH device filter")


def detach_id(cgroup_fd: int, program_id: int) -> None:
    attr = _attr()
    struct.pack_into("<I", attr, 0, program_id)
    fd = _sys().call(_BPF_PROG_GET_FD_BY_ID, attr, f"PROG_GET_FD_BY_ID {program_id}")
    try:
        attr = _attr()
        struct.pack_into("<III", attr, 0, cgroup_fd, fd, BPF_CGROUP_DEVICE)
        _sys().call(_BPF_PROG_DETACH, attr, f"PROG_DETACH {program_id}")
    finally:
        os.close(fd)
