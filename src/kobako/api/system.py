"""System routes: /_ping, /version, /info, /events, /system/df, /auth, swarm stubs."""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import time
from datetime import UTC, datetime
from typing import Any

from kobako.api import version as v
from kobako.api.context import Context, ctx
from kobako.api.http import Request, Response, StreamResponse, json_response
from kobako.api.params import filters_param, json_body, str_param
from kobako.api.streams import JSONStream
from kobako.engine.errors import InvalidParameter, Unavailable
from kobako.engine.events import EventFilter, parse_timestamp
from kobako.linux.cgroups.sysinfo import probe as probe_sysinfo

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
         "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


def go_arch() -> str:
    machine = platform.machine()
    return _ARCH.get(machine, machine)


def _ping_headers(request: Request) -> dict[str, str]:
    return {
        "API-Version": v.MAX_API_VERSION,
        "Builder-Version": "1",
        "Docker-Experimental": "false",
        "Ostype": "linux",
        "Swarm": "inactive",
        "Cache-Control": "no-cache, no-store, must-revalidate",
        "Pragma": "no-cache",
    }


async def ping(request: Request) -> Response:
    headers = _ping_headers(request)
    if request.method == "HEAD":
        return Response(status=200, headers=headers, content_type="text/plain")
    return Response(status=200, text="OK", headers=headers, content_type="text/plain")


def _kernel() -> str:
    return platform.release()


def version_doc() -> dict[str, Any]:
    details = {
        "ApiVersion": v.MAX_API_VERSION, "Arch": go_arch(), "BuildTime": "",
        "Experimental": "false", "GitCommit": v.GIT_COMMIT, "GoVersion": v.GO_VERSION,
        "KernelVersion": _kernel(), "MinAPIVersion": v.MIN_API_VERSION, "Os": "linux",
    }
    return {
        "Platform": {"Name": "kobako Engine"},
        # `docker version` prints a section for each (dockerd lists containerd and runc;
        # the runtime here is kobako's own)
        "Components": [{"Name": "Engine", "Version": v.SERVER_VERSION, "Details": details},
                       {"Name": "kobako-runtime", "Version": v.SERVER_VERSION,
                        "Details": {"GitCommit": v.GIT_COMMIT}}],
        "Version": v.SERVER_VERSION, "ApiVersion": v.MAX_API_VERSION,
        "MinAPIVersion": v.MIN_API_VERSION, "GitCommit": v.GIT_COMMIT,
        "GoVersion": v.GO_VERSION, "Os": "linux", "Arch": go_arch(),
        "KernelVersion": _kernel(), "BuildTime": "",
    }


async def version(request: Request) -> Response:
    return json_response(version_doc())


def _os_release() -> tuple[str, str]:
    fields: dict[str, str] = {}
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if "=" in line:
                    k, val = line.rstrip("\n").split("=", 1)
                    fields[k] = val.strip('"')
    except OSError:
        pass
    return fields.get("PRETTY_NAME", "Linux"), fields.get("VERSION_ID", "")


def _mem_total() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _sysctl_on(path: str) -> bool:
    try:
        with open(path) as f:
            return f.read().strip() == "1"
    except OSError:
        return False


async def info(request: Request) -> Response:
    c = ctx(request)
    counts = await c.containers.counts()
    images = 0
    if c.images is not None:
        try:
            images = len(await asyncio.to_thread(c.images.list, {}, True))
        except Exception as exc:  # info must answer even when the image store is unwell
            c.warnings.append(f"listing images failed: {exc}")
    os_name, os_version = _os_release()
    cfg = c.config
    limits = probe_sysinfo()  # what this host's cgroups can enforce
    cgv = limits.version
    ip_forward = _sysctl_on("/proc/sys/net/ipv4/ip_forward")
    warnings = list(c.warnings) + limits.warnings()
    if not ip_forward:
        warnings.append("WARNING: IPv4 forwarding is disabled")
    security = ["name=seccomp,profile=builtin"]
    if cgv == "2":
        security.append("name=cgroupns")
    insecure = ["127.0.0.0/8", "::1/128"] + [r for r in cfg.insecure_registries if "/" in r]
    index_configs: dict[str, Any] = {
        "docker.io": {"Name": "docker.io", "Mirrors": list(cfg.registry_mirrors),
                      "Secure": True, "Official": True},
    }
    for reg in cfg.insecure_registries:
        if "/" not in reg:
            index_configs[reg] = {"Name": reg, "Mirrors": [], "Secure": False, "Official": False}
    doc: dict[str, Any] = {
        "ID": c.daemon_id,
        "Containers": sum(counts.values()),
        "ContainersRunning": counts.get("running", 0),
        "ContainersPaused": counts.get("paused", 0),
        "ContainersStopped": counts.get("stopped", 0),
        "Images": images,
        "Driver": c.storage_driver,
        "DriverStatus": [["Backing Filesystem", "extfs"]] if c.storage_driver == "overlay2" else [],
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null"],
                    "Authorization": None, "Log": ["json-file"]},
        "MemoryLimit": limits.memory_limit, "SwapLimit": limits.swap_limit,
        "KernelMemory": limits.kernel_memory, "KernelMemoryTCP": limits.kernel_memory,
        "CpuCfsPeriod": limits.cpu_cfs, "CpuCfsQuota": limits.cpu_cfs,
        "CPUShares": limits.cpu_shares, "CPUSet": limits.cpuset,
        "PidsLimit": limits.pids_limit, "OomKillDisable": limits.oom_kill_disable,
        "IPv4Forwarding": ip_forward,
        "BridgeNfIptables": _sysctl_on("/proc/sys/net/bridge/bridge-nf-call-iptables"),
        "BridgeNfIp6tables": _sysctl_on("/proc/sys/net/bridge/bridge-nf-call-ip6tables"),
        "Debug": cfg.debug or cfg.log_level == "debug",
        "NFd": len(os.listdir("/proc/self/fd")),
        "NGoroutines": len(asyncio.all_tasks()),
        "SystemTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "LoggingDriver": cfg.log_driver,
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": cgv,
        "NEventsListener": c.events.subscriber_count,
        "KernelVersion": _kernel(),
        "OperatingSystem": os_name, "OSVersion": os_version, "OSType": "linux",
        "Architecture": platform.machine(),
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {
            "AllowNondistributableArtifactsCIDRs": [],
            "AllowNondistributableArtifactsHostnames": [],
            "InsecureRegistryCIDRs": insecure,
            "IndexConfigs": index_configs,
            "Mirrors": list(cfg.registry_mirrors),
        },
        "NCPU": os.cpu_count() or 1,
        "MemTotal": _mem_total(),
        "GenericResources": None,
        "DockerRootDir": cfg.data_root,
        "HttpProxy": os.environ.get("HTTP_PROXY", ""),
        "HttpsProxy": os.environ.get("HTTPS_PROXY", ""),
        "NoProxy": os.environ.get("NO_PROXY", ""),
        "Name": socket.gethostname(),
        "Labels": list(cfg.labels),
        "ExperimentalBuild": False,
        "ServerVersion": v.SERVER_VERSION,
        # "runc" names the same runtime, for clients that ask for dockerd's default
        "Runtimes": {"kobako-runtime": {"path": "kobako-runtime"},
                     "runc": {"path": "kobako-runtime"}},
        "DefaultRuntime": "kobako-runtime",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
                  "ControlAvailable": False, "Error": "", "RemoteManagers": None},
        "LiveRestoreEnabled": cfg.live_restore,
        "Isolation": "",
        "InitBinary": "docker-init",  # tini, mounted as /sbin/docker-init as dockerd does
        "ContainerdCommit": {"ID": ""}, "RuncCommit": {"ID": ""}, "InitCommit": {"ID": ""},
        "SecurityOptions": security,
        "CDISpecDirs": [],
        "Warnings": warnings or None,
    }
    return json_response(doc)


async def events(request: Request) -> StreamResponse:
    c = ctx(request)
    now = time.time()
    since = parse_timestamp(str_param(request, "since"), now)
    until = parse_timestamp(str_param(request, "until"), now)
    if since is not None and until is not None and until < since:
        raise InvalidParameter("`until` must not be before `since`")
    flt = EventFilter(filters_param(request))
    stream = JSONStream(request)
    await stream.start()  # headers now, so clients see the stream open before any event
    async for ev in c.events.subscribe(since=since, until=until, filters=flt):
        await stream.send(ev)
    return await stream.finish()


async def system_df(request: Request) -> Response:
    from kobako.engine.disk_usage import disk_usage

    c = ctx(request)
    types = request.query.getall("type", []) or None
    return json_response(await disk_usage(c.containers, c.images, types))


async def auth(request: Request) -> Response:
    body = await json_body(request, allow_empty=False)
    server = body.get("serveraddress") or "https://index.docker.io/v1/"
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise InvalidParameter("username and password are required strings")
    from kobako.image import auth as image_auth  # lazy: pulls in the registry client

    status = await image_auth.login(server, username, password, save=False,
                                    insecure_registries=ctx(request).config.insecure_registries)
    return json_response({"Status": status, "IdentityToken": ""})


async def swarm_not_active(request: Request) -> Response:
    raise Unavailable("This node is not part of a swarm")


async def not_a_manager(request: Request) -> Response:
    raise Unavailable('This node is not a swarm manager. Use "docker swarm init" or '
                      '"docker swarm join" to connect this node to swarm and try again.')


async def plugins(request: Request) -> Response:
    """No managed plugins: the built-in drivers are not plugins (`docker plugin ls`)."""
    return json_response([])


def register(add: Any) -> None:
    add("GET", "/_ping", ping)
    add("HEAD", "/_ping", ping)
    add("GET", "/version", version)
    add("GET", "/info", info)
    add("GET", "/events", events)
    add("GET", "/system/df", system_df)
    add("POST", "/auth", auth)
    add("GET", "/plugins", plugins)
    add("POST", "/swarm/leave", swarm_not_active)
    add("GET", "/swarm", swarm_not_active)
    for path in ("/nodes", "/services", "/tasks", "/secrets", "/configs"):
        add("GET", path, not_a_manager)


__all__ = ["register", "Context"]
