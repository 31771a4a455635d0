"""cp, diff, export, commit and update (docker's container storage commands)."""

from __future__ import annotations

import base64
import io
import json
import os
import posixpath
import sys
import tarfile

import click

from kobako.cli.util import CLIError, State, pass_state

_KINDS = {0: "C", 1: "A", 2: "D"}


def _split(arg: str) -> tuple[str | None, str]:
    """"container:path" -> (container, path); a local path -> (None, path)."""
    if arg.startswith(("/", ".")) or ":" not in arg:
        return None, arg
    container, _, path = arg.partition(":")
    return container, path


def _stat(state: State, container: str, path: str) -> dict | None:
    from kobako.client.errors import ClientError

    try:
        resp = state.client.request("HEAD", f"/containers/{container}/archive", {"path": path})
    except ClientError as exc:
        if getattr(exc, "status", None) == 404:
            return None
        raise
    resp.read()
    header = next((v for k, v in dict(resp.headers).items()
                   if k.lower() == "x-docker-container-path-stat"), None)
    return json.loads(base64.b64decode(header)) if header else {}


@click.command("cp")
@click.argument("src")
@click.argument("dest")
@click.option("-a", "--archive", is_flag=True, help="Archive mode (copy all uid/gid info)")
@click.option("-L", "--follow-link", is_flag=True, help="Always follow symbol link in SRC_PATH")
@pass_state
def cp(state: State, src: str, dest: str, archive: bool, follow_link: bool) -> None:
    """Copy files/folders between a container and the local filesystem."""
    src_container, src_path = _split(src)
    dest_container, dest_path = _split(dest)
    if bool(src_container) == bool(dest_container):
        raise CLIError("copying between containers or between local paths is not supported")
    if src_container:
        resp = state.client.request("GET", f"/containers/{src_container}/archive",
                                    {"path": src_path})
        data = resp.read()
        if dest_path == "-":
            sys.stdout.buffer.write(data)
            return
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            members = tf.getmembers()
            if os.path.isdir(dest_path):
                target = dest_path
            else:
                base = posixpath.basename(src_path.rstrip("/")) or "."
                new = os.path.basename(dest_path.rstrip("/"))
                for m in members:
                    if m.name == base or m.name.startswith(base + "/"):
                        m.name = new + m.name[len(base):]
                target = os.path.dirname(os.path.abspath(dest_path))
            tf.extractall(target, members=members, filter="tar")
        return
    assert dest_container
    if src_path == "-":
        body = sys.stdin.buffer.read()
        put_path = dest_path
    else:
        if not os.path.lexists(src_path):
            raise CLIError(f"lstat {src_path}: no such file or directory")
        info = _stat(state, dest_container, dest_path)
        is_dir = info is not None and bool(int(info.get("mode", 0)) & (1 << 31))
        if is_dir or dest_path.endswith("/"):
            put_path, arcname = dest_path, os.path.basename(os.path.abspath(src_path))
        else:
            put_path = posixpath.dirname(dest_path.rstrip("/")) or "/"
            arcname = posixpath.basename(dest_path.rstrip("/"))
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            tf.add(src_path, arcname=arcname)
        body = buf.getvalue()
    state.client.request("PUT", f"/containers/{dest_container}/archive",
                         {"path": put_path, "noOverwriteDirNonDir": "true",
                          "copyUIDGID": "true" if archive else "false"}, body=body).read()


@click.command("diff")
@click.argument("container")
@pass_state
def diff(state: State, container: str) -> None:
    """Inspect changes to files or directories on a container's filesystem."""
    for change in state.client.get_json(f"/containers/{container}/changes") or []:
        click.echo(f"{_KINDS.get(change['Kind'], '?')} {change['Path']}")


@click.command("export")
@click.argument("container")
@click.option("-o", "--output", help="Write to a file, instead of STDOUT")
@pass_state
def export(state: State, container: str, output: str | None) -> None:
    """Export a container's filesystem as a tar archive."""
    resp = state.client.request("GET", f"/containers/{container}/export")
    if output is None and sys.stdout.isatty():
        raise CLIError("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    out = open(output, "wb") if output else sys.stdout.buffer  # noqa: SIM115
    try:
        for chunk in resp.iter_chunks():
            out.write(chunk)
    finally:
        if output:
            out.close()


@click.command("commit")
@click.argument("container")
@click.argument("repository", required=False)
@click.option("-a", "--author", default="", help="Author")
@click.option("-c", "--change", "changes", multiple=True, help="Apply Dockerfile instruction")
@click.option("-m", "--message", default="", help="Commit message")
@click.option("-p", "--pause/--no-pause", default=True, help="Pause container during commit")
@pass_state
def commit(state: State, container: str, repository: str | None, author: str,
           changes: tuple[str, ...], message: str, pause: bool) -> None:
    """Create a new image from a container's changes."""
    params: dict = {"container": container, "author": author, "comment": message,
                    "pause": "1" if pause else "0", "changes": list(changes)}
    if repository:
        from kobako.cli.commands.images import split_ref

        repo, tag = split_ref(repository)
        params.update({"repo": repo, "tag": tag or "latest"})
    result = state.client.post_json("/commit", params, body={})
    click.echo(result["Id"])


def _bytes(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip().lower()
    units = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise CLIError(f"invalid size: {value!r}") from None


@click.command("update")
@click.argument("containers", nargs=-1, required=True)
@click.option("-m", "--memory", help="Memory limit")
@click.option("--memory-swap", help="Swap limit equal to memory plus swap: -1 for unlimited")
@click.option("--memory-reservation", help="Memory soft limit")
@click.option("-c", "--cpu-shares", type=int, help="CPU shares (relative weight)")
@click.option("--cpus", type=float, help="Number of CPUs")
@click.option("--cpu-period", type=int, help="Limit CPU CFS period")
@click.option("--cpu-quota", type=int, help="Limit CPU CFS quota")
@click.option("--cpuset-cpus", help="CPUs in which to allow execution (0-3, 0,1)")
@click.option("--cpuset-mems", help="MEMs in which to allow execution (0-3, 0,1)")
@click.option("--pids-limit", type=int, help="Tune container pids limit (-1 for unlimited)")
@click.option("--blkio-weight", type=int, help="Block IO (relative weight)")
@click.option("--restart", help="Restart policy to apply when a container exits")
@pass_state
def update(state: State, containers: tuple[str, ...], memory: str | None,
           memory_swap: str | None, memory_reservation: str | None, cpu_shares: int | None,
           cpus: float | None, cpu_period: int | None, cpu_quota: int | None,
           cpuset_cpus: str | None, cpuset_mems: str | None, pids_limit: int | None,
           blkio_weight: int | None, restart: str | None) -> None:
    """Update configuration of one or more containers."""
    body: dict = {
        "Memory": _bytes(memory), "MemoryReservation": _bytes(memory_reservation),
        "MemorySwap": -1 if memory_swap == "-1" else _bytes(memory_swap),
        "CpuShares": cpu_shares, "NanoCpus": int(cpus * 1e9) if cpus else None,
        "CpuPeriod": cpu_period, "CpuQuota": cpu_quota, "CpusetCpus": cpuset_cpus,
        "CpusetMems": cpuset_mems, "PidsLimit": pids_limit, "BlkioWeight": blkio_weight,
    }
    if restart is not None:
        name, _, count = restart.partition(":")
        body["RestartPolicy"] = {"Name": name, "MaximumRetryCount": int(count or 0)}
    body = {k: v for k, v in body.items() if v is not None}
    failed = False
    for container in containers:
        try:
            state.client.post_json(f"/containers/{container}/update", body=body)
            click.echo(container)
        except Exception as exc:  # noqa: BLE001 - reported as docker does, then exit 1
            click.echo(f"Error response from daemon: {exc}", err=True)
            failed = True
    if failed:
        raise CLIError("", 1)
