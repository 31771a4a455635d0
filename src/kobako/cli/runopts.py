"""`run`/`create` flags -> the Engine API's container create body, as docker's CLI builds it.

Pure functions (no I/O apart from --env-file/--label-file reads), so every flag's
translation is unit-tested without a daemon.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import click

from kobako.cli.util import CLIError

_RAM_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4,
              "p": 1024 ** 5}


def ram_in_bytes(value: str) -> int:
    """docker's units.RAMInBytes: binary multiples, optional trailing b (e.g. 512m, 1GB)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*", value.lower())
    if not m:
        raise CLIError(f"invalid size: '{value}'", 125)
    return int(float(m.group(1)) * _RAM_UNITS[m.group(2)])


def memory_value(value: str | None) -> int | None:
    if value is None:
        return None
    if value.strip() == "-1":
        return -1
    return ram_in_bytes(value)


def parse_env_file(path: str) -> list[str]:
    out = []
    try:
        with open(path) as f:
            for raw in f:
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                if "=" not in line:
                    val = os.environ.get(line)
                    if val is not None:
                        out.append(f"{line}={val}")
                    continue
                out.append(raw.rstrip("\n").lstrip())
    except OSError as exc:
        raise CLIError(f"open {path}: {exc.strerror}", 125) from exc
    return out


def parse_env(values: Iterable[str], files: Iterable[str]) -> list[str]:
    """--env-file first, then -e; a bare KEY takes the caller's value (or is dropped)."""
    out: list[str] = []
    for path in files:
        out.extend(parse_env_file(path))
    for v in values:
        if "=" in v:
            out.append(v)
        elif v in os.environ:
            out.append(f"{v}={os.environ[v]}")
    return out


def parse_labels(values: Iterable[str], files: Iterable[str]) -> dict[str, str]:
    items = []
    for path in files:
        items.extend(parse_env_file(path))
    items.extend(values)
    out = {}
    for item in items:
        k, _, v = item.partition("=")
        out[k] = v
    return out


def parse_ulimit(spec: str) -> dict[str, Any]:
    m = re.fullmatch(r"([a-z]+)=(-?\d+)(?::(-?\d+))?", spec)
    if not m:
        raise CLIError(f"invalid ulimit argument: {spec}", 125)
    soft = int(m.group(2))
    hard = int(m.group(3)) if m.group(3) is not None else soft
    if soft > hard and hard != -1:
        raise CLIError(f"ulimit soft limit must be less than or equal to hard limit: {spec}",
                       125)
    return {"Name": m.group(1), "Soft": soft, "Hard": hard}


def parse_kv(values: Iterable[str], what: str) -> dict[str, str]:
    out = {}
    for v in values:
        if "=" not in v:
            raise CLIError(f"invalid {what} format: {v} (expected key=value)", 125)
        k, val = v.split("=", 1)
        out[k] = val
    return out


def parse_tmpfs(values: Iterable[str]) -> dict[str, str]:
    out = {}
    for v in values:
        path, _, opts = v.partition(":")
        if not path.startswith("/"):
            raise CLIError(f"invalid tmpfs path {path!r}: must be absolute", 125)
        out[path] = opts
    return out


def parse_device(spec: str) -> dict[str, str]:
    parts = spec.split(":")
    host = parts[0]
    container, perms = host, "rwm"
    if len(parts) == 2:
        if re.fullmatch(r"[rwm]+", parts[1]):
            perms = parts[1]
        else:
            container = parts[1]
    elif len(parts) == 3:
        container, perms = parts[1], parts[2]
    elif len(parts) > 3:
        raise CLIError(f"invalid device specification: {spec}", 125)
    return {"PathOnHost": host, "PathInContainer": container, "CgroupPermissions": perms}


def parse_throttle(values: Iterable[str], rate: Callable[[str], int]) -> list[dict[str, Any]]:
    out = []
    for v in values:
        path, _, r = v.rpartition(":")
        if not path:
            raise CLIError(f"bad format: {v} (expected device:rate)", 125)
        out.append({"Path": path, "Rate": rate(r)})
    return out


def parse_weight_device(values: Iterable[str]) -> list[dict[str, Any]]:
    out = []
    for v in values:
        path, _, w = v.rpartition(":")
        if not path or not w.isdigit():
            raise CLIError(f"invalid weight device: {v}", 125)
        out.append({"Path": path, "Weight": int(w)})
    return out


def parse_restart(spec: str | None) -> dict[str, Any] | None:
    if not spec:
        return None
    name, _, count = spec.partition(":")
    if name not in ("no", "always", "unless-stopped", "on-failure"):
        raise CLIError(f"invalid restart policy {spec!r}", 125)
    if count and name != "on-failure":
        raise CLIError(f"maximum retry count cannot be used with restart policy '{name}'",
                       125)
    try:
        retries = int(count) if count else 0
    except ValueError as exc:
        raise CLIError(f"invalid restart policy retry count {count!r}", 125) from exc
    return {"Name": name, "MaximumRetryCount": retries}


def parse_volume(spec: str, binds: list[str], volumes: dict[str, dict]) -> None:
    """-v: `/path` (anonymous volume), `src:/dst[:opts]` (bind or named volume)."""
    parts = spec.split(":")
    if len(parts) == 1:
        if not spec.startswith("/"):
            raise CLIError(f"invalid volume specification: '{spec}'", 125)
        volumes[spec] = {}
        return
    if len(parts) > 3:
        raise CLIError(f"invalid volume specification: '{spec}'", 125)
    src, dst = parts[0], parts[1]
    if not dst.startswith("/"):
        raise CLIError(f"invalid volume specification: '{spec}': destination must be absolute",
                       125)
    if src.startswith(".") or (src and not src.startswith("/") and "/" in src):
        src = os.path.abspath(src)
    binds.append(":".join([src, dst] + parts[2:]))


_MOUNT_KEYS = {"type", "source", "src", "target", "destination", "dst", "readonly", "ro",
               "bind-propagation", "volume-nocopy", "tmpfs-size", "tmpfs-mode", "volume-opt",
               "consistency", "volume-driver", "volume-label", "bind-recursive"}


def parse_mount(spec: str) -> dict[str, Any]:
    fields: dict[str, str] = {}
    for part in spec.split(","):
        k, sep, v = part.partition("=")
        k = k.strip().lower()
        if k not in _MOUNT_KEYS:
            raise CLIError(f"unexpected key '{k}' in '{part}'", 125)
        fields[k] = v if sep else "true"
    mtype = fields.get("type", "volume")
    target = fields.get("target") or fields.get("destination") or fields.get("dst")
    if not target:
        raise CLIError("target is required", 125)
    m: dict[str, Any] = {"Type": mtype, "Target": target}
    source = fields.get("source") or fields.get("src")
    if source:
        m["Source"] = source
    ro = fields.get("readonly", fields.get("ro"))
    if ro is not None:
        m["ReadOnly"] = ro.lower() in ("true", "1", "")
    if mtype == "bind":
        if not source:
            raise CLIError("source is required when specifying bind mounts", 125)
        if "bind-propagation" in fields:
            m["BindOptions"] = {"Propagation": fields["bind-propagation"]}
    elif mtype == "tmpfs":
        if source:
            raise CLIError("source is not supported for tmpfs mounts", 125)
        opts: dict[str, Any] = {}
        if "tmpfs-size" in fields:
            opts["SizeBytes"] = ram_in_bytes(fields["tmpfs-size"])
        if "tmpfs-mode" in fields:
            opts["Mode"] = int(fields["tmpfs-mode"], 8)
        if opts:
            m["TmpfsOptions"] = opts
    elif mtype == "volume":
        if fields.get("volume-nocopy"):
            m["VolumeOptions"] = {"NoCopy": fields["volume-nocopy"].lower() in ("true", "1")}
    else:
        raise CLIError(f"invalid mount type {mtype!r}", 125)
    return m


def _port_range(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-", 1)
        lo, hi = int(a), int(b)
        if hi < lo:
            raise ValueError(text)
        return list(range(lo, hi + 1))
    return [int(text)]


def parse_publish(specs: Iterable[str], exposed: dict[str, dict],
                  bindings: dict[str, list[dict[str, str]]]) -> None:
    """-p [ip:][hostPort:]containerPort[/proto], with ranges."""
    for spec in specs:
        proto = "tcp"
        body = spec
        if "/" in spec.rsplit(":", 1)[-1]:
            body, proto = spec.rsplit("/", 1)
        ip, host = "", ""
        if body.startswith("["):  # [v6]:host:ctr
            end = body.index("]")
            ip, rest = body[1:end], body[end + 2:]
            host, _, ctr = rest.rpartition(":")
        else:
            parts = body.split(":")
            if len(parts) == 1:
                ctr = parts[0]
            elif len(parts) == 2:
                host, ctr = parts
            elif len(parts) == 3:
                ip, host, ctr = parts
            else:
                raise CLIError(f"invalid port format: {spec}", 125)
        try:
            ctr_ports = _port_range(ctr)
            host_ports = _port_range(host) if host else []
        except ValueError as exc:
            raise CLIError(f"invalid port format: {spec}", 125) from exc
        if host_ports and len(host_ports) != len(ctr_ports) and len(host_ports) != 1:
            raise CLIError(f"invalid ranges specified for container and host ports: {spec}",
                           125)
        for i, cport in enumerate(ctr_ports):
            key = f"{cport}/{proto}"
            exposed[key] = {}
            hp = ""
            if host_ports:
                hp = str(host_ports[i] if len(host_ports) == len(ctr_ports) else host_ports[0])
                if len(host_ports) == 1 and len(ctr_ports) > 1:
                    hp = f"{host_ports[0]}"
            bindings.setdefault(key, []).append({"HostIp": ip, "HostPort": hp})


def parse_expose(specs: Iterable[str], exposed: dict[str, dict]) -> None:
    for spec in specs:
        port, _, proto = spec.partition("/")
        try:
            for p in _port_range(port):
                exposed[f"{p}/{proto or 'tcp'}"] = {}
        except ValueError as exc:
            raise CLIError(f"invalid range format for --expose: {spec}", 125) from exc


def build_create_body(o: Mapping[str, Any], image: str,
                      command: list[str]) -> dict[str, Any]:
    """The POST /containers/create body for `run`/`create` options `o`."""
    exposed: dict[str, dict] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    parse_publish(o.get("publish") or (), exposed, bindings)
    parse_expose(o.get("expose") or (), exposed)
    binds: list[str] = []
    volumes: dict[str, dict] = {}
    for v in o.get("volume") or ():
        parse_volume(v, binds, volumes)
    attach = [a.lower() for a in o.get("attach") or ()]
    interactive, tty, detach = bool(o.get("interactive")), bool(o.get("tty")), bool(
        o.get("detach"))
    if attach and detach:
        raise CLIError("conflicting options: cannot specify both --attach and --detach", 125)
    attach_stdin = "stdin" in attach if attach else (interactive and not detach)
    attach_stdout = "stdout" in attach if attach else not detach
    attach_stderr = "stderr" in attach if attach else not detach
    entrypoint = o.get("entrypoint")
    config: dict[str, Any] = {
        "Hostname": o.get("hostname") or "",
        "Domainname": o.get("domainname") or "",
        "User": o.get("user") or "",
        "AttachStdin": attach_stdin,
        "AttachStdout": attach_stdout,
        "AttachStderr": attach_stderr,
        "Tty": tty,
        "OpenStdin": interactive,
        "StdinOnce": interactive and attach_stdin,
        "Env": parse_env(o.get("env") or (), o.get("env_file") or ()),
        "Cmd": list(command) or None,
        "Image": image,
        "Volumes": volumes or None,
        "WorkingDir": o.get("workdir") or "",
        "Entrypoint": (shlex.split(entrypoint) or [""]) if entrypoint is not None else None,
        "Labels": parse_labels(o.get("label") or (), o.get("label_file") or ()),
    }
    if exposed:
        config["ExposedPorts"] = exposed
    if o.get("stop_signal"):
        config["StopSignal"] = o["stop_signal"]
    if o.get("stop_timeout") is not None:
        config["StopTimeout"] = int(o["stop_timeout"])
    cpus = o.get("cpus")
    host: dict[str, Any] = {
        "Binds": binds or None,
        "NetworkMode": o.get("network") or "default",
        "PortBindings": bindings or {},
        "PublishAllPorts": bool(o.get("publish_all")),
        "AutoRemove": bool(o.get("rm")),
        "Privileged": bool(o.get("privileged")),
        "ReadonlyRootfs": bool(o.get("read_only")),
        "CapAdd": list(o.get("cap_add") or ()) or None,
        "CapDrop": list(o.get("cap_drop") or ()) or None,
        "SecurityOpt": list(o.get("security_opt") or ()) or None,
        "Tmpfs": parse_tmpfs(o.get("tmpfs") or ()) or None,
        "Ulimits": [parse_ulimit(u) for u in o.get("ulimit") or ()] or None,
        "Sysctls": parse_kv(o.get("sysctl") or (), "sysctl") or None,
        "GroupAdd": list(o.get("group_add") or ()) or None,
        "Dns": list(o.get("dns") or ()) or None,
        "DnsSearch": list(o.get("dns_search") or ()) or None,
        "DnsOptions": list(o.get("dns_option") or ()) or None,
        "ExtraHosts": list(o.get("add_host") or ()) or None,
        "Devices": [parse_device(d) for d in o.get("device") or ()] or None,
        "Mounts": [parse_mount(m) for m in o.get("mount") or ()] or None,
        "Memory": memory_value(o.get("memory")) or 0,
        "MemorySwap": memory_value(o.get("memory_swap")) or 0,
        "MemoryReservation": memory_value(o.get("memory_reservation")) or 0,
        "NanoCpus": int(round(float(cpus) * 1e9)) if cpus else 0,
        "CpuShares": int(o.get("cpu_shares") or 0),
        "CpuPeriod": int(o.get("cpu_period") or 0),
        "CpuQuota": int(o.get("cpu_quota") or 0),
        "CpusetCpus": o.get("cpuset_cpus") or "",
        "CpusetMems": o.get("cpuset_mems") or "",
        "BlkioWeight": int(o.get("blkio_weight") or 0),
        "BlkioWeightDevice": parse_weight_device(o.get("blkio_weight_device") or ()) or None,
        "BlkioDeviceReadBps": parse_throttle(o.get("device_read_bps") or (), ram_in_bytes)
        or None,
        "BlkioDeviceWriteBps": parse_throttle(o.get("device_write_bps") or (), ram_in_bytes)
        or None,
        "BlkioDeviceReadIOps": parse_throttle(o.get("device_read_iops") or (), int) or None,
        "BlkioDeviceWriteIOps": parse_throttle(o.get("device_write_iops") or (), int) or None,
        "PidsLimit": o.get("pids_limit"),
        "OomKillDisable": bool(o.get("oom_kill_disable")),
        "OomScoreAdj": int(o.get("oom_score_adj") or 0),
        "ShmSize": ram_in_bytes(o["shm_size"]) if o.get("shm_size") else 0,
        "PidMode": o.get("pid") or "",
        "IpcMode": o.get("ipc") or "",
        "UTSMode": o.get("uts") or "",
        "CgroupnsMode": o.get("cgroupns") or "",
        "CgroupParent": o.get("cgroup_parent") or "",
        "Runtime": o.get("runtime") or "",
        "RestartPolicy": parse_restart(o.get("restart")) or {"Name": "no",
                                                              "MaximumRetryCount": 0},
    }
    if o.get("init"):
        host["Init"] = True
    if o.get("log_driver") or o.get("log_opt"):
        host["LogConfig"] = {"Type": o.get("log_driver") or "",
                             "Config": parse_kv(o.get("log_opt") or (), "log-opt")}
    if host["AutoRemove"] and host["RestartPolicy"]["Name"] not in ("no", ""):
        raise CLIError("Conflicting options: --restart and --rm", 125)
    config["HostConfig"] = host
    networks = {}
    if o.get("network") and o["network"] not in ("default", "bridge", "host", "none") \
            and not str(o["network"]).startswith("container:"):
        ep: dict[str, Any] = {}
        if o.get("network_alias"):
            ep["Aliases"] = list(o["network_alias"])
        networks[o["network"]] = ep
    config["NetworkingConfig"] = {"EndpointsConfig": networks}
    return config


def run_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The docker run/create flags, as click options."""
    multi = {"multiple": True}
    opts = [
        click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open even if not attached"),
        click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY"),
        click.option("--name", help="Assign a name to the container"),
        click.option("-e", "--env", help="Set environment variables", **multi),
        click.option("--env-file", help="Read in a file of environment variables", **multi),
        click.option("-w", "--workdir", help="Working directory inside the container"),
        click.option("-u", "--user", help="Username or UID (format: <name|uid>[:<group|gid>])"),
        click.option("--entrypoint", help="Overwrite the default ENTRYPOINT of the image"),
        click.option("-l", "--label", help="Set meta data on a container", **multi),
        click.option("--label-file", help="Read in a line delimited file of labels", **multi),
        click.option("-h", "--hostname", help="Container host name"),
        click.option("--domainname", help="Container NIS domain name"),
        click.option("-m", "--memory", help="Memory limit"),
        click.option("--memory-swap", help="Swap limit equal to memory plus swap: -1 unlimited"),
        click.option("--memory-reservation", help="Memory soft limit"),
        click.option("--oom-kill-disable", is_flag=True, help="Disable OOM Killer"),
        click.option("--oom-score-adj", type=int, help="Tune host's OOM preferences"),
        click.option("--cpus", help="Number of CPUs"),
        click.option("-c", "--cpu-shares", type=int, help="CPU shares (relative weight)"),
        click.option("--cpu-period", type=int, help="Limit CPU CFS period"),
        click.option("--cpu-quota", type=int, help="Limit CPU CFS quota"),
        click.option("--cpuset-cpus", help="CPUs in which to allow execution (0-3, 0,1)"),
        click.option("--cpuset-mems", help="MEMs in which to allow execution (0-3, 0,1)"),
        click.option("--pids-limit", type=int, help="Tune container pids limit (-1 unlimited)"),
        click.option("--blkio-weight", type=int, help="Block IO weight (10-1000)"),
        click.option("--blkio-weight-device", help="Block IO weight per device", **multi),
        click.option("--device-read-bps", help="Limit read rate from a device", **multi),
        click.option("--device-write-bps", help="Limit write rate to a device", **multi),
        click.option("--device-read-iops", help="Limit read rate (IO/s) from a device", **multi),
        click.option("--device-write-iops", help="Limit write rate (IO/s) to a device", **multi),
        click.option("--device", help="Add a host device to the container", **multi),
        click.option("--cap-add", help="Add Linux capabilities", **multi),
        click.option("--cap-drop", help="Drop Linux capabilities", **multi),
        click.option("--privileged", is_flag=True, help="Give extended privileges"),
        click.option("--security-opt", help="Security Options", **multi),
        click.option("--read-only", is_flag=True, help="Mount the root filesystem read only"),
        click.option("--tmpfs", help="Mount a tmpfs directory", **multi),
        click.option("--ulimit", help="Ulimit options", **multi),
        click.option("--sysctl", help="Sysctl options", **multi),
        click.option("--shm-size", help="Size of /dev/shm"),
        click.option("--group-add", help="Add additional groups to join", **multi),
        click.option("--network", "--net", "network", help="Connect a container to a network"),
        click.option("--network-alias", help="Add network-scoped alias", **multi),
        click.option("--dns", help="Set custom DNS servers", **multi),
        click.option("--dns-search", help="Set custom DNS search domains", **multi),
        click.option("--dns-option", help="Set DNS options", **multi),
        click.option("--add-host", help="Add a custom host-to-IP mapping (host:ip)", **multi),
        click.option("--pid", help="PID namespace to use"),
        click.option("--ipc", help="IPC mode to use"),
        click.option("--uts", help="UTS namespace to use"),
        click.option("--cgroupns", help="Cgroup namespace to use (host|private)"),
        click.option("--cgroup-parent", help="Optional parent cgroup for the container"),
        click.option("--init", is_flag=True, help="Run an init inside the container"),
        click.option("-v", "--volume", help="Bind mount a volume", **multi),
        click.option("--mount", help="Attach a filesystem mount to the container", **multi),
        click.option("-p", "--publish", help="Publish a container's port(s) to the host", **multi),
        click.option("-P", "--publish-all", is_flag=True, help="Publish all exposed ports"),
        click.option("--expose", help="Expose a port or a range of ports", **multi),
        click.option("--restart", help="Restart policy to apply when a container exits"),
        click.option("--stop-signal", help="Signal to stop the container"),
        click.option("--stop-timeout", type=int, help="Timeout (in seconds) to stop a container"),
        click.option("--log-driver", help="Logging driver for the container"),
        click.option("--log-opt", help="Log driver options", **multi),
        click.option("--runtime", help="Runtime to use for this container"),
        click.option("--platform", help="Set platform if server is multi-platform capable"),
        click.option("--pull", "pull_policy", default="missing",
                     type=click.Choice(["always", "missing", "never"]),
                     help="Pull image before running"),
        click.option("-q", "--quiet", is_flag=True, help="Suppress the pull output"),
        click.option("--cidfile", help="Write the container ID to the file"),
        click.option("-a", "--attach", help="Attach to STDIN, STDOUT or STDERR", **multi),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f
