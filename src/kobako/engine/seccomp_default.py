"""Docker's default seccomp profile, in kobako's own form.

The same allow/deny decisions as moby's `profiles/seccomp/default.json` plus
the Go logic that turns it into an OCI `linux.seccomp` object for one
container (moby/profiles `seccomp_linux.go` setupSeccomp):

- an allowlist: anything not listed fails with EPERM;
- `ALWAYS` is allowed for every container;
- `RULES` are allowed (or answered) only for some capabilities, arches,
  arguments or kernels. A rule's `caps` must all be in the container's bounding
  set; `without_caps` drops the rule if any of them is; `arches`/`not_arches`
  filter by the host's arch (Go names: amd64, arm64, ...); `min_kernel` by
  the running kernel.

Everything a container may never do without a capability (mount, unshare,
setns, keyctl, add_key, request_key, bpf, kexec, module loading, reboot,
clock setting, swapon, ...) is simply absent from `ALWAYS`.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from typing import Any

# --- allowed for every container, grouped by what they are for ---------------

_FILES = """
    access faccessat faccessat2 chdir fchdir getcwd chmod fchmod fchmodat fchmodat2
    chown chown32 fchown fchown32 fchownat lchown lchown32
    open openat openat2 creat close close_range name_to_handle_at
    read readv pread64 preadv preadv2 write writev pwrite64 pwritev pwritev2
    lseek _llseek dup dup2 dup3 fcntl fcntl64 flock ioctl
    stat stat64 fstat fstat64 lstat lstat64 fstatat64 newfstatat statx
    statfs statfs64 fstatfs fstatfs64 statmount listmount
    getdents getdents64 mkdir mkdirat mknod mknodat rmdir
    link linkat symlink symlinkat unlink unlinkat readlink readlinkat
    rename renameat renameat2 truncate truncate64 ftruncate ftruncate64
    fallocate fadvise64 fadvise64_64 readahead
    fsync fdatasync sync syncfs sync_file_range
    copy_file_range sendfile sendfile64 splice tee vmsplice
    utime utimes utimensat utimensat_time64 futimesat umask
    inotify_init inotify_init1 inotify_add_watch inotify_rm_watch fanotify_mark
"""

_XATTRS = """
    getxattr lgetxattr fgetxattr getxattrat setxattr lsetxattr fsetxattr setxattrat
    listxattr llistxattr flistxattr listxattrat
    removexattr lremovexattr fremovexattr removexattrat
"""

_PROCESSES = """
    fork vfork execve execveat exit exit_group wait4 waitid waitpid
    getpid getppid gettid getpgid setpgid getpgrp getsid setsid
    getuid getuid32 geteuid geteuid32 getgid getgid32 getegid getegid32
    getresuid getresuid32 getresgid getresgid32 getgroups getgroups32
    setuid setuid32 setgid setgid32 setreuid setreuid32 setregid setregid32
    setresuid setresuid32 setresgid setresgid32 setgroups setgroups32
    setfsuid setfsuid32 setfsgid setfsgid32 capget capset prctl seccomp
    getrlimit setrlimit ugetrlimit prlimit64 getrusage getpriority setpriority
    ioprio_get ioprio_set uname sysinfo getcpu getrandom times
    pidfd_open pidfd_send_signal process_mrelease
    set_tid_address get_robust_list set_robust_list rseq restart_syscall
    get_thread_area set_thread_area uretprobe riscv_hwprobe
    landlock_create_ruleset landlock_add_rule landlock_restrict_self
"""

_SCHEDULING = """
    sched_yield sched_getaffinity sched_setaffinity sched_getattr sched_setattr
    sched_getparam sched_setparam sched_getscheduler sched_setscheduler
    sched_get_priority_max sched_get_priority_min
    sched_rr_get_interval sched_rr_get_interval_time64
"""

_MEMORY = """
    brk mmap mmap2 munmap mremap mprotect madvise mincore msync remap_file_pages
    mlock mlock2 mlockall munlock munlockall membarrier memfd_create memfd_secret
    pkey_alloc pkey_free pkey_mprotect map_shadow_stack mseal cachestat
"""

_SIGNALS = """
    kill tkill tgkill rt_sigaction rt_sigprocmask rt_sigpending rt_sigqueueinfo
    rt_tgsigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64
    sigaltstack sigprocmask sigreturn signalfd signalfd4 pause
"""

_TIME = """
    time gettimeofday adjtimex clock_adjtime clock_adjtime64
    clock_getres clock_getres_time64 clock_gettime clock_gettime64
    clock_nanosleep clock_nanosleep_time64 nanosleep alarm getitimer setitimer
    timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64
    timer_settime timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64
    timerfd_settime timerfd_settime64
"""

_WAITING = """
    select _newselect pselect6 pselect6_time64 poll ppoll ppoll_time64
    epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_wait epoll_wait_old
    epoll_pwait epoll_pwait2 eventfd eventfd2 pipe pipe2
    futex futex_time64 futex_waitv futex_wait futex_wake futex_requeue
    io_setup io_destroy io_submit io_cancel io_getevents io_pgetevents io_pgetevents_time64
"""

# socket(2) itself is in RULES: some address families are refused.
_NETWORK = """
    socketpair socketcall bind connect listen accept accept4 shutdown
    getsockname getpeername getsockopt setsockopt
    send sendto sendmsg sendmmsg recv recvfrom recvmsg recvmmsg recvmmsg_time64
"""

_IPC = """
    ipc msgget msgctl msgsnd msgrcv semget semctl semop semtimedop semtimedop_time64
    shmget shmctl shmat shmdt
    mq_open mq_unlink mq_getsetattr mq_notify mq_timedsend mq_timedsend_time64
    mq_timedreceive mq_timedreceive_time64
"""

ALWAYS: frozenset[str] = frozenset(
    " ".join([_FILES, _XATTRS, _PROCESSES, _SCHEDULING, _MEMORY, _SIGNALS, _TIME,
              _WAITING, _NETWORK, _IPC]).split()
)

# --- conditional rules ----------------------------------------------------------

ALLOW = "SCMP_ACT_ALLOW"

# Namespace flags of clone(2): without CAP_SYS_ADMIN clone is allowed only when none is set.
CLONE_NAMESPACE_FLAGS = (
    0x00020000  # CLONE_NEWNS
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
    | 0x02000000  # CLONE_NEWCGROUP
)

AF_ALG = 38
AF_NFC = 39
AF_VSOCK = 40

# personality(2) values a container may set: PER_LINUX, PER_LINUX32, UNAME26 with
# each, and 0xffffffff (query only).
PERSONALITIES = (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)


@dataclass(frozen=True)
class Rule:
    names: tuple[str, ...]
    action: str = ALLOW
    errno_ret: int | None = None
    args: tuple[tuple[int, int, str], ...] = ()  # (index, value, op); valueTwo is always 0
    caps: tuple[str, ...] = ()  # all must be in the bounding set
    without_caps: tuple[str, ...] = ()  # dropped if any is in the bounding set
    arches: tuple[str, ...] = ()  # only on these arches
    not_arches: tuple[str, ...] = ()  # never on these arches
    min_kernel: tuple[int, int] | None = None
    why: str = field(default="", compare=False)

    def applies(self, caps: set[str], arch: str, kernel: tuple[int, int]) -> bool:
        if self.not_arches and arch in self.not_arches:
            return False
        if self.without_caps and caps.intersection(self.without_caps):
            return False
        if self.arches and arch not in self.arches:
            return False
        if self.caps and not caps.issuperset(self.caps):
            return False
        return self.min_kernel is None or kernel >= self.min_kernel

    def to_oci(self) -> dict[str, Any]:
        out: dict[str, Any] = {"names": list(self.names), "action": self.action}
        if self.args:
            out["args"] = [{"index": i, "value": v, "valueTwo": 0, "op": op}
                           for i, v, op in self.args]
        if self.errno_ret is not None:
            out["errnoRet"] = self.errno_ret
        return out


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


RULES: tuple[Rule, ...] = (
    Rule(_names("process_vm_readv process_vm_writev ptrace"), min_kernel=(4, 8),
         why="before 4.8 ptrace could bypass seccomp"),
    Rule(("socket",), args=((0, AF_ALG, "SCMP_CMP_LT"),),
         why="every address family below AF_ALG (kernel crypto API)"),
    Rule(("socket",), args=((0, AF_NFC, "SCMP_CMP_EQ"),)),
    Rule(("socket",), args=((0, AF_VSOCK, "SCMP_CMP_GT"),),
         why="AF_VSOCK reaches the host and other VMs across network namespaces"),
    *(Rule(("personality",), args=((0, value, "SCMP_CMP_EQ"),)) for value in PERSONALITIES),
    Rule(_names("sync_file_range2 swapcontext"), arches=("ppc64le",)),
    Rule(_names("arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint "
                "cacheflush set_tls"), arches=("arm", "arm64")),
    Rule(("arch_prctl",), arches=("amd64", "x32")),
    Rule(("modify_ldt",), arches=("amd64", "x32", "x86")),
    Rule(_names("s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr"),
         arches=("s390", "s390x")),
    Rule(("riscv_flush_icache",), arches=("riscv64",)),
    Rule(("open_by_handle_at",), caps=("CAP_DAC_READ_SEARCH",)),
    Rule(_names("""bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick
                   lookup_dcookie lsm_get_self_attr lsm_list_modules lsm_set_self_attr
                   mount mount_setattr move_mount open_tree perf_event_open quotactl
                   quotactl_fd setdomainname sethostname setns syslog umount umount2
                   unshare"""), caps=("CAP_SYS_ADMIN",)),
    Rule(("clone",), args=((0, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ"),),
         without_caps=("CAP_SYS_ADMIN",), not_arches=("s390", "s390x"),
         why="plain clone, but no new namespaces"),
    Rule(("clone",), args=((1, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ"),),
         arches=("s390", "s390x"), without_caps=("CAP_SYS_ADMIN",),
         why="s390 parameter ordering for clone is different"),
    Rule(("clone3",), action="SCMP_ACT_ERRNO", errno_ret=errno.ENOSYS,
         without_caps=("CAP_SYS_ADMIN",),
         why="its flags are behind a pointer: ENOSYS makes libc fall back to clone"),
    Rule(("reboot",), caps=("CAP_SYS_BOOT",)),
    Rule(("chroot",), caps=("CAP_SYS_CHROOT",)),
    Rule(_names("delete_module init_module finit_module"), caps=("CAP_SYS_MODULE",)),
    Rule(("acct",), caps=("CAP_SYS_PACCT",)),
    Rule(_names("kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace"),
         caps=("CAP_SYS_PTRACE",)),
    Rule(_names("iopl ioperm"), caps=("CAP_SYS_RAWIO",)),
    Rule(_names("settimeofday stime clock_settime clock_settime64"), caps=("CAP_SYS_TIME",)),
    Rule(("vhangup",), caps=("CAP_SYS_TTY_CONFIG",)),
    Rule(_names("get_mempolicy mbind set_mempolicy set_mempolicy_home_node"),
         caps=("CAP_SYS_NICE",)),
    Rule(("syslog",), caps=("CAP_SYSLOG",)),
    Rule(("bpf",), caps=("CAP_BPF",)),
    Rule(("perf_event_open",), caps=("CAP_PERFMON",)),
)

# Host arch -> the arches the filter covers (native first), as moby's archMap.
ARCH_MAP: dict[str, tuple[str, ...]] = {
    "amd64": ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
    "arm64": ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"),
    "mips64": ("SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64N32"),
    "mips64n32": ("SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64"),
    "mipsel64": ("SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64N32"),
    "mipsel64n32": ("SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64"),
    "s390x": ("SCMP_ARCH_S390X", "SCMP_ARCH_S390"),
    "riscv64": ("SCMP_ARCH_RISCV64",),
    "loong64": ("SCMP_ARCH_LOONGARCH64",),
}

# uname -m -> the Go-style names the rules use.
_MACHINE_TO_ARCH = {
    "x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64", "i386": "x86", "i686": "x86",
    "armv7l": "arm", "armv6l": "arm", "s390x": "s390x", "ppc64le": "ppc64le",
    "ppc64": "ppc64", "riscv64": "riscv64", "mips64": "mips64", "loongarch64": "loong64",
}


def host_arch() -> str:
    """This machine's arch in the rules' (Go) naming: amd64, arm64, ..."""
    machine = os.uname().machine
    return _MACHINE_TO_ARCH.get(machine, machine)


def kernel_version(release: str | None = None) -> tuple[int, int]:
    """(major, minor) of the running kernel (or of `release`, e.g. "6.1.0-18-amd64")."""
    release = release or os.uname().release
    parts = release.split(".")
    try:
        major = int(parts[0])
        minor = int("".join(ch for ch in parts[1].split("-")[0] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)
    return (major, minor)


def default_profile(
    capabilities: list[str], arch: str | None = None, kernel: tuple[int, int] | None = None
) -> dict[str, Any]:
    """Docker's default profile for a container whose bounding set is `capabilities`.

    Returns an OCI linux.seccomp object. `arch` defaults to the host's (Go naming;
    "x86_64"/"aarch64" are accepted too), `kernel` to the running kernel.
    """
    arch = _MACHINE_TO_ARCH.get(arch, arch) if arch else host_arch()
    kernel = kernel or kernel_version()
    caps = set(capabilities)
    syscalls = [{"names": sorted(ALWAYS), "action": ALLOW}]
    syscalls += [rule.to_oci() for rule in RULES if rule.applies(caps, arch, kernel)]
    profile: dict[str, Any] = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": errno.EPERM,
    }
    if arch in ARCH_MAP:
        profile["architectures"] = list(ARCH_MAP[arch])
    profile["syscalls"] = syscalls
    return profile
