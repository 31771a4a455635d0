"""Docker's container Config + HostConfig -> an OCI runtime config.json, with Docker's defaults.

The model is dockerd's createSpec (daemon/oci_linux.go and the helpers it calls):
the default spec of daemon/pkg/oci/defaults.go, then common options (args, cwd, env,
hostname, init), cgroups path, resources, sysctls, devices, rlimits, namespaces,
capabilities, seccomp, mounts, OOM score, masked/read-only paths. Each section below
names the moby function it follows. Invalid input raises `InvalidParameter` with
Docker's message; a problem on our side raises `EngineError`.

Besides `build_spec`, the create path can use `merge_config` (the image's config
merged into the container's, as stored for inspect), `adapt_host_config` (Docker's
create-time defaults) and `verify_host_config` (Docker's create-time checks, returning
its warnings), and the exec path `exec_process`.
"""

from __future__ import annotations

import copy
import functools
import glob
import json
import logging
import os
import posixpath
import re
import stat
from typing import Any

from kobako.engine import seccomp_default, users
from kobako.engine.errors import EngineError, InvalidParameter, NotImplementedYet
from kobako.linux import capabilities as caps_mod
from kobako.linux.cgroups.sysinfo import SysInfo
from kobako.linux.cgroups.sysinfo import probe as probe_sysinfo
from kobako.network.errors import InvalidNetworkConfig
from kobako.network.portmap import check_bindings

log = logging.getLogger(__name__)

OCI_VERSION = "1.0.2-dev"
DEFAULT_PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHM_SIZE = 64 << 20
INIT_IN_CONTAINER = "/sbin/docker-init"
LINUX_MIN_MEMORY = 6291456  # dockerd's floor for Memory and MemoryReservation
HEALTH_MIN_DURATION = 1_000_000  # ns: the shortest healthcheck interval, timeout, period

# daemon/pkg/oci/caps/defaults.go, in Docker's order.
DEFAULT_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]

DEFAULT_MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list",
    "/proc/timer_stats", "/sys/devices/virtual/powercap", "/sys/firmware",
]
DEFAULT_READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

_DEFAULT_MOUNTS: list[dict[str, Any]] = [
    {"destination": "/proc", "type": "proc", "source": "proc",
     "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs",
     "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
     "options": ["ro", "nosuid", "noexec", "nodev"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
     "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "noexec", "nodev", "mode=1777"]},
]


def _allow(kind: str, major: int, minor: int, allow: bool = True) -> dict[str, Any]:
    return {"allow": allow, "type": kind, "major": major, "minor": minor, "access": "rwm"}


# Deny everything, then the devices every container has (null, zero, full, random,
# urandom, tty, console, ptmx); the old /dev/pts/ptmx (10:229) stays denied.
DEFAULT_DEVICE_RULES: list[dict[str, Any]] = [
    {"allow": False, "access": "rwm"},
    _allow("c", 1, 5), _allow("c", 1, 3), _allow("c", 1, 9), _allow("c", 1, 8),
    _allow("c", 5, 0), _allow("c", 5, 1), _allow("c", 10, 229, allow=False),
]

# Sysctls a container may set (they live in its own ipc or net namespace): runc's list.
_IPC_SYSCTLS = {
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
    "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
}

# go-units' ulimit names.
ULIMIT_NAMES = (
    "as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile",
    "nproc", "rss", "rtprio", "rttime", "sigpending", "stack",
)

_U64_MAX = (1 << 64) - 1


def _quote(value: str) -> str:
    """Go's %q for a string (close enough: JSON string syntax)."""
    return json.dumps(value)


# --- config merge, command, environment (daemon/commit.go merge, container/env.go) ------


def merge_config(config: dict, image_config: dict | None) -> dict:
    """The container's Config with the image's filled in, as dockerd stores it at create.

    Also resets an Entrypoint of [""] (`--entrypoint ""`) to none, as dockerd does
    after merging (so the image's Cmd is not used either).
    """
    merged = copy.deepcopy(config or {})
    image = image_config or {}
    if not merged.get("User"):
        merged["User"] = image.get("User") or ""
    ports = dict(image.get("ExposedPorts") or {})
    ports.update(merged.get("ExposedPorts") or {})
    merged["ExposedPorts"] = ports or merged.get("ExposedPorts")
    user_env = list(merged.get("Env") or [])
    if not user_env:
        merged["Env"] = list(image.get("Env") or [])
    else:
        keys = {entry.partition("=")[0] for entry in user_env}
        merged["Env"] = user_env + [entry for entry in image.get("Env") or []
                                    if entry.partition("=")[0] not in keys]
    labels = dict(image.get("Labels") or {})
    labels.update(merged.get("Labels") or {})
    merged["Labels"] = labels
    if not merged.get("Entrypoint"):
        if not merged.get("Cmd"):
            merged["Cmd"] = copy.deepcopy(image.get("Cmd"))
        if merged.get("Entrypoint") is None:
            merged["Entrypoint"] = copy.deepcopy(image.get("Entrypoint"))
    if merged.get("Healthcheck") is None and image.get("Healthcheck") is not None:
        merged["Healthcheck"] = copy.deepcopy(image["Healthcheck"])
    elif merged.get("Healthcheck") is not None and image.get("Healthcheck") is not None:
        health, base = merged["Healthcheck"], image["Healthcheck"]
        if not health.get("Test"):
            health["Test"] = base.get("Test")
        for key in ("Interval", "Timeout", "StartPeriod", "StartInterval", "Retries"):
            if not health.get(key):
                health[key] = base.get(key)
    if not merged.get("WorkingDir"):
        merged["WorkingDir"] = image.get("WorkingDir") or ""
    volumes = dict(image.get("Volumes") or {})
    volumes.update(merged.get("Volumes") or {})
    merged["Volumes"] = volumes or merged.get("Volumes")
    if not merged.get("StopSignal"):
        merged["StopSignal"] = image.get("StopSignal") or merged.get("StopSignal")
    if merged.get("Entrypoint") == [""]:
        merged["Entrypoint"] = None
    return merged


def resolve_command(config: dict, image_config: dict | None = None) -> list[str]:
    """Entrypoint + Cmd after Docker's merge rules; InvalidParameter if there is none."""
    merged = merge_config(config, image_config)
    command = list(merged.get("Entrypoint") or []) + list(merged.get("Cmd") or [])
    if not command:
        raise InvalidParameter("no command specified")
    return command


def replace_or_append_env(defaults: list[str], overrides: list[str]) -> list[str]:
    """container.ReplaceOrAppendEnvValues: KEY=v replaces or appends; a bare KEY unsets."""
    result: list[str | None] = list(defaults)
    index = {entry.partition("=")[0]: i for i, entry in enumerate(defaults)}
    for value in overrides:
        key, eq, _ = value.partition("=")
        if not eq:
            if key in index:
                result[index[key]] = None
            continue
        if key in index:
            result[index[key]] = value
        else:
            result.append(value)
    return [entry for entry in result if entry is not None]


def merged_env(config: dict, image_config: dict | None = None, *,
               hostname: str | None = None) -> list[str]:
    """The process environment dockerd gives a container (CreateDaemonEnvironment).

    PATH (Docker's default unless the image or container sets one), HOSTNAME, TERM=xterm
    with a tty, then the merged Env (container's over image's).
    """
    merged = merge_config(config, image_config)
    host = hostname if hostname is not None else (merged.get("Hostname") or "")
    defaults = [f"PATH={DEFAULT_PATH_ENV}", f"HOSTNAME={host}"]
    if merged.get("Tty"):
        defaults.append("TERM=xterm")
    return replace_or_append_env(defaults, list(merged.get("Env") or []))


# --- create-time defaults and checks (daemon/daemon_unix.go) -----------------------------


def default_cgroupns_mode(privileged: bool = False, cgroup_mode: str | None = None) -> str:
    """"private" on a cgroup v2 host, "host" on v1 (and for privileged containers on v1)."""
    if cgroup_mode is None:
        from kobako.linux.cgroups.host import host_mode
        cgroup_mode = host_mode()
    return "private" if cgroup_mode == "v2" else "host"


def adapt_host_config(host_config: dict, cgroup_mode: str | None = None) -> dict:
    """A copy of HostConfig with dockerd's create-time defaults (adaptContainerSettings)."""
    hc = copy.deepcopy(host_config or {})
    if (hc.get("Memory") or 0) > 0 and not hc.get("MemorySwap"):
        hc["MemorySwap"] = hc["Memory"] * 2  # swap defaults to as much again as memory
    if not hc.get("ShmSize"):
        hc["ShmSize"] = DEFAULT_SHM_SIZE
    if not hc.get("IpcMode"):
        hc["IpcMode"] = "private"
    if not hc.get("CgroupnsMode"):
        hc["CgroupnsMode"] = default_cgroupns_mode(bool(hc.get("Privileged")), cgroup_mode)
    if hc.get("OomKillDisable") is None:
        hc["OomKillDisable"] = False
    # what the docker CLI sends for "not set" is null in dockerd's inspect
    if hc.get("MemorySwappiness") == -1:
        hc["MemorySwappiness"] = None
    if hc.get("PidsLimit") is not None and hc["PidsLimit"] <= 0:
        hc["PidsLimit"] = None  # 0 and -1: unlimited (moby's router)
    if not hc.get("Privileged"):  # inspect shows what will be masked
        if hc.get("MaskedPaths") is None:
            hc["MaskedPaths"] = default_masked_paths()
        if hc.get("ReadonlyPaths") is None:
            hc["ReadonlyPaths"] = list(DEFAULT_READONLY_PATHS)
    return hc


def _mode_valid(mode: str, extra: tuple[str, ...] = ()) -> bool:
    if mode in ("", "host", *extra):
        return True
    if mode.startswith("container:"):
        return bool(mode.partition(":")[2])
    return False


def verify_host_config(host_config: dict, config: dict | None = None, *,
                       sysinfo: SysInfo | None = None, update: bool = False) -> list[str]:
    """dockerd's create-time checks (verifyPlatformContainerSettings and friends).

    Raises InvalidParameter with Docker's message; returns Docker's warnings. Limits
    this host's cgroups cannot enforce (`sysinfo`) are discarded from `host_config`
    in place, each with dockerd's warning, as dockerd does.
    """
    hc = host_config if host_config is not None else {}
    info = sysinfo or probe_sysinfo()
    warnings: list[str] = []

    def discard(supported: bool, fields: dict[str, Any], warning: str | None) -> None:
        if supported or not any(hc.get(name) for name in fields):
            return
        if warning:
            warnings.append(warning)
        hc.update(fields)

    _verify_config(config or {})
    memory = hc.get("Memory") or 0
    if memory and memory < LINUX_MIN_MEMORY:
        raise InvalidParameter("Minimum memory limit allowed is 6MB")
    if memory > 0 and not info.memory_limit:
        warnings.append("Your kernel does not support memory limit capabilities or the cgroup "
                        "is not mounted. Limitation discarded.")
        hc["Memory"], hc["MemorySwap"], memory = 0, -1, 0
    if memory > 0 and hc.get("MemorySwap") != -1 and not info.swap_limit:
        warnings.append("Your kernel does not support swap limit capabilities or the cgroup is "
                        "not mounted. Memory limited without swap.")
        hc["MemorySwap"] = -1
    swap = hc.get("MemorySwap") or 0
    if memory > 0 and swap > 0 and swap < memory:
        raise InvalidParameter(
            "Minimum memoryswap limit should be larger than memory limit, see usage")
    if memory == 0 and swap > 0 and not update:
        raise InvalidParameter(
            "You should always set the Memory limit when using Memoryswap limit, see usage")
    if hc.get("MemorySwappiness") not in (None, -1) and not info.memory_swappiness:
        warnings.append("Your kernel does not support memory swappiness capabilities or the "
                        "cgroup is not mounted. Memory swappiness discarded.")
        hc["MemorySwappiness"] = None
    swappiness = hc.get("MemorySwappiness")
    if swappiness is not None and swappiness != -1 and not 0 <= swappiness <= 100:
        raise InvalidParameter(
            f"Invalid value: {swappiness}, valid memory swappiness range is 0-100")
    discard(info.memory_reservation, {"MemoryReservation": 0},
            "Your kernel does not support memory soft limit capabilities or the cgroup is not "
            "mounted. Limitation discarded.")
    reservation = hc.get("MemoryReservation") or 0
    if 0 < reservation < LINUX_MIN_MEMORY:
        raise InvalidParameter("Minimum memory reservation allowed is 6MB")
    if memory > 0 and reservation > 0 and memory < reservation:
        raise InvalidParameter(
            "Minimum memory limit can not be less than memory reservation limit, see usage")
    discard(info.kernel_memory, {"KernelMemory": 0},
            "Your kernel does not support kernel memory limit capabilities or the cgroup is "
            "not mounted. Limitation discarded.")
    discard(info.oom_kill_disable, {"OomKillDisable": False},
            "Your kernel does not support OomKillDisable. OomKillDisable discarded.")
    if hc.get("OomKillDisable") and not memory:
        warnings.append("OOM killer is disabled for the container, but no memory limit is set, "
                        "this can result in the system running out of resources.")
    if hc.get("PidsLimit") is not None and not info.pids_limit:
        if hc["PidsLimit"] > 0:
            warnings.append("Your kernel does not support PIDs limit capabilities or the "
                            "cgroup is not mounted. PIDs limit discarded.")
        hc["PidsLimit"] = None
    nano = hc.get("NanoCpus") or 0
    if nano > 0 and (hc.get("CpuPeriod") or 0) > 0:
        raise InvalidParameter("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if nano > 0 and (hc.get("CpuQuota") or 0) > 0:
        raise InvalidParameter("Conflicting options: Nano CPUs and CPU Quota cannot both be set")
    if nano > 0 and not info.cpu_cfs:
        raise InvalidParameter("NanoCPUs can not be set, as your kernel does not support CPU "
                               "CFS scheduler or the cgroup is not mounted")
    if nano:
        ncpu = os.cpu_count() or 1
        if nano < 0 or nano > ncpu * 10**9:
            raise InvalidParameter(f"range of CPUs is from 0.01 to {ncpu}.00, as there are only "
                                   f"{ncpu} CPUs available")
    if (hc.get("CpuShares") or 0) < 0:
        raise InvalidParameter(f"invalid CPU shares ({hc['CpuShares']}): value must be a "
                               "positive integer")
    discard(info.cpu_shares, {"CpuShares": 0},
            "Your kernel does not support CPU shares or the cgroup is not mounted. "
            "Shares discarded.")
    discard(info.cpu_cfs, {"CpuPeriod": 0, "CpuQuota": 0},
            "Your kernel does not support CPU CFS scheduler. CPU period/quota discarded.")
    period = hc.get("CpuPeriod") or 0
    if period and not 1000 <= period <= 1000000:
        raise InvalidParameter("CPU cfs period can not be less than 1ms (i.e. 1000) or larger "
                               "than 1s (i.e. 1000000)")
    quota = hc.get("CpuQuota") or 0
    if 0 < quota < 1000:
        raise InvalidParameter("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    for field, what in (("CpuRealtimePeriod", "period"), ("CpuRealtimeRuntime", "runtime")):
        if (hc.get(field) or 0) > 0 and not info.cpu_realtime:
            raise InvalidParameter(f"Your kernel does not support cgroup cpu real-time {what}")
    rt_period, rt_runtime = hc.get("CpuRealtimePeriod") or 0, hc.get("CpuRealtimeRuntime") or 0
    if rt_period and rt_runtime and rt_runtime > rt_period:
        raise InvalidParameter("cpu real-time runtime cannot be higher than cpu real-time period")
    discard(info.cpuset, {"CpusetCpus": "", "CpusetMems": ""},
            "Your kernel does not support cpuset or the cgroup is not mounted. "
            "Cpuset discarded.")
    _verify_cpuset(hc.get("CpusetCpus") or "", info.cpus, "cpus", "CPUs")
    _verify_cpuset(hc.get("CpusetMems") or "", info.mems, "mems", "memory nodes")
    discard(info.blkio_weight, {"BlkioWeight": 0},
            "Your kernel does not support Block I/O weight or the cgroup is not mounted. "
            "Weight discarded.")
    weight = hc.get("BlkioWeight") or 0
    if weight > 0 and not 10 <= weight <= 1000:
        raise InvalidParameter("Range of blkio weight is from 10 to 1000")
    discard(info.blkio_weight_device, {"BlkioWeightDevice": []},
            "Your kernel does not support Block I/O weight_device or the cgroup is not "
            "mounted. Weight-device discarded.")
    discard(info.blkio_read_bps_device, {"BlkioDeviceReadBps": []},
            "Your kernel does not support BPS Block I/O read limit or the cgroup is not "
            "mounted. Block I/O BPS read limit discarded.")
    discard(info.blkio_write_bps_device, {"BlkioDeviceWriteBps": []},
            "Your kernel does not support BPS Block I/O write limit or the cgroup is not "
            "mounted. Block I/O BPS write limit discarded.")
    discard(info.blkio_read_iops_device, {"BlkioDeviceReadIOps": []},
            "Your kernel does not support IOPS Block read limit or the cgroup is not mounted. "
            "Block I/O IOPS read limit discarded.")
    discard(info.blkio_write_iops_device, {"BlkioDeviceWriteIOps": []},
            "Your kernel does not support IOPS Block write limit or the cgroup is not "
            "mounted. Block I/O IOPS write limit discarded.")
    if not _mode_valid(hc.get("IpcMode") or "", ("private", "shareable", "none")):
        raise InvalidParameter(f"invalid IPC mode: {hc.get('IpcMode')}")
    if not _mode_valid(hc.get("PidMode") or ""):
        raise InvalidParameter(f"invalid PID mode: {hc.get('PidMode')}")
    if (hc.get("UTSMode") or "") not in ("", "host"):
        raise InvalidParameter(f"invalid UTS mode: {hc.get('UTSMode')}")
    if (hc.get("ShmSize") or 0) < 0:
        raise InvalidParameter("SHM size can not be less than 0")
    oom = hc.get("OomScoreAdj") or 0
    if not -1000 <= oom <= 1000:
        raise InvalidParameter(f"Invalid value {oom}, range for oom score adj is [-1000, 1000]")
    cgroupns = hc.get("CgroupnsMode") or ""
    if cgroupns not in ("", "host", "private"):
        raise InvalidParameter(f"invalid cgroup namespace mode: {cgroupns}")
    for dest in hc.get("Tmpfs") or {}:
        _validate_target(dest)
    try:
        check_bindings(hc.get("PortBindings"))
    except InvalidNetworkConfig as err:
        raise InvalidParameter(str(err)) from None
    if "" in (hc.get("Annotations") or {}):
        raise InvalidParameter(
            "invalid Annotations: the empty string is not permitted as an annotation key")
    # The parsers below raise Docker's errors for their fields.
    for field in ("CapAdd", "CapDrop"):
        try:
            _normalize_caps(hc.get(field) or [])
        except InvalidParameter as err:
            raise InvalidParameter(f"invalid {field}: {err}") from None
    parse_security_opts(hc.get("SecurityOpt") or [])
    rlimits(hc.get("Ulimits") or [])
    device_cgroup_rules(hc.get("DeviceCgroupRules") or [])
    for mapping in hc.get("Devices") or []:
        _device_permissions(mapping)
    for raw in hc.get("Binds") or []:
        parse_bind(raw)
    for mount in hc.get("Mounts") or []:
        parse_mount(mount)
    return warnings


def _verify_config(config: dict) -> None:
    """dockerd's checks of the container's Config (verifyContainerSettings)."""
    from kobako.linux.signals import docker_signal

    workdir = config.get("WorkingDir") or ""
    if workdir and not workdir.startswith("/"):
        raise InvalidParameter(
            f"the working directory '{workdir}' is invalid, it needs to be an absolute path")
    if config.get("StopSignal"):
        try:
            docker_signal(config["StopSignal"])
        except ValueError as err:
            raise InvalidParameter(str(err)) from None
    for env in config.get("Env") or []:
        if not str(env).partition("=")[0]:
            raise InvalidParameter(f"invalid environment variable: {env}")
    health = config.get("Healthcheck") or {}
    for field in ("Interval", "Timeout", "StartPeriod", "StartInterval"):
        if 0 != (health.get(field) or 0) < HEALTH_MIN_DURATION:
            raise InvalidParameter(f"{field} in Healthcheck cannot be less than 1ms")
    if (health.get("Retries") or 0) < 0:
        raise InvalidParameter("Retries in Healthcheck cannot be negative")


def _uint_list(text: str, maximum: int = 0) -> set[int]:
    """dockerd's ParseUintListMaximum: "0-2,4" is {0, 1, 2, 4}."""
    numbers: set[int] = set()
    for part in text.split(",") if text else []:
        low, dash, high = part.partition("-")
        if not low.isdigit() or dash and not high.isdigit():
            raise ValueError(f"invalid format: {text}")
        first, last = int(low), int(high) if dash else int(low)
        if last < first:
            raise ValueError(f"invalid format: {text}")
        if maximum and last > maximum:
            raise ValueError("value larger than maximum")
        numbers.update(range(first, last + 1))
    return numbers


def _verify_cpuset(requested: str, available: str, what: str, things: str) -> None:
    """CpusetCpus/CpusetMems: well formed, and only what the host's root cpuset has."""
    if not requested:
        return
    offered = _uint_list(available)
    try:
        # 8192 is Linux's usual most cpus: accept numbers up to it, or more when we have them
        asked = _uint_list(requested, max(8192, *offered))
    except ValueError as err:
        raise InvalidParameter(f"Invalid value {requested} for cpuset {what}: {err}") from None
    if not asked <= offered:
        raise InvalidParameter(f"Requested {things} are not available - requested "
                               f"{requested}, available: {available}")


# --- capabilities (daemon/pkg/oci/caps) ----------------------------------------------------


@functools.cache
def _available_capabilities() -> frozenset[str]:
    # As containerd's cap.Current(): what this process holds. A daemon without, say,
    # CAP_SYS_RESOURCE cannot give it to a container (capset would fail).
    try:
        effective = caps_mod.current()["effective"]
    except (OSError, KeyError, ValueError) as err:
        log.error("failed to get capabilities from current environment: %s", err)
        return frozenset(caps_mod.ALL_CAPS)
    return frozenset(effective) & frozenset(caps_mod.ALL_CAPS) or frozenset(caps_mod.ALL_CAPS)


def _normalize_caps(names: list[str]) -> list[str]:
    normalized = []
    for name in names:
        cap = name.upper()
        if cap != "ALL" and not cap.startswith("CAP_"):
            cap = "CAP_" + cap
        if cap != "ALL":
            if cap not in caps_mod.KNOWN_CAPS:
                raise InvalidParameter(f"unknown capability: {_quote(cap)}")
            if cap not in _available_capabilities():
                raise InvalidParameter("capability not supported by your kernel or not "
                                       f"available in the current environment: {_quote(cap)}")
        normalized.append(cap)
    return normalized


def all_capabilities() -> list[str]:
    """Every capability available here, by number (a privileged container's set)."""
    return sorted(_available_capabilities(), key=caps_mod.KNOWN_CAPS.__getitem__)


def capabilities_for(host_config: dict) -> list[str]:
    """TweakCapabilities: Docker's defaults with CapAdd/CapDrop ("ALL", any case, CAP_ optional)."""
    if host_config.get("Privileged"):
        return all_capabilities()
    adds, drops = host_config.get("CapAdd") or [], host_config.get("CapDrop") or []
    if not adds and not drops:
        return list(DEFAULT_CAPABILITIES)
    cap_drop, cap_add = _normalize_caps(drops), _normalize_caps(adds)
    if "ALL" in cap_add:
        return [cap for cap in all_capabilities() if cap not in cap_drop]
    if "ALL" in cap_drop:
        result = cap_add
    else:
        result = [cap for cap in DEFAULT_CAPABILITIES if cap not in cap_drop] + cap_add
    unique: list[str] = []
    for cap in result:
        if cap not in unique:
            unique.append(cap)
    return unique


def _capability_sets(caplist: list[str], uid: int) -> dict[str, list[str]]:
    # oci.SetCapabilities: a non-root user gets only the bounding set, as execve would
    # leave it; the inheritable set stays empty (GHSA-2mm7-v4pc-9x9v).
    if uid == 0:
        return {"bounding": list(caplist), "effective": list(caplist),
                "permitted": list(caplist)}
    return {"bounding": list(caplist)}


# --- security options and seccomp (daemon_unix.go parseSecurityOpt, seccomp_linux.go) ----


class SecurityOptions:
    def __init__(self) -> None:
        self.no_new_privileges = False
        self.seccomp: str | None = None  # None: Docker's default; "unconfined"; or JSON
        self.writable_cgroups: bool | None = None


def _parse_bool(text: str) -> bool | None:
    # Go's strconv.ParseBool
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


def parse_security_opts(opts: list[str]) -> SecurityOptions:
    result = SecurityOptions()
    for opt in opts:
        if opt == "no-new-privileges":
            result.no_new_privileges = True
            continue
        if opt == "writable-cgroups":
            result.writable_cgroups = True
            continue
        if opt == "disable":
            continue  # SELinux labelling off: nothing to do without SELinux
        if "=" in opt:
            key, _, value = opt.partition("=")
        elif ":" in opt:
            key, _, value = opt.partition(":")
            log.warning("Security options with `:` as a separator are deprecated, use `=`")
        else:
            raise InvalidParameter(f"invalid --security-opt 1: {_quote(opt)}")
        if key == "label":
            log.warning("security-opt %r ignored: kobako has no SELinux support", opt)
        elif key == "apparmor":
            log.warning("security-opt %r ignored: kobako has no AppArmor support", opt)
        elif key == "seccomp":
            result.seccomp = value
        elif key in ("no-new-privileges", "writable-cgroups"):
            flag = _parse_bool(value)
            if flag is None:
                raise InvalidParameter(f"invalid --security-opt 2: {_quote(opt)}")
            if key == "no-new-privileges":
                result.no_new_privileges = flag
            else:
                result.writable_cgroups = flag
        else:
            raise InvalidParameter(f"invalid --security-opt 2: {_quote(opt)}")
    return result


def _kernel_at_least(version: str) -> bool:
    wanted = seccomp_default.kernel_version(version)
    return seccomp_default.kernel_version() >= wanted


def seccomp_from_docker_profile(text: str, capabilities: list[str],
                                arch: str | None = None) -> dict | None:
    """A profile in Docker's JSON format (what `--security-opt seccomp=file.json` sends)
    -> an OCI linux.seccomp object for a container with bounding set `capabilities`
    (moby profiles/seccomp setupSeccomp)."""
    try:
        profile = json.loads(text)
        if not isinstance(profile, dict):
            raise ValueError("not a JSON object")
    except ValueError as err:
        raise InvalidParameter(f"Decoding seccomp profile failed: {err}") from None
    if not profile.get("defaultAction") and not profile.get("syscalls"):
        return None  # an empty profile means no filter
    if profile.get("architectures") and profile.get("archMap"):
        raise InvalidParameter("'architectures' and 'archMap' were specified in the seccomp "
                               "profile, use either 'architectures' or 'archMap'")
    arch = arch or seccomp_default.host_arch()
    result: dict[str, Any] = {"defaultAction": profile.get("defaultAction")}
    if profile.get("defaultErrnoRet") is not None:
        result["defaultErrnoRet"] = profile["defaultErrnoRet"]
    arches = list(profile.get("architectures") or [])
    native = seccomp_default.ARCH_MAP.get(arch, ())
    for entry in profile.get("archMap") or []:
        if native and entry.get("architecture") == native[0]:
            arches += [entry["architecture"], *(entry.get("subArchitectures") or [])]
            break
    if arches:
        result["architectures"] = arches
    for key in ("listenerPath", "listenerMetadata", "flags"):
        if profile.get(key):
            result[key] = profile[key]
    have = set(capabilities)
    syscalls = []
    for call in profile.get("syscalls") or []:
        includes, excludes = call.get("includes") or {}, call.get("excludes") or {}
        if arch in (excludes.get("arches") or []):
            continue
        if have.intersection(excludes.get("caps") or []):
            continue
        if excludes.get("minKernel") and _kernel_at_least(excludes["minKernel"]):
            continue
        if includes.get("arches") and arch not in includes["arches"]:
            continue
        if not have.issuperset(includes.get("caps") or []):
            continue
        if includes.get("minKernel") and not _kernel_at_least(includes["minKernel"]):
            continue
        if call.get("name") and call.get("names"):
            raise InvalidParameter("'name' and 'names' were specified in the seccomp profile, "
                                   "use either 'name' or 'names'")
        rule: dict[str, Any] = {"names": [call["name"]] if call.get("name")
                                else list(call.get("names") or []),
                                "action": call.get("action")}
        if call.get("args"):
            rule["args"] = [{"index": a.get("index", 0), "value": a.get("value", 0),
                             "valueTwo": a.get("valueTwo", 0), "op": a.get("op")}
                            for a in call["args"]]
        if call.get("errnoRet") is not None:
            rule["errnoRet"] = call["errnoRet"]
        syscalls.append(rule)
    result["syscalls"] = syscalls
    return result


# --- rlimits, sysctls, devices -------------------------------------------------------------


def rlimits(ulimits: list[dict], defaults: list[dict] | None = None) -> list[dict]:
    """Ulimits [{Name, Soft, Hard}] (plus daemon defaults not overridden) -> OCI rlimits."""
    merged = list(ulimits)
    names = {u.get("Name") for u in ulimits}
    merged += [u for u in defaults or [] if u.get("Name") not in names]
    result = []
    for ulimit in merged:
        name = str(ulimit.get("Name") or "")
        if name.lower() not in ULIMIT_NAMES:
            raise InvalidParameter(f"invalid ulimit type: {name}")
        soft, hard = int(ulimit.get("Soft") or 0), int(ulimit.get("Hard") or 0)
        if soft > hard and hard >= 0 and soft >= 0:
            raise InvalidParameter(
                f"ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}")
        # Go converts -1 to uint64: RLIM_INFINITY
        result.append({"type": "RLIMIT_" + name.upper(), "soft": soft & _U64_MAX,
                       "hard": hard & _U64_MAX})
    return result


def validate_sysctls(sysctls: dict[str, str], namespaces: dict[str, str | None],
                     new_network: bool = True) -> None:
    """Only sysctls of a namespace the container has of its own (runc's rules)."""
    for key in sysctls:
        if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
            if "ipc" not in namespaces:
                raise InvalidParameter(f"sysctl {_quote(key)} is not allowed in the hosts ipc "
                                       "namespace")
            continue
        if key.startswith("net."):
            if "network" not in namespaces:
                raise InvalidParameter(f"sysctl {_quote(key)} not allowed in host network "
                                       "namespace")
            continue
        if key in ("kernel.domainname", "kernel.hostname") and "uts" in namespaces:
            continue
        raise InvalidParameter(f"sysctl {_quote(key)} is not in a separate kernel namespace")


def _stat_device(path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as err:
        raise InvalidParameter(f"stat {path}: {(err.strerror or '').lower()}") from None


def _device_numbers(path: str) -> tuple[int, int]:
    info = _stat_device(path)
    return os.major(info.st_rdev), os.minor(info.st_rdev)


def device_from_path(path: str) -> dict | None:
    """An OCI linux.devices entry for the device node at `path` (None if not a device)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    kind = {stat.S_IFBLK: "b", stat.S_IFCHR: "c", stat.S_IFIFO: "p"}.get(
        stat.S_IFMT(info.st_mode))
    if kind is None:
        return None
    return {"path": path, "type": kind, "major": os.major(info.st_rdev),
            "minor": os.minor(info.st_rdev), "fileMode": info.st_mode & ~stat.S_IFMT(
                info.st_mode), "uid": info.st_uid, "gid": info.st_gid}


_HOST_DEVICE_SKIP_DIRS = {"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"}


def host_devices(root: str = "/dev") -> list[dict]:
    """Every device node under /dev, as containerd's HostDevices lists them for privileged
    containers (skipping pts, shm, fd, mqueue and console)."""
    devices = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as err:
        raise EngineError(f"list host devices in {root}: {err.strerror}") from None
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if entry.name not in _HOST_DEVICE_SKIP_DIRS:
                devices += host_devices(entry.path)
            continue
        if entry.name == "console":
            continue
        device = device_from_path(entry.path)
        if device is not None:
            devices.append(device)
    return devices


def _resolved_device_path(path: str) -> str:
    # Follow a symlink only to a node under /dev (moby's resolvedDevicePath).
    path = posixpath.normpath(path)
    if path.startswith("/") and os.path.islink(path):
        target = os.path.realpath(path)
        if target == "/dev" or target.startswith("/dev/"):
            return target
    return path


def _device_rule(device: dict, permissions: str) -> dict:
    return {"allow": True, "type": device["type"], "major": device["major"],
            "minor": device["minor"], "access": permissions}


def devices_from_path(on_host: str, in_container: str, permissions: str
                      ) -> tuple[list[dict], list[dict]]:
    """A --device mapping -> (linux.devices entries, device cgroup rules); a directory
    maps every device node below it."""
    resolved = _resolved_device_path(on_host)
    device = device_from_path(resolved)
    if device is not None:
        device["path"] = in_container
        rules = [] if device["type"] == "p" else [_device_rule(device, permissions)]
        return [device], rules
    devices: list[dict] = []
    rules: list[dict] = []
    if os.path.isdir(resolved):
        for dirpath, _dirs, files in os.walk(resolved):
            for name in sorted(files):
                child = device_from_path(_resolved_device_path(os.path.join(dirpath, name)))
                if child is None:
                    continue
                child["path"] = os.path.join(dirpath, name).replace(resolved, in_container, 1)
                devices.append(child)
                if child["type"] != "p":
                    rules.append(_device_rule(child, permissions))
    if devices:
        return devices, rules
    reason = "no such file or directory" if not os.path.lexists(resolved) else "not a device node"
    raise InvalidParameter(f"error gathering device information while adding custom device "
                           f"{_quote(on_host)}: {reason}")


def _device_permissions(mapping: dict) -> str:
    permissions = mapping.get("CgroupPermissions") or "rwm"
    if not re.fullmatch(r"[rwm]{1,3}", permissions):
        raise InvalidParameter(f"invalid device mode: {permissions}")
    return permissions


_CGROUP_RULE = re.compile(r"^([acb]) ([0-9]+|\*):([0-9]+|\*) ([rwm]{1,3})$")


def device_cgroup_rules(rules: list[str]) -> list[dict]:
    """--device-cgroup-rule "c 1:3 rwm" -> OCI device cgroup rules."""
    result = []
    for raw in rules:
        rule = "a *:* rwm" if raw == "a" else raw
        match = _CGROUP_RULE.match(rule)
        if not match:
            raise InvalidParameter(f"invalid device cgroup rule format: '{raw}'")
        kind, major, minor, access = match.groups()
        result.append({"allow": True, "type": kind,
                       "major": -1 if major == "*" else int(major),
                       "minor": -1 if minor == "*" else int(minor), "access": access})
    return result


# --- mounts (daemon/volume/mounts/linux_parser.go, oci_linux.go WithMounts) --------------

_PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
_CONSISTENCY = ("consistent", "cached", "delegated")


class BindSpec:
    """One parsed `Binds` entry or `Mounts` object."""

    def __init__(self, kind: str, source: str, destination: str, read_only: bool,
                 propagation: str = "rprivate", recursive: bool = True,
                 create_source: bool = False, tmpfs_data: str = "", raw: str = ""):
        self.kind = kind  # "bind", "volume" or "tmpfs"
        self.source = source
        self.destination = destination
        self.read_only = read_only
        self.propagation = propagation
        self.recursive = recursive
        self.create_source = create_source
        self.tmpfs_data = tmpfs_data
        self.raw = raw


def _valid_mode(mode: str) -> bool:
    if mode == "":
        return True
    counts = {"rw": 0, "label": 0, "propagation": 0, "copy": 0, "consistency": 0}
    for option in mode.split(","):
        if option in ("rw", "ro"):
            counts["rw"] += 1
        elif option in ("z", "Z"):
            counts["label"] += 1
        elif option in _PROPAGATIONS:
            counts["propagation"] += 1
        elif option == "nocopy":
            counts["copy"] += 1
        elif option in _CONSISTENCY:
            counts["consistency"] += 1
        else:
            return False
    return all(count <= 1 for count in counts.values())


def _mount_config_error(kind: str, message: str) -> InvalidParameter:
    return InvalidParameter(f"invalid mount config for type {_quote(kind)}: {message}")


def _validate_target(target: str) -> None:
    if posixpath.normpath(target.replace("\\", "/")).lstrip("/") == "":
        raise InvalidParameter("invalid specification: destination can't be '/'")
    if not target.replace("\\", "/").startswith("/"):
        raise InvalidParameter(f"invalid mount path: '{target}' mount path must be absolute")


def parse_bind(raw: str) -> BindSpec:
    """A `-v`/`Binds` entry: "[source:]destination[:mode]" (Docker's ParseMountRaw)."""
    parts = raw.split(":", 3)
    if not parts[0] or len(parts) > 3:
        raise InvalidParameter(f"invalid volume specification: '{raw}'")
    mode = ""
    if len(parts) == 1:
        source, destination = "", parts[0]
    elif len(parts) == 2:
        if _valid_mode(parts[1]):
            raise InvalidParameter(f"invalid volume specification: '{raw}'")
        source, destination = parts
    else:
        source, destination, mode = parts
    if not _valid_mode(mode):
        raise InvalidParameter(f"invalid mode: {mode}")
    options = mode.split(",") if mode else []
    kind = "bind" if source.startswith("/") else "volume"
    try:
        _validate_target(destination)
        if kind == "bind" and "nocopy" in options:
            raise _mount_config_error("bind", "field VolumeOptions must not be specified")
    except InvalidParameter as err:
        raise InvalidParameter(f"invalid volume specification: '{raw}': {err}") from None
    propagation = next((o for o in options if o in _PROPAGATIONS), "rprivate")
    return BindSpec(kind, posixpath.normpath(source) if kind == "bind" else source,
                    posixpath.normpath(destination), "ro" in options, propagation,
                    create_source=True, raw=raw)


def _tmpfs_data(options: dict | None, read_only: bool) -> str:
    """ConvertTmpfsOptions: --mount type=tmpfs options -> mount data."""
    raw = ["ro"] if read_only else []
    options = options or {}
    if options.get("Mode"):
        raw.append(f"mode={int(options['Mode']):o}")
    size = int(options.get("SizeBytes") or 0)
    if size:
        suffix = ""
        for unit, divisor in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
            if size % divisor == 0:
                size, suffix = size // divisor, unit
                break
        raw.append(f"size={size}{suffix}")
    for option in options.get("Options") or []:
        if not 1 <= len(option) <= 2:
            raise InvalidParameter("invalid option array length")
        if option[0] not in ("exec", "noexec"):
            raise InvalidParameter("invalid option: " + option[0])
        raw.append(option[0] if len(option) == 1 else f"{option[0]}={option[1]}")
    return ",".join(raw)


def parse_mount(mount: dict) -> BindSpec:
    """A `Mounts` entry (--mount): type bind, tmpfs or volume (ParseMountSpec)."""
    kind = mount.get("Type") or ""
    target = mount.get("Target") or ""
    source = mount.get("Source") or ""
    try:
        if not target:
            raise InvalidParameter("field Target must not be empty")
        _validate_target(target)
    except InvalidParameter as err:
        raise _mount_config_error(kind, str(err)) from None
    read_only = bool(mount.get("ReadOnly"))
    extra = [key for key in ("BindOptions", "VolumeOptions", "TmpfsOptions")
             if mount.get(key) is not None]
    if kind == "bind":
        if not source:
            raise _mount_config_error(kind, "field Source must not be empty")
        for key in extra:
            if key != "BindOptions":
                raise _mount_config_error(kind, f"field {key} must not be specified")
        options = mount.get("BindOptions") or {}
        propagation = options.get("Propagation") or "rprivate"
        if propagation not in _PROPAGATIONS:
            raise _mount_config_error(kind, f"invalid propagation mode: {propagation}")
        if not source.startswith("/"):
            raise _mount_config_error(
                kind, f"invalid mount path: '{source}' mount path must be absolute")
        create = bool(options.get("CreateMountpoint"))
        if not create and not os.path.lexists(source):
            raise _mount_config_error(kind, f"bind source path does not exist: {source}")
        return BindSpec("bind", posixpath.normpath(source), posixpath.normpath(target),
                        read_only, propagation, recursive=not options.get("NonRecursive"),
                        create_source=create)
    if kind == "tmpfs":
        for key in extra:
            if key != "TmpfsOptions":
                raise _mount_config_error(kind, f"field {key} must not be specified")
        if source:
            raise _mount_config_error(kind, "field Source must not be specified")
        try:
            data = _tmpfs_data(mount.get("TmpfsOptions"), read_only)
        except InvalidParameter as err:
            raise _mount_config_error(kind, str(err)) from None
        return BindSpec("tmpfs", "tmpfs", posixpath.normpath(target), read_only,
                        tmpfs_data=data)
    if kind == "volume":
        for key in extra:
            if key != "VolumeOptions":
                raise _mount_config_error(kind, f"field {key} must not be specified")
        return BindSpec("volume", source, posixpath.normpath(target), read_only)
    raise _mount_config_error(kind, "mount type unknown")


# moby/sys/mount flags: options that set or clear the same flag collide.
_FLAG_KEYS = {
    "ro": "rdonly", "rw": "rdonly", "suid": "nosuid", "nosuid": "nosuid", "dev": "nodev",
    "nodev": "nodev", "exec": "noexec", "noexec": "noexec", "sync": "sync", "async": "sync",
    "dirsync": "dirsync", "remount": "remount", "mand": "mand", "nomand": "mand",
    "atime": "noatime", "noatime": "noatime", "diratime": "nodiratime",
    "nodiratime": "nodiratime", "bind": "bind", "rbind": "rbind", "relatime": "relatime",
    "norelatime": "relatime", "strictatime": "strictatime", "nostrictatime": "strictatime",
    **{p: "propagation" for p in ("unbindable", "runbindable", *_PROPAGATIONS)},
}
_TMPFS_DATA_KEYS = ("size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol")


def merge_tmpfs_options(options: list[str]) -> list[str]:
    """moby/sys/mount MergeTmpfsOptions: the last of colliding options wins, order kept."""
    seen: set[str] = set()
    merged: list[str] = []
    for option in reversed(options):
        if option == "defaults":
            continue
        key = _FLAG_KEYS.get(option)
        if key is None:
            name, eq, _ = option.partition("=")
            if not eq or name not in _TMPFS_DATA_KEYS:
                parts = option.split("=", 1)
                raise InvalidParameter(
                    "invalid tmpfs option [" + " ".join(_quote(p) for p in parts) + "]")
            key = "=" + name
        if key not in seen:
            seen.add(key)
            merged.insert(0, option)
    return merged


def _tmpfs_mount(destination: str, data: str) -> dict:
    options = ["noexec", "nosuid", "nodev", "rprivate"] + (data.split(",") if data else [])
    return {"destination": destination, "type": "tmpfs", "source": "tmpfs",
            "options": merge_tmpfs_options(options)}


def _bind_mount(spec: BindSpec) -> dict:
    options = ["rbind" if spec.recursive else "bind"]
    if spec.read_only:
        options.append("ro")
    options.append(spec.propagation)
    return {"destination": spec.destination, "type": "bind", "source": spec.source,
            "options": options}


def _create_bind_source(path: str) -> None:
    # `-v /missing:/x` creates the host directory, as Docker does.
    if not os.path.lexists(path):
        try:
            os.makedirs(path, mode=0o755, exist_ok=True)
        except OSError as err:
            raise EngineError(f"error while creating mount source path '{path}': "
                              f"mkdir {path}: {(err.strerror or '').lower()}") from None


def _depth(mount: dict) -> int:
    return posixpath.normpath(mount["destination"]).count("/")


def user_mounts(host_config: dict, extra_mounts: list[dict] | None = None,
                create_sources: bool = True) -> list[dict]:
    """Binds, Mounts, Tmpfs and the caller's extra mounts as OCI mounts, parents first.

    Volumes (a `Binds` name or `Mounts` type=volume) come from the volumes code as
    `extra_mounts` with the same destination; one that did not is an error for now.
    """
    extra = list(extra_mounts or [])
    extra_destinations = {posixpath.normpath(m["destination"]) for m in extra}
    specs = [parse_bind(raw) for raw in host_config.get("Binds") or []]
    specs += [parse_mount(m) for m in host_config.get("Mounts") or []]
    mounts: list[dict] = []
    seen: set[str] = set()
    for spec in specs:
        if spec.destination in seen:
            raise InvalidParameter(f"Duplicate mount point: {spec.destination}")
        seen.add(spec.destination)
        if spec.kind == "volume":
            if spec.destination in extra_destinations:
                continue  # the volumes code supplied it
            raise NotImplementedYet(f"volume mounts are not supported yet: "
                                    f"{spec.raw or spec.source or '(anonymous)'} at "
                                    f"{spec.destination}")
        if spec.kind == "tmpfs":
            mounts.append(_tmpfs_mount(spec.destination, spec.tmpfs_data))
            continue
        if spec.create_source and create_sources:
            _create_bind_source(spec.source)
        mounts.append(_bind_mount(spec))
    for destination, data in (host_config.get("Tmpfs") or {}).items():
        _validate_target(destination)
        destination = posixpath.normpath(destination)
        if destination in seen:
            raise InvalidParameter(f"Duplicate mount point: {destination}")
        seen.add(destination)
        mounts.append(_tmpfs_mount(destination, data or ""))
    # A user's own mount wins over one the engine generates for the same place.
    mounts += [m for m in extra if posixpath.normpath(m["destination"]) not in
               {posixpath.normpath(u["destination"]) for u in mounts}]
    return sorted(mounts, key=_depth)


# --- namespaces ------------------------------------------------------------------------------


def default_namespaces(host_config: dict, cgroup_mode: str | None = None
                       ) -> dict[str, str | None]:
    """Namespace type -> None (new) from the HostConfig modes; "host" omits the type.

    "container:<id>" modes need the other container's /proc/<pid>/ns path, which only
    the caller knows: pass `namespaces` to build_spec for those.
    """
    namespaces: dict[str, str | None] = {"mount": None}
    modes = {"network": host_config.get("NetworkMode") or "", "ipc":
             host_config.get("IpcMode") or "", "pid": host_config.get("PidMode") or "",
             "uts": host_config.get("UTSMode") or ""}
    for kind, mode in modes.items():
        if mode == "host":
            continue
        if mode.startswith("container:"):
            raise EngineError(f"{kind} mode {mode!r}: the caller must pass the namespace path")
        namespaces[kind] = None
    cgroupns = host_config.get("CgroupnsMode") or default_cgroupns_mode(
        bool(host_config.get("Privileged")), cgroup_mode)
    if cgroupns == "private":
        namespaces["cgroup"] = None
    # No time namespace: moby only recently started creating one by default, and
    # nothing in a container depends on it yet.
    return namespaces


_NAMESPACE_ORDER = ("mount", "network", "uts", "pid", "ipc", "cgroup", "user", "time")


def _namespace_list(namespaces: dict[str, str | None]) -> list[dict]:
    result = []
    for kind in sorted(namespaces, key=lambda k: _NAMESPACE_ORDER.index(k)
                       if k in _NAMESPACE_ORDER else len(_NAMESPACE_ORDER)):
        entry: dict[str, str] = {"type": kind}
        if namespaces[kind]:
            entry["path"] = namespaces[kind]  # type: ignore[assignment]
        result.append(entry)
    return result


# --- resources (daemon_unix.go getMemoryResources, getCPUResources, ...) --------------------


def _throttle_devices(entries: list[dict] | None, key: str = "Rate") -> list[dict]:
    result = []
    for entry in entries or []:
        major, minor = _device_numbers(entry["Path"])
        result.append({"major": major, "minor": minor,
                       "rate" if key == "Rate" else "weight": int(entry[key])})
    return result


def resources(host_config: dict) -> dict:
    """The OCI linux.resources (without devices) for HostConfig's resource fields."""
    hc = host_config
    out: dict[str, Any] = {}
    memory: dict[str, Any] = {}
    if (hc.get("Memory") or 0) > 0:
        memory["limit"] = hc["Memory"]
    if (hc.get("MemoryReservation") or 0) > 0:
        memory["reservation"] = hc["MemoryReservation"]
    swap = hc.get("MemorySwap") or 0
    if swap > 0 or swap == -1:
        memory["swap"] = swap  # -1: unlimited swap, which runc also does when it is unset
    swappiness = hc.get("MemorySwappiness")
    if swappiness is not None and swappiness != -1:
        memory["swappiness"] = swappiness
    if hc.get("OomKillDisable") is not None:
        memory["disableOOMKiller"] = bool(hc["OomKillDisable"])
    if memory:
        out["memory"] = memory
    cpu: dict[str, Any] = {}
    shares = hc.get("CpuShares") or 0
    if shares:
        if shares < 0:
            raise InvalidParameter(
                f"invalid CPU shares ({shares}): value must be a positive integer")
        cpu["shares"] = shares
    if hc.get("CpusetCpus"):
        cpu["cpus"] = hc["CpusetCpus"]
    if hc.get("CpusetMems"):
        cpu["mems"] = hc["CpusetMems"]
    nano = hc.get("NanoCpus") or 0
    if nano > 0:
        cpu["period"] = 100000  # 100 ms, the kernel's default CFS period
        cpu["quota"] = nano * 100000 // 10**9
    if hc.get("CpuPeriod"):
        cpu["period"] = hc["CpuPeriod"]
    if hc.get("CpuQuota"):
        cpu["quota"] = hc["CpuQuota"]
    if hc.get("CpuRealtimePeriod"):
        cpu["realtimePeriod"] = hc["CpuRealtimePeriod"]
    if hc.get("CpuRealtimeRuntime"):
        cpu["realtimeRuntime"] = hc["CpuRealtimeRuntime"]
    if cpu:
        out["cpu"] = cpu
    block_io: dict[str, Any] = {}
    if hc.get("BlkioWeight"):
        block_io["weight"] = hc["BlkioWeight"]
    fields = (("weightDevice", "BlkioWeightDevice", "Weight"),
              ("throttleReadBpsDevice", "BlkioDeviceReadBps", "Rate"),
              ("throttleWriteBpsDevice", "BlkioDeviceWriteBps", "Rate"),
              ("throttleReadIOPSDevice", "BlkioDeviceReadIOps", "Rate"),
              ("throttleWriteIOPSDevice", "BlkioDeviceWriteIOps", "Rate"))
    for oci_key, docker_key, value_key in fields:
        entries = _throttle_devices(hc.get(docker_key), value_key)
        if entries:
            block_io[oci_key] = entries
    if block_io:
        out["blockIO"] = block_io
    limit = hc.get("PidsLimit")
    if limit is not None:
        # 0 and negative mean unlimited in the API; runc wants -1 for that.
        out["pids"] = {"limit": limit if limit > 0 else -1}
    return out


# --- paths ------------------------------------------------------------------------------------


def default_masked_paths() -> list[str]:
    def cpu_number(path: str) -> int:
        digits = re.search(r"/cpu(\d+)/", path)
        return int(digits.group(1)) if digits else -1

    throttles = sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/thermal_throttle"),
                       key=cpu_number)
    return DEFAULT_MASKED_PATHS + throttles


def _clear_ro(mount: dict) -> None:
    mount["options"] = [o for o in mount.get("options") or [] if o != "ro"]


def _sysctl_exists(key: str) -> bool:
    return os.path.exists("/proc/sys/" + key.replace(".", "/"))


def ensure_working_dir(rootfs: str, path: str) -> None:
    """Create the working directory inside the rootfs (root-owned, 0755) as dockerd does.

    The rootfs is untrusted: symlinks are followed by hand with the rootfs as "/"
    (like Docker's FollowSymlinkInScope), every directory is opened with
    openat2(RESOLVE_IN_ROOT) and created with mkdirat below it, so nothing outside
    the rootfs is ever touched.
    """
    from kobako.linux import syscalls

    sys = syscalls.real()
    resolve = syscalls.RESOLVE_IN_ROOT | syscalls.RESOLVE_NO_MAGICLINKS
    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    resolved: list[str] = []
    pending = posixpath.normpath("/" + path).split("/")
    links = 0
    try:
        while pending:
            name = pending.pop(0)
            if name in ("", "."):
                continue
            if name == "..":
                if resolved:
                    resolved.pop()
                continue
            parent = sys.openat2(root_fd, "/" + "/".join(resolved),
                                 os.O_PATH | os.O_DIRECTORY, 0, resolve)
            try:
                try:
                    info = os.stat(name, dir_fd=parent, follow_symlinks=False)
                except FileNotFoundError:
                    os.mkdir(name, 0o755, dir_fd=parent)
                    info = os.stat(name, dir_fd=parent, follow_symlinks=False)
                if stat.S_ISLNK(info.st_mode):
                    links += 1
                    if links > 40:
                        raise InvalidParameter(f"Cannot mkdir: {path}: too many symlinks")
                    target = os.readlink(name, dir_fd=parent)
                    if target.startswith("/"):
                        resolved = []
                    pending = target.split("/") + pending
                elif stat.S_ISDIR(info.st_mode):
                    resolved.append(name)
                else:
                    raise InvalidParameter(f"Cannot mkdir: {path} is not a directory")
            finally:
                os.close(parent)
    except OSError as err:
        raise EngineError(f"create working directory {path}: {err}") from None
    finally:
        os.close(root_fd)


# --- the spec ---------------------------------------------------------------------------------


def build_spec(*, container_id: str, config: dict, host_config: dict, image_config: dict,
               rootfs: str, bundle: str, namespaces: dict[str, str | None] | None = None,
               cgroup_parent: str = "/kobako", extra_mounts: list[dict] | None = None,
               init_path: str | None = None, seccomp_profile_json: str | None = None,
               default_ulimits: list[dict] | None = None, cgroup_mode: str | None = None,
               create_paths: bool = True) -> dict:
    """The OCI config.json dockerd would write for this container (see the module doc).

    `namespaces`: type -> None (new) or a path to join; omitted types are shared with
    the host. Default: from the HostConfig modes (`default_namespaces`).
    `seccomp_profile_json`: the daemon's own default profile in Docker's format, used
    when the container names none (Docker's built-in one otherwise).
    `create_paths`: create missing `-v` bind sources and the working directory, as
    dockerd does at start (tests of the pure conversion turn it off).
    `config`: the raw create request's Config with `image_config`, or the Config as
    stored at create (already `merge_config`ed) with image_config={} - merging a stored
    config with the image again would bring back an Entrypoint `--entrypoint ""` reset.
    `extra_mounts`: OCI mounts from the volumes/network code (volumes, /etc/hosts,
    /etc/resolv.conf, and /dev/shm for IpcMode shareable or container:<id>); a user's
    bind or tmpfs at the same destination wins. IpcMode host binds the host's /dev/shm.
    `bundle` is where config.json goes; the spec itself does not refer to it.
    """
    del bundle  # part of the interface for the caller's symmetry; nothing refers to it
    hc = adapt_host_config(host_config, cgroup_mode)
    merged = merge_config(config, image_config)
    privileged = bool(hc.get("Privileged"))
    if namespaces is None:
        namespaces = default_namespaces(hc, cgroup_mode)
    namespaces = dict(namespaces)
    for kind in namespaces:
        if kind not in _NAMESPACE_ORDER:
            raise EngineError(f"unknown namespace type {kind!r}")
    security = parse_security_opts(hc.get("SecurityOpt") or [])

    # process: args, cwd, env, user, terminal (WithCommonOptions, WithUser)
    args = resolve_command(merged)
    mounts_init: list[dict] = []
    pid_private = "pid" in namespaces and not namespaces["pid"]
    if hc.get("Init") and pid_private:
        if not init_path:
            raise EngineError("Init is set but no init binary is configured (docker-init)")
        args = [INIT_IN_CONTAINER, "--", *args]
        mounts_init.append({"destination": INIT_IN_CONTAINER, "type": "bind",
                            "source": init_path, "options": ["bind", "ro"]})
    uts_private = "uts" in namespaces and not namespaces["uts"]
    hostname = merged.get("Hostname") or container_id[:12]
    cwd = merged.get("WorkingDir") or "/"
    if not cwd.startswith("/"):
        raise InvalidParameter(
            f"the working directory '{cwd}' is invalid, it needs to be an absolute path")
    if create_paths and cwd != "/":
        ensure_working_dir(rootfs, cwd)
    uid, gid, additional = users.resolve_user(rootfs, merged.get("User") or "",
                                              hc.get("GroupAdd") or [])
    caplist = capabilities_for(hc)
    process: dict[str, Any] = {
        "terminal": bool(merged.get("Tty")),
        "user": {"uid": uid, "gid": gid, "additionalGids": additional},
        "args": args,
        "env": merged_env(merged, None, hostname=hostname),
        "cwd": cwd,
        "capabilities": _capability_sets(caplist, uid),
        "rlimits": rlimits(hc.get("Ulimits") or [], default_ulimits),
        "oomScoreAdj": int(hc.get("OomScoreAdj") or 0),
    }
    if security.no_new_privileges:
        process["noNewPrivileges"] = True
    console = hc.get("ConsoleSize") or [0, 0]
    if merged.get("Tty") and len(console) == 2 and any(console):
        process["consoleSize"] = {"height": int(console[0]), "width": int(console[1])}

    # linux: cgroups, resources, devices (WithCgroups, WithResources, WithDevices)
    linux: dict[str, Any] = {
        "cgroupsPath": posixpath.join(hc.get("CgroupParent") or cgroup_parent, container_id),
        "namespaces": _namespace_list(namespaces),
    }
    res = resources(hc)
    devices: list[dict] = []
    if privileged:
        devices = host_devices()
        for mapping in hc.get("Devices") or []:
            on_host = mapping.get("PathOnHost") or ""
            in_container = mapping.get("PathInContainer") or on_host
            if (mapping.get("CgroupPermissions") or "rwm") != "rwm":
                log.warning("custom %s permissions for device %s are ignored in privileged "
                            "mode", mapping.get("CgroupPermissions"), on_host)
            if on_host == in_container:
                continue  # already there with all of /dev
            devices += devices_from_path(on_host, in_container, "rwm")[0]
        res["devices"] = [{"allow": True, "access": "rwm"}]
    else:
        rules = copy.deepcopy(DEFAULT_DEVICE_RULES)
        for mapping in hc.get("Devices") or []:
            on_host = mapping.get("PathOnHost") or ""
            permissions = _device_permissions(mapping)
            found, found_rules = devices_from_path(
                on_host, mapping.get("PathInContainer") or on_host, permissions)
            devices += found
            rules += found_rules
        rules += device_cgroup_rules(hc.get("DeviceCgroupRules") or [])
        res["devices"] = rules
    if devices:
        linux["devices"] = devices
    linux["resources"] = res

    # sysctls: the defaults Docker adds for a new network namespace, then the user's
    sysctls: dict[str, str] = {}
    if "network" in namespaces and not namespaces["network"]:
        if _sysctl_exists("net.ipv4.ping_group_range"):
            sysctls["net.ipv4.ping_group_range"] = "0 2147483647"  # ping without NET_RAW
        if _sysctl_exists("net.ipv4.ip_unprivileged_port_start"):
            sysctls["net.ipv4.ip_unprivileged_port_start"] = "0"
    user_sysctls = {str(k): str(v) for k, v in (hc.get("Sysctls") or {}).items()}
    validate_sysctls(user_sysctls, namespaces)
    sysctls.update(user_sysctls)
    if sysctls:
        linux["sysctl"] = sysctls

    # seccomp (WithSeccomp): none when privileged or unconfined
    profile = security.seccomp
    if privileged or profile == "unconfined":
        pass
    elif profile and profile != "builtin":
        filt = seccomp_from_docker_profile(profile, caplist)
        if filt is not None:
            linux["seccomp"] = filt
    elif seccomp_profile_json and profile != "builtin":
        filt = seccomp_from_docker_profile(seccomp_profile_json, caplist)
        if filt is not None:
            linux["seccomp"] = filt
    else:
        linux["seccomp"] = seccomp_default.default_profile(caplist)

    # masked and read-only paths: Docker's, or the HostConfig's own lists
    if not privileged:
        masked = hc.get("MaskedPaths")
        readonly = hc.get("ReadonlyPaths")
        linux["maskedPaths"] = list(masked) if masked is not None else default_masked_paths()
        linux["readonlyPaths"] = (list(readonly) if readonly is not None
                                  else list(DEFAULT_READONLY_PATHS))

    # mounts (WithMounts)
    mine = user_mounts(hc, extra_mounts, create_sources=create_paths)
    ipc_mode = hc.get("IpcMode") or "private"
    if ipc_mode == "host" and not any(m["destination"] == "/dev/shm" for m in mine):
        mine.append({"destination": "/dev/shm", "type": "bind", "source": "/dev/shm",
                     "options": ["rbind", "rprivate"]})
        mine.sort(key=_depth)
    mine_destinations = {posixpath.normpath(m["destination"]) for m in mine}
    user_dev = "/dev" in mine_destinations
    mounts: list[dict] = []
    for default in copy.deepcopy(_DEFAULT_MOUNTS) + mounts_init:
        destination = default["destination"]
        if destination in mine_destinations:
            continue
        if user_dev and destination.startswith("/dev/"):
            continue
        if destination == "/dev/shm":
            if ipc_mode == "none":
                continue
            default["options"].append(f"size={int(hc.get('ShmSize') or DEFAULT_SHM_SIZE)}")
        mounts.append(default)
    if hc.get("ReadonlyRootfs"):
        for mount in mounts:
            if mount["destination"] in ("/proc", "/dev/pts", "/dev/shm", "/dev/mqueue", "/dev"):
                continue
            if "ro" not in mount["options"]:
                mount["options"].append("ro")
    mounts += mine
    if privileged:
        for mount in mounts:
            if mount["destination"] == "/sys":
                _clear_ro(mount)
    if privileged or security.writable_cgroups:
        for mount in mounts:
            if mount.get("type") == "cgroup":
                _clear_ro(mount)

    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": rootfs, "readonly": bool(hc.get("ReadonlyRootfs"))},
    }
    if uts_private:
        spec["hostname"] = hostname
        if merged.get("Domainname"):
            spec["domainname"] = merged["Domainname"]
    spec["mounts"] = mounts
    spec["linux"] = linux
    # Docker passes HostConfig.Annotations through and sets no others.
    spec["annotations"] = {str(k): str(v) for k, v in (hc.get("Annotations") or {}).items()}
    return spec


def exec_process(*, container_spec: dict, exec_config: dict, container_config: dict,
                 host_config: dict, rootfs: str) -> dict:
    """The OCI process of `docker exec` (daemon/exec.go + exec_linux.go).

    Starts from the container's own process (caps, rlimits, NNP, OOM score), then the
    exec's Cmd, env (the container's daemon env with the exec's Env over it), working
    dir and user (the exec's or the container's, resolved again), tty; privileged gets
    every capability.
    """
    process = copy.deepcopy(container_spec.get("process") or {})
    command = list(exec_config.get("Cmd") or [])
    if not command:
        raise InvalidParameter("No exec command specified")
    tty = bool(exec_config.get("Tty"))
    hostname = container_spec.get("hostname") or container_config.get("Hostname") or ""
    defaults = [f"PATH={DEFAULT_PATH_ENV}", f"HOSTNAME={hostname}"]
    if tty:
        defaults.append("TERM=xterm")
    env = replace_or_append_env(defaults, list(container_config.get("Env") or []))
    process["env"] = replace_or_append_env(env, list(exec_config.get("Env") or []))
    process["args"] = command
    process["cwd"] = exec_config.get("WorkingDir") or container_config.get("WorkingDir") or "/"
    process["terminal"] = tty
    process.pop("consoleSize", None)
    user = exec_config.get("User") or container_config.get("User") or ""
    if user:
        uid, gid, additional = users.resolve_user(rootfs, user, host_config.get("GroupAdd") or [])
        process["user"] = {"uid": uid, "gid": gid, "additionalGids": additional}
    if exec_config.get("Privileged"):
        every = all_capabilities()
        process["capabilities"] = {"bounding": every, "effective": every, "permitted": every}
    return process


def write_config(bundle: str, spec: dict) -> str:
    """Write `spec` as <bundle>/config.json atomically. Not fsynced: it is written anew
    at every start, so a power loss costs nothing, and a start is not kept waiting."""
    from kobako.linux.files import write_atomic

    os.makedirs(bundle, exist_ok=True)
    path = os.path.join(bundle, "config.json")
    write_atomic(path, json.dumps(spec, indent=1), fsync=False)
    return path
