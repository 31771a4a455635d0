"""Docker's documents about a container: the HostConfig and NetworkSettings defaults
inspect shows, and the fields of the `docker ps` summary.
"""

from __future__ import annotations

import time

from kobako.units import human_duration

ZERO_TIME = "0001-01-01T00:00:00Z"


def host_config_defaults(host_config: dict) -> dict:
    doc = {
        "Binds": None, "ContainerIDFile": "", "LogConfig": {"Type": "json-file", "Config": {}},
        "NetworkMode": "default", "PortBindings": {}, "RestartPolicy": {"Name": "no",
                                                                      "MaximumRetryCount": 0},
        "AutoRemove": False, "VolumeDriver": "", "VolumesFrom": None, "CapAdd": None,
        "CapDrop": None, "CgroupnsMode": "host", "Dns": [], "DnsOptions": [], "DnsSearch": [],
        "ExtraHosts": None, "GroupAdd": None, "IpcMode": "private", "Cgroup": "", "Links": None,
        "OomScoreAdj": 0, "PidMode": "", "Privileged": False, "PublishAllPorts": False,
        "ReadonlyRootfs": False, "SecurityOpt": None, "UTSMode": "", "UsernsMode": "",
        "ShmSize": 67108864, "Runtime": "kobako-runtime", "Isolation": "", "CpuShares": 0,
        "Memory": 0, "NanoCpus": 0, "CgroupParent": "", "BlkioWeight": 0,
        "BlkioWeightDevice": [], "BlkioDeviceReadBps": [], "BlkioDeviceWriteBps": [],
        "BlkioDeviceReadIOps": [], "BlkioDeviceWriteIOps": [], "CpuPeriod": 0, "CpuQuota": 0,
        "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0, "CpusetCpus": "", "CpusetMems": "",
        "Devices": [], "DeviceCgroupRules": None, "DeviceRequests": None,
        "MemoryReservation": 0, "MemorySwap": 0, "MemorySwappiness": None,
        "OomKillDisable": False, "PidsLimit": None, "Ulimits": None, "CpuCount": 0,
        "CpuPercent": 0, "IOMaximumIOps": 0, "IOMaximumBandwidth": 0,
        "MaskedPaths": None, "ReadonlyPaths": None, "ConsoleSize": [0, 0],
    }
    doc.update({k: v for k, v in host_config.items() if v is not None})
    doc["Runtime"] = doc.get("Runtime") or "kobako-runtime"
    if not (doc.get("LogConfig") or {}).get("Type"):
        doc["LogConfig"] = {"Type": "json-file", "Config": (doc.get("LogConfig") or {}).get(
            "Config") or {}}
    if doc.get("NetworkMode") in ("", None):
        doc["NetworkMode"] = "default"
    return doc


def network_settings(host_config: dict) -> dict:
    mode = host_config.get("NetworkMode") or "default"
    return {
        "Bridge": "", "SandboxID": "", "SandboxKey": "", "Ports": {},
        "HairpinMode": False, "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
        "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None, "EndpointID": "",
        "Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "IPAddress": "",
        "IPPrefixLen": 0, "IPv6Gateway": "", "MacAddress": "",
        "Networks": {} if mode.startswith("container:") else {
            ("bridge" if mode == "default" else mode): {
                "IPAMConfig": None, "Links": None, "Aliases": None, "NetworkID": "",
                "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
                "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                "MacAddress": "", "DriverOpts": None,
            }
        },
    }


def summary_ports(doc: dict) -> list[dict]:
    """docker ps PORTS: published ports with their host side, exposed ones without."""
    ports = []
    published = (doc.get("NetworkSettings") or {}).get("Ports") or {}
    for key in sorted(set(published) | set(doc["Config"].get("ExposedPorts") or {})):
        port, _, proto = key.partition("/")
        if not port.isdigit():
            continue
        entries = published.get(key) or []
        for e in entries:
            ports.append({"IP": e.get("HostIp") or "0.0.0.0", "PrivatePort": int(port),
                          "PublicPort": int(e.get("HostPort") or 0), "Type": proto or "tcp"})
        if not entries:
            ports.append({"PrivatePort": int(port), "Type": proto or "tcp"})
    return ports


def parse_time(text: str) -> float:
    import calendar

    base, _, frac = text.rstrip("Z").partition(".")
    try:
        seconds = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return 0.0
    return seconds + (float("0." + frac) if frac else 0.0)


def human_status(state: dict) -> str:
    now = time.time()
    if state.get("Restarting"):
        return (f"Restarting ({state.get('ExitCode', 0)}) "
                f"{human_duration(now - parse_time(state['FinishedAt']))} ago")
    if state.get("Running"):
        up = f"Up {human_duration(now - parse_time(state['StartedAt']))}"
        if state.get("Paused"):
            return up + " (Paused)"
        health = (state.get("Health") or {}).get("Status")
        if health == "starting":
            return up + " (health: starting)"
        return up + f" ({health})" if health else up
    if state.get("Status") == "created":
        return "Created"
    if state.get("FinishedAt", ZERO_TIME) == ZERO_TIME:
        return "Created"
    ago = human_duration(now - parse_time(state["FinishedAt"]))
    return f"Exited ({state.get('ExitCode', 0)}) {ago} ago"

