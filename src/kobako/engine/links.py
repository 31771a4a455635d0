"""Legacy container links (`docker run --link name:alias`), as dockerd keeps them.

HostConfig.Links holds them as "/<linked name>:/<own name>/<alias>". On the default
bridge a link is an /etc/hosts line and environment variables describing the linked
container (its exposed ports and its environment); on a user-defined network it is a
name the embedded DNS resolves for the linking container only.
"""

from __future__ import annotations

from typing import Any

# set during `docker build` and of no use to the linking container (dockerd skips them)
_SKIPPED_ENV = frozenset({"HOME", "PATH"})


def parse(entry: str) -> tuple[str, str]:
    """'name:alias', 'name' or the stored '/name:/own/alias': (linked name, alias)."""
    name, _, alias = entry.partition(":")
    name = name.lstrip("/")
    alias = alias.rsplit("/", 1)[-1] if alias else name
    if not name or not alias:
        raise ValueError(f"invalid link {entry!r}: want name[:alias]")
    return name, alias


def stored(linked_name: str, own_name: str, alias: str) -> str:
    return f"/{linked_name}:/{own_name}/{alias}"


def hosts_line(ip: str, alias: str, linked_id: str, linked_name: str) -> str:
    names = [alias] + [n for n in (linked_id[:12], linked_name) if n != alias]
    return f"{ip}\t{' '.join(names)}\n"


def environment(alias: str, own_name: str, ip: str, linked: dict[str, Any]) -> list[str]:
    """What dockerd's links package exports for one link: <ALIAS>_NAME, the linked
    container's exposed ports (<ALIAS>_PORT, <ALIAS>_PORT_<n>_<PROTO>{,_ADDR,_PORT,_PROTO})
    and its environment (<ALIAS>_ENV_<NAME>)."""
    prefix = alias.upper().replace("-", "_")
    env = [f"{prefix}_NAME=/{own_name}/{alias}"]
    # tcp first, then by number (dockerd's withTCPPriority); the first is <ALIAS>_PORT
    ports = sorted(_port(p) for p in (linked["Config"].get("ExposedPorts") or {}))
    for index, (_not_tcp, number, proto) in enumerate(ports):
        url = f"{proto}://{ip}:{number}"
        if index == 0:
            env.append(f"{prefix}_PORT={url}")
        key = f"{prefix}_PORT_{number}_{proto.upper()}"
        env += [f"{key}={url}", f"{key}_ADDR={ip}", f"{key}_PORT={number}",
                f"{key}_PROTO={proto}"]
    for item in linked["Config"].get("Env") or []:
        name, sep, value = item.partition("=")
        if sep and name not in _SKIPPED_ENV:
            env.append(f"{prefix}_ENV_{name}={value}")
    return env


def _port(port: str) -> tuple[bool, int, str]:
    number, _, proto = port.partition("/")
    first = number.split("-", 1)[0]
    return (proto not in ("", "tcp"), int(first) if first.isdigit() else 0, proto or "tcp")
