"""Query-string and body parsing shared by the routes, with Docker's leniency rules."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kobako.api.errors import BadRequest
from kobako.api.http import Request

_FALSE = {"", "0", "no", "false", "none"}


def bool_param(request: Request, name: str, default: bool = False) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    return value.strip().lower() not in _FALSE


def int_param(request: Request, name: str, default: int | None = None) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise BadRequest(f"invalid value for {name}: {value!r} is not an integer") from exc


def str_param(request: Request, name: str, default: str | None = None) -> str | None:
    value = request.query.get(name)
    return default if value is None else value


def json_param(request: Request, name: str, kind: type[dict] | type[list] = dict) -> Any:
    """A query parameter holding a JSON object or array (empty when absent), e.g.
    /build's buildargs and cachefrom."""
    raw = request.query.get(name)
    if not raw:
        return kind()
    try:
        value = json.loads(raw)
    except ValueError:
        raise BadRequest(f"{name}: invalid JSON") from None
    if not isinstance(value, kind):
        raise BadRequest(f"{name}: want a JSON {'object' if kind is dict else 'array'}")
    return value


def filters_param(request: Request, name: str = "filters") -> dict[str, list[str]]:
    """Docker's filters: {"key": ["v", ...]} or the legacy {"key": {"v": true}}."""
    raw = request.query.get(name)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"invalid filters: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest("invalid filters: expected a JSON object")
    out: dict[str, list[str]] = {}
    for key, value in data.items():
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            out[key] = list(value)
        elif isinstance(value, dict):
            out[key] = [k for k, on in value.items() if on]
        elif isinstance(value, str):
            out[key] = [value]
        else:
            raise BadRequest(f"invalid filter value for {key!r}")
    return out


async def json_body(request: Request, *, allow_empty: bool = True) -> dict[str, Any]:
    """The request's JSON object body; 400 with a message when it is not one."""
    raw = await request.read()  # bounded by the app's client_max_size (413 above it)
    if not raw.strip():
        if allow_empty:
            return {}
        raise BadRequest("request body is empty; a JSON object is required")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"invalid JSON in request body: {exc}") from exc
    if data is None and allow_empty:
        return {}
    if not isinstance(data, dict):
        raise BadRequest("invalid JSON in request body: expected an object")
    return data


# Expected JSON types of the fields the engine reads; a wrong type is a 400, as Go's
# decoder makes it in Docker ("json: cannot unmarshal string into Go struct field ...").
_STR, _INT, _BOOL, _LIST, _DICT = str, int, bool, list, dict
CONFIG_TYPES: dict[str, Any] = {
    "Hostname": _STR, "Domainname": _STR, "User": _STR, "AttachStdin": _BOOL,
    "AttachStdout": _BOOL, "AttachStderr": _BOOL, "ExposedPorts": _DICT, "Tty": _BOOL,
    "OpenStdin": _BOOL, "StdinOnce": _BOOL, "Env": _LIST, "Cmd": (_LIST, _STR),
    "Image": _STR, "Volumes": _DICT, "WorkingDir": _STR, "Entrypoint": (_LIST, _STR),
    "NetworkDisabled": _BOOL, "Labels": _DICT, "StopSignal": _STR, "StopTimeout": _INT,
    "Shell": _LIST, "Healthcheck": _DICT, "OnBuild": _LIST, "MacAddress": _STR,
}
HOST_CONFIG_TYPES: dict[str, Any] = {
    "Binds": _LIST, "NetworkMode": _STR, "PortBindings": _DICT, "RestartPolicy": _DICT,
    "AutoRemove": _BOOL, "VolumeDriver": _STR, "VolumesFrom": _LIST, "Mounts": _LIST,
    "CapAdd": _LIST, "CapDrop": _LIST, "Dns": _LIST, "DnsOptions": _LIST, "DnsSearch": _LIST,
    "ExtraHosts": _LIST, "GroupAdd": _LIST, "IpcMode": _STR, "Cgroup": _STR, "Links": _LIST,
    "OomScoreAdj": _INT, "PidMode": _STR, "Privileged": _BOOL, "PublishAllPorts": _BOOL,
    "ReadonlyRootfs": _BOOL, "SecurityOpt": _LIST, "StorageOpt": _DICT, "Tmpfs": _DICT,
    "UTSMode": _STR, "UsernsMode": _STR, "ShmSize": _INT, "Sysctls": _DICT, "Runtime": _STR,
    "Isolation": _STR, "CpuShares": _INT, "Memory": _INT, "NanoCpus": _INT,
    "CgroupParent": _STR, "BlkioWeight": _INT, "BlkioWeightDevice": _LIST,
    "BlkioDeviceReadBps": _LIST, "BlkioDeviceWriteBps": _LIST, "BlkioDeviceReadIOps": _LIST,
    "BlkioDeviceWriteIOps": _LIST, "CpuPeriod": _INT, "CpuQuota": _INT,
    "CpuRealtimePeriod": _INT, "CpuRealtimeRuntime": _INT, "CpusetCpus": _STR,
    "CpusetMems": _STR, "Devices": _LIST, "DeviceCgroupRules": _LIST,
    "MemoryReservation": _INT, "MemorySwap": _INT, "MemorySwappiness": _INT,
    "OomKillDisable": _BOOL, "PidsLimit": _INT, "Ulimits": _LIST, "Init": _BOOL,
    "MaskedPaths": _LIST, "ReadonlyPaths": _LIST, "LogConfig": _DICT, "CgroupnsMode": _STR,
    "ConsoleSize": _LIST, "Annotations": _DICT, "KernelMemory": _INT,
}


def check_types(obj: dict[str, Any], types: Mapping[str, Any], where: str) -> None:
    """Raise 400 for a known field whose JSON type is wrong (null is always allowed).

    Field names match case-insensitively, as Go's decoder matches them (docker-py sends
    "detachKeys"): such a key is renamed to the field's own name in `obj`."""
    canonical = {name.lower(): name for name in types}
    for key in [k for k in obj if k not in types]:
        name = canonical.get(key.lower())
        if name is not None and name not in obj:
            obj[name] = obj.pop(key)
    for key, want in types.items():
        if key not in obj or obj[key] is None:
            continue
        value = obj[key]
        wants = want if isinstance(want, tuple) else (want,)
        ok = any(isinstance(value, w) and not (w is int and isinstance(value, bool))
                 for w in wants)
        if not ok:
            raise BadRequest(
                f"json: cannot unmarshal {_json_type(value)} into Go struct field "
                f"{where}.{key} of type {_go_type(wants[0])}")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _go_type(t: type) -> str:
    return {str: "string", int: "int64", bool: "bool", list: "[]string",
            dict: "map[string]string"}.get(t, t.__name__)
