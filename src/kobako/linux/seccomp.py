"""Install an OCI `linux.seccomp` filter through libseccomp (the pyseccomp binding).

`validate(cfg)` checks the document without touching the kernel (the runtime
calls it during `create`, before any process exists); `load(cfg)` builds the
filter with libseccomp and loads it into the calling process. Semantics follow
runc's libcontainer/seccomp:

- unknown syscall names are skipped (the name may not exist on this arch or
  this libseccomp);
- a rule whose action equals the default action is skipped (libseccomp
  refuses it);
- several conditions on the same argument index become one rule per
  condition (libseccomp cannot AND two comparisons of one argument);
- libseccomp's no_new_privs bit is off: the runtime sets NNP itself from
  process.noNewPrivileges, so loading needs CAP_SYS_ADMIN when NNP is unset.

`import pyseccomp` stays inside functions: it loads libseccomp.so.2 at import
time and the runtime's start-up should not pay for that when there is no
seccomp section.
"""

from __future__ import annotations

import ctypes
import errno
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


# OCI action -> pyseccomp attribute; ERRNO and TRACE take a return code.
ACTIONS = {
    "SCMP_ACT_KILL": "KILL",
    "SCMP_ACT_KILL_PROCESS": "KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD": "KILL_THREAD",
    "SCMP_ACT_TRAP": "TRAP",
    "SCMP_ACT_ERRNO": "ERRNO",
    "SCMP_ACT_TRACE": "TRACE",
    "SCMP_ACT_ALLOW": "ALLOW",
    "SCMP_ACT_LOG": "LOG",
}
# Valid in the spec but not supported here: it needs a listener to pass the fd to.
UNSUPPORTED_ACTIONS = {"SCMP_ACT_NOTIFY"}

OPERATORS = {
    "SCMP_CMP_NE": "NE",
    "SCMP_CMP_LT": "LT",
    "SCMP_CMP_LE": "LE",
    "SCMP_CMP_EQ": "EQ",
    "SCMP_CMP_GE": "GE",
    "SCMP_CMP_GT": "GT",
    "SCMP_CMP_MASKED_EQ": "MASKED_EQ",
}

# OCI arch -> pyseccomp.Arch attribute (all libseccomp 2.5 knows).
ARCHES = {
    "SCMP_ARCH_X86": "X86",
    "SCMP_ARCH_X86_64": "X86_64",
    "SCMP_ARCH_X32": "X32",
    "SCMP_ARCH_ARM": "ARM",
    "SCMP_ARCH_AARCH64": "AARCH64",
    "SCMP_ARCH_MIPS": "MIPS",
    "SCMP_ARCH_MIPS64": "MIPS64",
    "SCMP_ARCH_MIPS64N32": "MIPS64N32",
    "SCMP_ARCH_MIPSEL": "MIPSEL",
    "SCMP_ARCH_MIPSEL64": "MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32": "MIPSEL64N32",
    "SCMP_ARCH_PPC": "PPC",
    "SCMP_ARCH_PPC64": "PPC64",
    "SCMP_ARCH_PPC64LE": "PPC64LE",
    "SCMP_ARCH_S390": "S390",
    "SCMP_ARCH_S390X": "S390X",
    "SCMP_ARCH_PARISC": "PARISC",
    "SCMP_ARCH_PARISC64": "PARISC64",
    "SCMP_ARCH_RISCV64": "RISCV64",
}

# OCI flag -> seccomp(2) flag value, for probing what the kernel supports.
FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
}

MAX_ARGS = 6
_U64 = 1 << 64


class SeccompError(ValueError):
    """A seccomp document that cannot be installed, or libseccomp refusing it."""


# ---------------------------------------------------------------------------
# validation (no libseccomp needed)


def validate(cfg: Any) -> None:
    """Check an OCI linux.seccomp object; SeccompError naming the bad field."""
    if not isinstance(cfg, dict):
        raise SeccompError("linux.seccomp: must be an object")
    if cfg.get("listenerPath"):
        raise SeccompError(
            "linux.seccomp.listenerPath: seccomp user notification is not supported"
        )
    _check_action(cfg.get("defaultAction"), "linux.seccomp.defaultAction")
    _check_errno(cfg.get("defaultErrnoRet"), "linux.seccomp.defaultErrnoRet")
    for key, known, what in (("architectures", ARCHES, "architecture"), ("flags", FLAGS, "flag")):
        names = _list(cfg, key)
        if not isinstance(names, list):
            raise SeccompError(f"linux.seccomp.{key}: must be a list of strings")
        for name in names:
            if name not in known:
                raise SeccompError(f"linux.seccomp.{key}: unknown {what} {name!r}")
    calls = _list(cfg, "syscalls")
    if not isinstance(calls, list):
        raise SeccompError("linux.seccomp.syscalls: must be a list")
    for i, call in enumerate(calls):
        _check_call(call, f"linux.seccomp.syscalls[{i}]")


def _list(obj: dict[str, Any], key: str) -> Any:
    """obj[key], with null/absent meaning an empty list (as in Go's JSON decoding)."""
    value = obj.get(key)
    return [] if value is None else value


def _check_action(action: Any, field: str) -> None:
    if action is None:
        raise SeccompError(f"{field}: missing")
    if action in UNSUPPORTED_ACTIONS:
        raise SeccompError(f"{field}: action {action} is not supported")
    if action not in ACTIONS:
        raise SeccompError(f"{field}: unknown action {action!r}")


def _check_errno(value: Any, field: str) -> None:
    if value is None:
        return
    if not _is_int(value) or not 0 <= value <= 0xFFFF:
        raise SeccompError(f"{field}: must be an integer from 0 to 65535, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_call(call: Any, field: str) -> None:
    if not isinstance(call, dict):
        raise SeccompError(f"{field}: must be an object")
    names = call.get("names")
    if (
        not isinstance(names, list) or not names
        or not all(isinstance(n, str) and n for n in names)
    ):
        raise SeccompError(f"{field}.names: must be a non-empty list of syscall names")
    _check_action(call.get("action"), f"{field}.action")
    _check_errno(call.get("errnoRet"), f"{field}.errnoRet")
    args = _list(call, "args")
    if not isinstance(args, list):
        raise SeccompError(f"{field}.args: must be a list")
    for j, arg in enumerate(args):
        where = f"{field}.args[{j}]"
        if not isinstance(arg, dict):
            raise SeccompError(f"{where}: must be an object")
        index = arg.get("index")
        if not _is_int(index) or not 0 <= index < MAX_ARGS:
            raise SeccompError(f"{where}.index: must be an integer from 0 to 5, got {index!r}")
        for key in ("value", "valueTwo"):
            value = arg.get(key, 0)
            if not _is_int(value) or not 0 <= value < _U64:
                raise SeccompError(f"{where}.{key}: must be an unsigned 64-bit integer")
        if arg.get("op") not in OPERATORS:
            raise SeccompError(f"{where}.op: unknown operator {arg.get('op')!r}")


# ---------------------------------------------------------------------------
# building and loading


def _import() -> Any:
    try:
        import pyseccomp  # lazy: loads libseccomp.so.2
    except (OSError, RuntimeError) as e:
        raise SeccompError(f"seccomp is not available: cannot load libseccomp: {e}") from e
    return pyseccomp


def _action(pyseccomp: Any, name: str, errno_ret: int | None) -> int:
    attr = getattr(pyseccomp, ACTIONS[name])
    if name in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
        return attr(errno.EPERM if errno_ret is None else errno_ret)
    return attr


def _resolve(pyseccomp: Any, name: str) -> int | None:
    """The native (or libseccomp pseudo) number of syscall `name`, None if unknown."""
    number = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
    # __NR_SCMP_ERROR (-1): no arch libseccomp knows has it. Other negative
    # numbers are pseudo-syscalls that libseccomp maps per arch.
    return None if number == -1 else number


def build(cfg: dict[str, Any]) -> Any:
    """A pyseccomp.SyscallFilter for `cfg` (validated first), not yet loaded."""
    validate(cfg)
    pyseccomp = _import()

    default = _action(pyseccomp, cfg["defaultAction"], cfg.get("defaultErrnoRet"))
    try:
        filt = pyseccomp.SyscallFilter(default)
    except OSError as e:
        raise SeccompError(f"libseccomp: cannot create filter: {e.strerror}") from e
    _set_attr(filt, pyseccomp.Attr.CTL_NNP, 0, "no_new_privs")
    for arch in cfg.get("architectures") or []:
        value = getattr(pyseccomp.Arch, ARCHES[arch])
        try:
            if not filt.exist_arch(value):
                filt.add_arch(value)
        except OSError as e:
            raise SeccompError(f"libseccomp: cannot add architecture {arch}: {e.strerror}") from e
    for flag in cfg.get("flags") or []:
        if flag == "SECCOMP_FILTER_FLAG_LOG":
            _set_attr(filt, pyseccomp.Attr.CTL_LOG, 1, flag)
        elif flag == "SECCOMP_FILTER_FLAG_SPEC_ALLOW":
            _set_attr(filt, pyseccomp.Attr.CTL_SSB, 1, flag)
        # TSYNC: libseccomp syncs threads when it can; our init is single-threaded.
    calls = cfg.get("syscalls") or []
    if len(calls) > 32:
        # Binary-tree dispatch for long rule lists (libseccomp >= 2.5), as runc does.
        try:
            filt.set_attr(pyseccomp.Attr.CTL_OPTIMIZE, 2)
        except OSError:
            pass  # older libseccomp: the linear filter works the same, only slower
    for call in calls:
        _add_call(pyseccomp, filt, call, default)
    return filt


def _set_attr(filt: Any, attr: int, value: int, what: str) -> None:
    try:
        filt.set_attr(attr, value)
    except OSError as e:
        raise SeccompError(f"libseccomp: cannot set {what}: {e.strerror}") from e


def _add_call(pyseccomp: Any, filt: Any, call: dict[str, Any], default: int) -> None:
    action = _action(pyseccomp, call["action"], call.get("errnoRet"))
    if action == default:
        return
    conditions = [
        pyseccomp.Arg(
            a["index"], getattr(pyseccomp, OPERATORS[a["op"]]), a.get("value", 0),
            a.get("valueTwo", 0),
        )
        for a in call.get("args") or []
    ]
    indexes = [a["index"] for a in call.get("args") or []]
    if len(set(indexes)) != len(indexes):
        groups = [[c] for c in conditions]  # OR of single conditions, as runc
    else:
        groups = [conditions]
    for name in call["names"]:
        number = _resolve(pyseccomp, name)
        if number is None:
            continue  # unknown on this arch or libseccomp: skipped, as runc does
        for group in groups:
            try:
                filt.add_rule(action, number, *group)
            except OSError as e:
                raise SeccompError(
                    f"libseccomp: cannot add rule {call['action']} for {name}: {e.strerror}"
                ) from e


def load(cfg: dict[str, Any]) -> None:
    """Install the OCI linux.seccomp object `cfg` into the calling process."""
    filt = build(cfg)
    try:
        filt.load()
    except OSError as e:
        raise SeccompError(f"libseccomp: cannot load filter: {e.strerror}") from e


# ---------------------------------------------------------------------------
# compiled filters: libseccomp's program, built once per profile and then loaded as is


class CompiledFilter:
    """The BPF program libseccomp generated for a profile, and the seccomp(2) flags it is
    loaded with. Building and compiling a profile like Docker's takes ~12 ms; a container
    start or an exec only needs the result."""

    def __init__(self, program: bytes, flags: int):
        self.program = program
        self.flags = flags


def compile_filter(cfg: dict[str, Any], cache_dir: str | None = None) -> CompiledFilter:
    """libseccomp's program for `cfg` (seccomp_export_bpf), cached in `cache_dir` by
    content, libseccomp version and machine."""
    import hashlib
    import json

    flags = 0
    for name in cfg.get("flags") or []:
        flags |= FLAGS.get(name, 0)
    key = hashlib.sha256(json.dumps(
        [cfg, _libseccomp_id(), os.uname().machine], sort_keys=True).encode()).hexdigest()
    cached = os.path.join(cache_dir, key + ".bpf") if cache_dir else None
    if cached:
        try:
            with open(cached, "rb") as f:
                return CompiledFilter(f.read(), flags)
        except FileNotFoundError:
            pass
    filt = build(cfg)
    fd = os.memfd_create("kobako-seccomp", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "wb") as out:
            filt.export_bpf(out)
        program = os.pread(fd, os.fstat(fd).st_size, 0)
    finally:
        os.close(fd)
    if cached:
        from kobako.linux.files import write_atomic

        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        write_atomic(cached, program, 0o600)
    return CompiledFilter(program, flags)


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def load_compiled(compiled: CompiledFilter) -> None:
    """Install a compiled filter in the calling process, as seccomp_load would."""
    count = len(compiled.program) // ctypes.sizeof(_SockFilter)
    program = (_SockFilter * count).from_buffer_copy(compiled.program)
    prog = _SockFprog(count, program)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    rc = libc.syscall(ctypes.c_long(_SYS_SECCOMP[os.uname().machine]),
                      ctypes.c_uint(_SECCOMP_SET_MODE_FILTER), ctypes.c_uint(compiled.flags),
                      ctypes.byref(prog))
    if rc < 0:
        raise SeccompError(f"seccomp(SET_MODE_FILTER): {os.strerror(ctypes.get_errno())}")


def _libseccomp_id() -> str:
    return libseccomp_version() or ""


# ---------------------------------------------------------------------------
# what this host supports (for `features`)


def available() -> bool:
    """Whether libseccomp.so can be loaded."""
    try:
        _import()
    except SeccompError:
        return False
    return True


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


def libseccomp_version() -> str | None:
    """libseccomp's version ("2.5.4"), None without libseccomp."""
    try:
        lib = _import()._libseccomp  # the library pyseccomp loaded
    except (SeccompError, AttributeError):
        return None
    lib.seccomp_version.restype = ctypes.POINTER(_Version)
    v = lib.seccomp_version().contents
    return f"{v.major}.{v.minor}.{v.micro}"


_SYS_SECCOMP = {"x86_64": 317, "aarch64": 277, "i686": 354, "armv7l": 383, "s390x": 348,
                "ppc64le": 358, "riscv64": 277}
_SECCOMP_SET_MODE_FILTER = 1


def supported_flags() -> list[str]:
    """The seccomp filter flags this kernel accepts (probed as runc does).

    seccomp(SET_MODE_FILTER, flag, NULL) fails with EFAULT when the flag is
    known (the NULL program is checked after the flags) and EINVAL otherwise.
    """
    number = _SYS_SECCOMP.get(os.uname().machine)
    if number is None:
        return []
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    result = []
    for name, value in FLAGS.items():
        rc = libc.syscall(
            ctypes.c_long(number), ctypes.c_uint(_SECCOMP_SET_MODE_FILTER),
            ctypes.c_uint(value), ctypes.c_void_p(None),
        )
        if rc < 0 and ctypes.get_errno() == errno.EFAULT:
            result.append(name)
    return result
