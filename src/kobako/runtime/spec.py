"""The OCI runtime spec (config.json): the default document and its validation.

`default_spec()` is what `kobako-runtime spec` writes: the same content as
`runc spec` (runc's libcontainer/specconv/example.go), with hostname "kobako".
Like current runc, the capabilities have no ambient set and /sys/devices/virtual/tpm
is masked.

`validate(config)` rejects a config the runtime cannot run, with one precise
line naming the field, before any process is created.
"""

from __future__ import annotations

import os
import re

from kobako.linux import capabilities, seccomp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

OCI_VERSION = "1.0.2-dev"

_DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]

_DEFAULT: dict[str, Any] = {
    "ociVersion": OCI_VERSION,
    "process": {
        "terminal": True,
        "user": {"uid": 0, "gid": 0},
        "args": ["sh"],
        "env": [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "TERM=xterm",
        ],
        "cwd": "/",
        "capabilities": {
            "bounding": _DEFAULT_CAPS,
            "effective": _DEFAULT_CAPS,
            "permitted": _DEFAULT_CAPS,
        },
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "kobako",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ],
    "linux": {
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "namespaces": [
            {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"},
            {"type": "mount"},
        ],
        "maskedPaths": [
            "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
            "/proc/scsi", "/sys/devices/virtual/tpm",
        ],
        "readonlyPaths": [
            "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
        ],
    },
}


def _cgroup2_unified() -> bool:
    return os.path.exists("/sys/fs/cgroup/cgroup.controllers")


def default_spec(rootless: bool = False) -> dict[str, Any]:
    """The config.json `runc spec [--rootless]` writes (hostname "kobako")."""
    import copy

    spec = copy.deepcopy(_DEFAULT)
    linux = spec["linux"]
    if _cgroup2_unified():
        # runc adds a cgroup namespace on a pure cgroup v2 host.
        linux["namespaces"].append({"type": "cgroup"})
    if rootless:
        _to_rootless(spec)
    return spec


def _to_rootless(spec: dict[str, Any]) -> None:
    """runc's specconv.ToRootless: user namespace, own-id mappings, no netns, no cgroups."""
    linux = spec["linux"]
    linux["namespaces"] = [
        ns for ns in linux["namespaces"] if ns["type"] not in ("network", "user")
    ] + [{"type": "user"}]
    linux["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    mounts = []
    for mount in spec["mounts"]:
        if os.path.normpath(mount["destination"]) == "/sys":
            # A user namespace cannot mount sysfs: bind the host's read-only instead.
            mounts.append({"destination": "/sys", "type": "none", "source": "/sys",
                           "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
            continue
        if "options" in mount:
            mount["options"] = [o for o in mount["options"]
                                if not o.startswith(("gid=", "uid="))]
        mounts.append(mount)
    spec["mounts"] = mounts
    linux.pop("resources", None)


# --- validation ------------------------------------------------------------------


class SpecError(ValueError):
    """A config.json the runtime cannot run; the message names the field."""


NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")

RLIMITS = (
    "RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE", "RLIMIT_LOCKS",
    "RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_NOFILE", "RLIMIT_NPROC",
    "RLIMIT_RSS", "RLIMIT_RTPRIO", "RLIMIT_RTTIME", "RLIMIT_SIGPENDING", "RLIMIT_STACK",
)

HOOK_NAMES = (
    "prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop",
)

_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)(-[0-9A-Za-z.+-]+)?(\+[0-9A-Za-z.-]+)?$")
_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1


def _fail(field: str, problem: str) -> None:
    raise SpecError(f"{field}: {problem}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _typed(parent: dict[str, Any], key: str, field: str, kind: type, what: str,
           required: bool) -> Any:
    value = parent.get(key)
    if value is None:
        if required:
            _fail(field, "missing")
        return None
    if not isinstance(value, kind):
        _fail(field, f"must be {what}, got {type(value).__name__}")
    return value


def _obj(parent: dict[str, Any], key: str, field: str, required: bool = False) -> dict | None:
    return _typed(parent, key, field, dict, "an object", required)


def _list(parent: dict[str, Any], key: str, field: str) -> list:
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        _fail(field, f"must be a list, got {type(value).__name__}")
    return value


def _str(parent: dict[str, Any], key: str, field: str, required: bool = False) -> str | None:
    return _typed(parent, key, field, str, "a string", required)


def _bool(parent: dict[str, Any], key: str, field: str) -> None:
    value = parent.get(key)
    if value is not None and not isinstance(value, bool):
        _fail(field, f"must be true or false, got {value!r}")


def _uint(parent: dict[str, Any], key: str, field: str, top: int = _U32,
          required: bool = False) -> int | None:
    value = parent.get(key)
    if value is None:
        if required:
            _fail(field, "missing")
        return None
    if not _is_int(value) or not 0 <= value <= top:
        _fail(field, f"must be an integer from 0 to {top}, got {value!r}")
    return value


def _strings(parent: dict[str, Any], key: str, field: str) -> list[str]:
    values = _list(parent, key, field)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            _fail(f"{field}[{i}]", f"must be a string, got {type(value).__name__}")
    return values


def _abs_path(value: str, field: str) -> None:
    if not value.startswith("/"):
        _fail(field, f"must be an absolute path, got {value!r}")


def validate(config: Any, need_process: bool = True) -> None:
    """Raise SpecError if `config` (a parsed config.json) cannot be run.

    `need_process` is False for operations that only read the container's
    static part (e.g. `delete` of a bundle); `create` needs a process.
    """
    if not isinstance(config, dict):
        _fail("config", "must be a JSON object")
    _validate_version(config)
    root = _obj(config, "root", "root", required=True)
    assert root is not None
    path = _str(root, "path", "root.path", required=True)
    if not path:
        _fail("root.path", "must not be empty")
    _bool(root, "readonly", "root.readonly")
    _str(config, "hostname", "hostname")
    _str(config, "domainname", "domainname")
    process = _obj(config, "process", "process", required=need_process)
    if process is not None:
        _validate_process(process)
    for i, mount in enumerate(_list(config, "mounts", "mounts")):
        _validate_mount(mount, f"mounts[{i}]")
    hooks = _obj(config, "hooks", "hooks")
    if hooks is not None:
        _validate_hooks(hooks)
    annotations = _obj(config, "annotations", "annotations")
    for key, value in (annotations or {}).items():
        if not isinstance(value, str):
            _fail(f"annotations[{key!r}]", "must be a string")
    linux = _obj(config, "linux", "linux")
    _validate_linux(linux or {}, config)


def _validate_version(config: dict[str, Any]) -> None:
    version = _str(config, "ociVersion", "ociVersion", required=True)
    assert version is not None
    match = _VERSION.match(version)
    if not match:
        _fail("ociVersion", f"must be a semantic version like \"1.0.2\", got {version!r}")
    if match.group(1) != "1":
        _fail("ociVersion", f"unsupported major version in {version!r} (need 1.x)")


def _validate_process(process: dict[str, Any]) -> None:
    args = process.get("args")
    if (not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args)):
        _fail("process.args", "must be a non-empty list of strings")
    if not args[0]:
        _fail("process.args[0]", "must not be empty")
    for i, entry in enumerate(_strings(process, "env", "process.env")):
        name, eq, _ = entry.partition("=")
        if not eq or not name:
            _fail(f"process.env[{i}]", f"must be \"KEY=value\", got {entry!r}")
    cwd = _str(process, "cwd", "process.cwd", required=True)
    assert cwd is not None
    _abs_path(cwd, "process.cwd")
    _bool(process, "terminal", "process.terminal")
    _bool(process, "noNewPrivileges", "process.noNewPrivileges")
    _str(process, "apparmorProfile", "process.apparmorProfile")
    _str(process, "selinuxLabel", "process.selinuxLabel")
    console = _obj(process, "consoleSize", "process.consoleSize")
    if console is not None:
        _uint(console, "height", "process.consoleSize.height")
        _uint(console, "width", "process.consoleSize.width")
    oom = process.get("oomScoreAdj")
    if oom is not None and (not _is_int(oom) or not -1000 <= oom <= 1000):
        _fail("process.oomScoreAdj", f"must be an integer from -1000 to 1000, got {oom!r}")
    user = _obj(process, "user", "process.user")
    if user is not None:
        _uint(user, "uid", "process.user.uid")
        _uint(user, "gid", "process.user.gid")
        _uint(user, "umask", "process.user.umask", top=0o7777)
        for i, gid in enumerate(_list(user, "additionalGids", "process.user.additionalGids")):
            if not _is_int(gid) or not 0 <= gid <= _U32:
                _fail(f"process.user.additionalGids[{i}]", f"must be a gid, got {gid!r}")
        _str(user, "username", "process.user.username")
    caps = _obj(process, "capabilities", "process.capabilities")
    if caps is not None:
        for key in caps:
            field = f"process.capabilities.{key}"
            if key not in capabilities.SETS:
                _fail(field, "unknown capability set (valid: " + ", ".join(capabilities.SETS) + ")")
            for name in _strings(caps, key, field):
                try:
                    capabilities.cap_number(name)
                except capabilities.CapabilityError as e:
                    _fail(field, str(e))
    seen: set[str] = set()
    for i, rlimit in enumerate(_list(process, "rlimits", "process.rlimits")):
        field = f"process.rlimits[{i}]"
        if not isinstance(rlimit, dict):
            _fail(field, "must be an object")
        kind = _str(rlimit, "type", f"{field}.type", required=True)
        if kind not in RLIMITS:
            _fail(f"{field}.type", f"unknown rlimit {kind!r}")
        if kind in seen:
            _fail(f"{field}.type", f"duplicate rlimit {kind}")
        seen.add(kind)  # type: ignore[arg-type]
        hard = _uint(rlimit, "hard", f"{field}.hard", top=_U64, required=True)
        soft = _uint(rlimit, "soft", f"{field}.soft", top=_U64, required=True)
        assert hard is not None and soft is not None
        if soft > hard:
            _fail(field, f"{kind} soft limit {soft} is above its hard limit {hard}")


def _validate_mount(mount: Any, field: str) -> None:
    if not isinstance(mount, dict):
        _fail(field, "must be an object")
    destination = _str(mount, "destination", f"{field}.destination", required=True)
    assert destination is not None
    if not destination:
        _fail(f"{field}.destination", "must not be empty")
    _abs_path(destination, f"{field}.destination")
    _str(mount, "type", f"{field}.type")
    _str(mount, "source", f"{field}.source")
    _strings(mount, "options", f"{field}.options")
    for key in ("uidMappings", "gidMappings"):
        _validate_mappings(_list(mount, key, f"{field}.{key}"), f"{field}.{key}")


def _validate_hooks(hooks: dict[str, Any]) -> None:
    for name in hooks:
        if name not in HOOK_NAMES:
            _fail(f"hooks.{name}", "unknown hook (valid: " + ", ".join(HOOK_NAMES) + ")")
        for i, hook in enumerate(_list(hooks, name, f"hooks.{name}")):
            field = f"hooks.{name}[{i}]"
            if not isinstance(hook, dict):
                _fail(field, "must be an object")
            path = _str(hook, "path", f"{field}.path", required=True)
            assert path is not None
            _abs_path(path, f"{field}.path")
            _strings(hook, "args", f"{field}.args")
            _strings(hook, "env", f"{field}.env")
            timeout = hook.get("timeout")
            if timeout is not None and (not _is_int(timeout) or timeout <= 0):
                _fail(f"{field}.timeout", f"must be a positive number of seconds, got {timeout!r}")


def _validate_mappings(mappings: list, field: str) -> None:
    ranges: dict[str, list[tuple[int, int]]] = {"containerID": [], "hostID": []}
    for i, mapping in enumerate(mappings):
        where = f"{field}[{i}]"
        if not isinstance(mapping, dict):
            _fail(where, "must be an object")
        size = _uint(mapping, "size", f"{where}.size", required=True)
        if size == 0:
            _fail(f"{where}.size", "must be greater than 0")
        for key in ranges:
            start = _uint(mapping, key, f"{where}.{key}", required=True)
            assert start is not None and size is not None
            if start + size - 1 > _U32:
                _fail(where, f"{key} range {start}+{size} goes past 4294967295")
            for other_start, other_size in ranges[key]:
                if start < other_start + other_size and other_start < start + size:
                    _fail(where, f"{key} range {start}-{start + size - 1} overlaps "
                                 f"{other_start}-{other_start + other_size - 1}")
            ranges[key].append((start, size))


def _validate_linux(linux: dict[str, Any], config: dict[str, Any]) -> None:
    namespaces: dict[str, dict[str, Any]] = {}
    for i, ns in enumerate(_list(linux, "namespaces", "linux.namespaces")):
        field = f"linux.namespaces[{i}]"
        if not isinstance(ns, dict):
            _fail(field, "must be an object")
        kind = _str(ns, "type", f"{field}.type", required=True)
        if kind not in NAMESPACE_TYPES:
            _fail(f"{field}.type", f"unknown namespace type {kind!r} "
                                   f"(valid: {', '.join(NAMESPACE_TYPES)})")
        if kind in namespaces:
            _fail(f"{field}.type", f"duplicate namespace type {kind!r}")
        path = _str(ns, "path", f"{field}.path")
        if path:
            _abs_path(path, f"{field}.path")
        namespaces[kind] = ns  # type: ignore[index]

    uid_maps = _list(linux, "uidMappings", "linux.uidMappings")
    gid_maps = _list(linux, "gidMappings", "linux.gidMappings")
    _validate_mappings(uid_maps, "linux.uidMappings")
    _validate_mappings(gid_maps, "linux.gidMappings")
    userns = namespaces.get("user")
    if (uid_maps or gid_maps) and userns is None:
        _fail("linux.uidMappings" if uid_maps else "linux.gidMappings",
              "id mappings need a user namespace (add {\"type\": \"user\"} to linux.namespaces)")
    if userns is not None and not userns.get("path"):
        if not uid_maps:
            _fail("linux.uidMappings", "a new user namespace needs at least one uid mapping")
        if not gid_maps:
            _fail("linux.gidMappings", "a new user namespace needs at least one gid mapping")

    if config.get("hostname") and "uts" not in namespaces:
        _fail("hostname", "setting the hostname needs a private UTS namespace")
    if config.get("domainname") and "uts" not in namespaces:
        _fail("domainname", "setting the domainname needs a private UTS namespace")

    for key in ("maskedPaths", "readonlyPaths"):
        for i, path in enumerate(_strings(linux, key, f"linux.{key}")):
            _abs_path(path, f"linux.{key}[{i}]")
    sysctl = _obj(linux, "sysctl", "linux.sysctl")
    for key, value in (sysctl or {}).items():
        if not isinstance(value, str):
            _fail(f"linux.sysctl[{key!r}]", f"must be a string, got {type(value).__name__}")
    _str(linux, "cgroupsPath", "linux.cgroupsPath")
    _str(linux, "rootfsPropagation", "linux.rootfsPropagation")
    propagation = linux.get("rootfsPropagation")
    if propagation and propagation not in (
        "private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable",
        "runbindable",
    ):
        _fail("linux.rootfsPropagation", f"unknown propagation {propagation!r}")
    for i, device in enumerate(_list(linux, "devices", "linux.devices")):
        _validate_device(device, f"linux.devices[{i}]")
    resources = _obj(linux, "resources", "linux.resources")
    if resources is not None:
        _validate_resources(resources)
    seccomp_cfg = linux.get("seccomp")
    if seccomp_cfg is not None:
        try:
            seccomp.validate(seccomp_cfg)
        except seccomp.SeccompError as e:
            raise SpecError(str(e)) from None


def _validate_device(device: Any, field: str) -> None:
    if not isinstance(device, dict):
        _fail(field, "must be an object")
    path = _str(device, "path", f"{field}.path", required=True)
    assert path is not None
    _abs_path(path, f"{field}.path")
    kind = _str(device, "type", f"{field}.type", required=True)
    if kind not in ("c", "b", "u", "p"):
        _fail(f"{field}.type", f"must be one of c, b, u, p, got {kind!r}")
    if kind != "p":
        _uint(device, "major", f"{field}.major", top=_U64, required=True)
        _uint(device, "minor", f"{field}.minor", top=_U64, required=True)
    _uint(device, "fileMode", f"{field}.fileMode", top=0o177777)
    _uint(device, "uid", f"{field}.uid")
    _uint(device, "gid", f"{field}.gid")


def _validate_resources(resources: dict[str, Any]) -> None:
    for i, rule in enumerate(_list(resources, "devices", "linux.resources.devices")):
        field = f"linux.resources.devices[{i}]"
        if not isinstance(rule, dict):
            _fail(field, "must be an object")
        if not isinstance(rule.get("allow"), bool):
            _fail(f"{field}.allow", "must be true or false")
        kind = _str(rule, "type", f"{field}.type")
        if kind is not None and kind not in ("a", "b", "c", ""):
            _fail(f"{field}.type", f"must be one of a, b, c, got {kind!r}")
        access = _str(rule, "access", f"{field}.access")
        if access and not set(access) <= set("rwm"):
            _fail(f"{field}.access", f"must be letters from \"rwm\", got {access!r}")
        for key in ("major", "minor"):
            value = rule.get(key)
            if value is not None and (not _is_int(value) or value < -1):
                _fail(f"{field}.{key}", f"must be a device number or -1, got {value!r}")
    memory = _obj(resources, "memory", "linux.resources.memory")
    for key in ("limit", "reservation", "swap", "kernel", "kernelTCP"):
        value = (memory or {}).get(key)
        if value is not None and (not _is_int(value) or value < -1):
            _fail(f"linux.resources.memory.{key}", f"must be bytes or -1, got {value!r}")
    pids = _obj(resources, "pids", "linux.resources.pids")
    limit = (pids or {}).get("limit")
    if limit is not None and not _is_int(limit):
        _fail("linux.resources.pids.limit", f"must be an integer, got {limit!r}")
    cpu = _obj(resources, "cpu", "linux.resources.cpu")
    for key in ("shares", "period", "realtimePeriod"):
        _uint(cpu or {}, key, f"linux.resources.cpu.{key}", top=_U64)
    for key in ("quota", "realtimeRuntime"):
        value = (cpu or {}).get(key)
        if value is not None and not _is_int(value):
            _fail(f"linux.resources.cpu.{key}", f"must be an integer, got {value!r}")
    for key in ("cpus", "mems"):
        _str(cpu or {}, key, f"linux.resources.cpu.{key}")
