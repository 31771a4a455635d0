"""kobako ns: the namespaces of running containers and of the host, and who shares which.

The daemon tells which containers run and their pids (through the API); the
namespaces themselves are read from /proc/<pid>/ns on this host, where each link
names a namespace by its inode (`net:[4026532301]`). Two processes are in the same
namespace exactly when the inodes are equal.
"""

from __future__ import annotations

import json
import os
import re

import click

from kobako.cli.util import State, fail, pass_state

KINDS = ("pid", "net", "mnt", "uts", "ipc", "user", "cgroup", "time")
HOST = "host"
_INODE = re.compile(r"^\w+:\[(\d+)\]$")


def namespaces(pid: int) -> dict[str, int | None]:
    """kind -> inode for a process (None where the kernel has no such namespace)."""
    out: dict[str, int | None] = {}
    for kind in KINDS:
        try:
            match = _INODE.match(os.readlink(f"/proc/{pid}/ns/{kind}"))
        except OSError:
            match = None
        out[kind] = int(match.group(1)) if match else None
    return out


def host_pid() -> int:
    """PID 1 stands for the host; where it may not be inspected (a non-dumpable init),
    this command's own process, which runs in the host's namespaces too."""
    try:
        os.readlink("/proc/1/ns/net")
        return 1
    except OSError:
        return os.getpid()


def shared(entries: list[dict]) -> list[dict]:
    """Namespaces that more than one entry (container or host) is in."""
    groups: dict[tuple[str, int], list[str]] = {}
    for entry in entries:
        for kind, inode in entry["namespaces"].items():
            if inode is not None:
                groups.setdefault((kind, inode), []).append(entry["name"])
    return [{"type": kind, "inode": inode, "members": members}
            for (kind, inode), members in groups.items() if len(members) > 1]


def _running(state: State, refs: tuple[str, ...]) -> list[dict]:
    if not refs:
        refs = tuple(c["Id"] for c in state.client.get_json("/containers/json"))
    out = []
    for ref in refs:
        doc = state.client.get_json(f"/containers/{ref}/json")
        if not doc["State"].get("Running") or not doc["State"].get("Pid"):
            fail(f"Error response from daemon: container {ref} is not running")
        out.append({"name": doc["Name"].lstrip("/"), "id": doc["Id"],
                    "pid": doc["State"]["Pid"]})
    return out


@click.command()
@click.argument("containers", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              help="Output format")
@pass_state
def ns(state: State, containers: tuple[str, ...], fmt: str) -> None:
    """Show the namespaces (pid, net, mnt, uts, ipc, user, cgroup, time) of running
    containers and of the host, by inode, and which of them are shared.

    Two containers share a namespace when the inodes are equal: for example both
    containers after `--network container:X`, or a container and the host after
    `--pid host`. The host is what PID 1 of this machine is in (or this command,
    where PID 1 may not be inspected).
    """
    entries = [{"name": HOST, "id": "", "pid": host_pid(), "namespaces": namespaces(host_pid())}]
    for c in _running(state, containers):
        c["namespaces"] = namespaces(c["pid"])
        entries.append(c)
    groups = shared(entries)
    if fmt == "json":
        click.echo(json.dumps({"namespaces": entries, "shared": groups}, indent=2))
        return
    width = max(len(e["name"]) for e in entries) + 2
    click.echo(f"{'NAME':<{width}}{'PID':<9}" + "".join(f"{k.upper():<12}" for k in KINDS))
    for e in entries:
        click.echo(f"{e['name']:<{width}}{e['pid']:<9}" + "".join(
            f"{e['namespaces'][k] if e['namespaces'][k] is not None else '-':<12}"
            for k in KINDS))
    if groups:
        click.echo("\nSHARED")
        for g in sorted(groups, key=lambda g: (KINDS.index(g["type"]), g["inode"])):
            click.echo(f"{g['type']:<7}{g['inode']:<12}{', '.join(g['members'])}")
