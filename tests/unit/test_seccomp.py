"""kobako.linux.seccomp without loading anything: validation, and the filter
libseccomp builds (read back as libseccomp's pseudo filter code)."""

import sys
import tempfile

import pytest

from kobako.linux import seccomp


def pfc(cfg) -> str:
    filt = seccomp.build(cfg)
    with tempfile.TemporaryFile("w+") as f:
        filt.export_pfc(f)
        f.seek(0)
        return f.read()


def native_section(text: str) -> str:
    """The part of the pseudo code for x86_64 (the first arch block)."""
    blocks = text.split("# filter for arch ")
    return blocks[1]


BASE = {"defaultAction": "SCMP_ACT_ALLOW"}


def test_pyseccomp_is_imported_lazily():
    # Importing our module must not load libseccomp: the runtime's start-up matters.
    code = "import kobako.linux.seccomp, sys; print('pyseccomp' in sys.modules)"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize(
    "cfg, message",
    [
        ([], "linux.seccomp: must be an object"),
        ({}, "linux.seccomp.defaultAction: missing"),
        ({"defaultAction": "SCMP_ACT_BOGUS"}, "unknown action 'SCMP_ACT_BOGUS'"),
        ({"defaultAction": "SCMP_ACT_NOTIFY"}, "SCMP_ACT_NOTIFY is not supported"),
        ({**BASE, "listenerPath": "/run/x.sock"}, "listenerPath: seccomp user notification"),
        ({**BASE, "defaultErrnoRet": -1}, "defaultErrnoRet: must be an integer"),
        ({**BASE, "defaultErrnoRet": "1"}, "defaultErrnoRet: must be an integer"),
        ({**BASE, "architectures": ["SCMP_ARCH_Z80"]}, "unknown architecture 'SCMP_ARCH_Z80'"),
        ({**BASE, "architectures": "SCMP_ARCH_X86"}, "architectures: must be a list"),
        ({**BASE, "flags": ["SECCOMP_FILTER_FLAG_NOPE"]}, "unknown flag 'SECCOMP_FILTER_FLAG_NOPE'"),
        ({**BASE, "syscalls": {}}, "syscalls: must be a list"),
        ({**BASE, "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]},
         "syscalls[0].names: must be a non-empty list"),
        ({**BASE, "syscalls": [{"names": ["read"]}]}, "syscalls[0].action: missing"),
        ({**BASE, "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]},
         "syscalls[0].action: action SCMP_ACT_NOTIFY is not supported"),
        ({**BASE, "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
         "syscalls[0].args[0].index: must be an integer from 0 to 5"),
        ({**BASE, "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_LIKE"}]}]},
         "syscalls[0].args[0].op: unknown operator 'SCMP_CMP_LIKE'"),
        ({**BASE, "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                "args": [{"index": 0, "value": -5, "op": "SCMP_CMP_EQ"}]}]},
         "syscalls[0].args[0].value: must be an unsigned 64-bit integer"),
    ],
)
def test_validate_rejects(cfg, message):
    with pytest.raises(seccomp.SeccompError) as info:
        seccomp.validate(cfg)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_validate_accepts_a_full_document():
    seccomp.validate({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_EQ"}]},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        ],
    })


def test_errno_rule_with_errno_ret():
    text = native_section(pfc({**BASE, "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
        {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO"},
    ]}))
    assert 'syscall "mkdir"' in text and 'syscall "mkdirat"' in text
    assert "action ERRNO(13);" in text
    assert "action ERRNO(1);" in text  # EPERM when errnoRet is absent
    assert "action ALLOW;" in text


def test_default_errno_ret_and_actions():
    text = pfc({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["write"], "action": "SCMP_ACT_LOG"},
        {"names": ["kill"], "action": "SCMP_ACT_KILL_PROCESS"},
        {"names": ["tkill"], "action": "SCMP_ACT_TRAP"},
    ]})
    section = native_section(text)
    assert "action ERRNO(38);" in section  # the default
    assert "action LOG;" in section
    assert "action KILL_PROCESS;" in section
    assert "action TRAP;" in section


def test_unknown_syscall_names_are_skipped():
    text = pfc({**BASE, "syscalls": [
        {"names": ["no_such_syscall_xyz", "mkdir"], "action": "SCMP_ACT_ERRNO"}]})
    assert 'syscall "mkdir"' in text
    assert "no_such_syscall_xyz" not in text


def test_rules_equal_to_default_are_skipped():
    text = pfc({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 2},
    ]})
    assert 'syscall "mkdir"' not in text  # ERRNO(EPERM) == default: skipped
    assert 'syscall "rmdir"' in text


def test_argument_conditions():
    text = native_section(pfc({**BASE, "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
        {"names": ["clone"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
    ]}))
    assert "$a0.lo32 == 8" in text
    assert "$a0.lo32 & 0x7e020000" in text


def test_conditions_on_one_argument_become_separate_rules():
    # libseccomp cannot AND two comparisons of one argument; runc ORs them.
    text = native_section(pfc({**BASE, "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
                  {"index": 0, "value": 9, "op": "SCMP_CMP_EQ"}]}]}))
    assert "$a0.lo32 == 8" in text and "$a0.lo32 == 9" in text


def test_architectures_are_added():
    text = pfc({**BASE, "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]})
    assert "filter for arch x86_64" in text
    assert "filter for arch x86 " in text


def test_load_refuses_invalid_documents_before_touching_the_kernel():
    with pytest.raises(seccomp.SeccompError, match="unknown action"):
        seccomp.load({"defaultAction": "SCMP_ACT_MAYBE"})


def test_host_facts():
    assert seccomp.libseccomp_version().count(".") == 2
    flags = seccomp.supported_flags()
    assert set(flags) <= set(seccomp.FLAGS)
    assert "SECCOMP_FILTER_FLAG_TSYNC" in flags  # every kernel since 3.17
