"""Container commands: run, create, start, stop, kill, rm, ps, logs, exec, attach, ..."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import click

from kobako.cli.output import (
    human_size,
    parse_time,
    print_prune_report,
    render_rows,
    short_id,
    since,
)
from kobako.cli.runopts import build_create_body, run_options
from kobako.cli.util import CLIError, State, pass_state

# run/create use -h for --hostname, as docker does
# and stop parsing options at the image: what follows is the container's command
_NO_SHORT_HELP = {"help_option_names": ["--help"], "allow_interspersed_args": False}


def _client_error() -> type[Exception]:
    from kobako.client.errors import ClientError

    return ClientError


def _each(state: State, names: tuple[str, ...], action: Any) -> None:
    """Apply `action(name)` to each name; report failures docker-style, exit 1 at the end."""
    failed = False
    for name in names:
        try:
            action(name)
        except _client_error() as exc:
            click.echo(f"Error response from daemon: {exc}", err=True)
            failed = True
            continue
        click.echo(name)
    if failed:
        raise CLIError("", 1)


# --- create / run -------------------------------------------------------------------------

def _create(state: State, opts: dict[str, Any], image: str, command: tuple[str, ...]) -> str:
    from kobako.cli.commands.images import pull as pull_cmd
    from kobako.client.errors import ClientError

    body = build_create_body(opts, image, list(command))
    params = {"name": opts.get("name"), "platform": opts.get("platform")}

    def pull_image() -> None:
        ctx = click.get_current_context()
        try:
            ctx.invoke(pull_cmd, name=image, all_tags=False, platform=opts.get("platform"),
                       quiet=True)
        except CLIError as exc:  # docker's run/create report every daemon failure as 125
            raise CLIError(exc.message, 125) from exc

    if opts.get("pull_policy") == "always":
        pull_image()
    try:
        result = state.client.post_json("/containers/create", params, body)
    except ClientError as exc:
        if exc.status != 404 or "image" not in exc.message.lower() or \
                opts.get("pull_policy") == "never":
            raise
        click.echo(f"Unable to find image '{image}' locally", err=True)
        pull_image()
        result = state.client.post_json("/containers/create", params, body)
    for w in result.get("Warnings") or []:
        click.echo(f"WARNING: {w}", err=True)
    if opts.get("cidfile"):
        with open(opts["cidfile"], "x") as f:
            f.write(result["Id"])
    return result["Id"]


@click.command(context_settings=_NO_SHORT_HELP)
@run_options
@click.option("--rm", is_flag=True, help="Automatically remove the container when it exits")
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_state
def create(state: State, image: str, command: tuple[str, ...], **opts: Any) -> None:
    """Create a new container."""
    click.echo(_create(state, opts, image, command))


class _Waiter(threading.Thread):
    """POST /wait in the background; `registered` is set once the daemon answered headers."""

    def __init__(self, state: State, cid: str, condition: str):
        super().__init__(daemon=True)
        self.state, self.cid, self.condition = state, cid, condition
        self.registered = threading.Event()
        self.result: dict[str, Any] | None = None
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            resp = self.state.client.request("POST", f"/containers/{self.cid}/wait",
                                             {"condition": self.condition})
            self.registered.set()
            self.result = resp.json()
        except Exception as exc:  # reported by the caller
            self.error = exc
        finally:
            self.registered.set()

    def status(self) -> int:
        self.join()
        if self.error is not None:
            raise self.error
        result = self.result or {}
        if result.get("Error") and result["Error"].get("Message"):
            click.echo(f"Error: {result['Error']['Message']}", err=True)
        return int(result.get("StatusCode", 0))


@click.command(context_settings=_NO_SHORT_HELP)
@run_options
@click.option("-d", "--detach", is_flag=True, help="Run container in background and print ID")
@click.option("--rm", is_flag=True, help="Automatically remove the container when it exits")
@click.option("--detach-keys", help="Override the key sequence for detaching a container")
@click.option("--sig-proxy/--no-sig-proxy", default=True, help="Proxy received signals")
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_state
def run(state: State, image: str, command: tuple[str, ...], detach: bool, rm: bool,
        detach_keys: str | None, sig_proxy: bool, **opts: Any) -> None:
    """Create and run a new container from an image."""
    from kobako.cli import attach as attach_mod

    opts.update(detach=detach, rm=rm)
    cid = _create(state, opts, image, command)
    client = state.client
    if detach:
        client.request("POST", f"/containers/{cid}/start").read()
        click.echo(cid)
        return
    tty, interactive = bool(opts.get("tty")), bool(opts.get("interactive"))
    hj = client.hijack(f"/containers/{cid}/attach", {
        "stream": 1, "stdin": 1 if interactive else 0, "stdout": 1, "stderr": 1,
        "detachKeys": detach_keys})
    waiter = _Waiter(state, cid, "removed" if rm else "next-exit")
    waiter.start()
    waiter.registered.wait(10)
    try:
        client.request("POST", f"/containers/{cid}/start").read()
    except _client_error() as exc:
        hj.close()
        raise CLIError(f"Error response from daemon: {exc}", 125) from exc

    def resize(h: int, w: int) -> None:
        client.request("POST", f"/containers/{cid}/resize", {"h": h, "w": w}).read()

    attach_mod.stream(hj, stdin=interactive, tty=tty, resize=resize)
    code = waiter.status()
    if code:
        raise CLIError("", code)


# --- lifecycle ----------------------------------------------------------------------------

@click.command()
@click.argument("containers", nargs=-1, required=True)
@click.option("-a", "--attach", is_flag=True, help="Attach STDOUT/STDERR and forward signals")
@click.option("-i", "--interactive", is_flag=True, help="Attach container's STDIN")
@click.option("--detach-keys", help="Override the key sequence for detaching a container")
@pass_state
def start(state: State, containers: tuple[str, ...], attach: bool, interactive: bool,
          detach_keys: str | None) -> None:
    """Start one or more stopped containers."""
    if attach or interactive:
        if len(containers) > 1:
            raise CLIError("you cannot start and attach multiple containers at once")
        _attach(state, containers[0], interactive, detach_keys, start_it=True)
        return
    _each(state, containers, lambda c: state.client.request(
        "POST", f"/containers/{c}/start").read())


@click.command()
@click.argument("containers", nargs=-1, required=True)
@click.option("-t", "--time", "timeout", type=int, help="Seconds to wait before killing")
@click.option("-s", "--signal", "sig", help="Signal to send to the container")
@pass_state
def stop(state: State, containers: tuple[str, ...], timeout: int | None, sig: str | None) -> None:
    """Stop one or more running containers."""
    _each(state, containers, lambda c: state.client.request(
        "POST", f"/containers/{c}/stop", {"t": timeout, "signal": sig},
        timeout=None).read())


@click.command()
@click.argument("containers", nargs=-1, required=True)
@click.option("-t", "--time", "timeout", type=int, help="Seconds to wait before killing")
@click.option("-s", "--signal", "sig", help="Signal to send to the container")
@pass_state
def restart(state: State, containers: tuple[str, ...], timeout: int | None,
            sig: str | None) -> None:
    """Restart one or more containers."""
    _each(state, containers, lambda c: state.client.request(
        "POST", f"/containers/{c}/restart", {"t": timeout, "signal": sig}).read())


@click.command()
@click.argument("containers", nargs=-1, required=True)
@click.option("-s", "--signal", "sig", help="Signal to send to the container")
@pass_state
def kill(state: State, containers: tuple[str, ...], sig: str | None) -> None:
    """Kill one or more running containers."""
    _each(state, containers, lambda c: state.client.request(
        "POST", f"/containers/{c}/kill", {"signal": sig}).read())


@click.command()
@click.argument("containers", nargs=-1, required=True)
@pass_state
def pause(state: State, containers: tuple[str, ...]) -> None:
    """Pause all processes within one or more containers."""
    _each(state, containers, lambda c: state.client.request(
        "POST", f"/containers/{c}/pause").read())


@click.command()
@click.argument("containers", nargs=-1, required=True)
@pass_state
def unpause(state: State, containers: tuple[str, ...]) -> None:
    """Unpause all processes within one or more containers."""
    _each(state, containers, lambda c: state.client.request(
        "POST", f"/containers/{c}/unpause").read())


@click.command()
@click.argument("containers", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Force the removal of a running container")
@click.option("-v", "--volumes", is_flag=True, help="Remove anonymous volumes")
@click.option("-l", "--link", is_flag=True, help="Remove the specified link")
@pass_state
def rm(state: State, containers: tuple[str, ...], force: bool, volumes: bool,
       link: bool) -> None:
    """Remove one or more containers."""
    _each(state, containers, lambda c: state.client.request(
        "DELETE", f"/containers/{c}", {"force": force or None, "v": volumes or None,
                                        "link": link or None}).read())


@click.command()
@click.argument("container")
@click.argument("new_name")
@pass_state
def rename(state: State, container: str, new_name: str) -> None:
    """Rename a container."""
    state.client.request("POST", f"/containers/{container}/rename", {"name": new_name}).read()


@click.command()
@click.argument("containers", nargs=-1, required=True)
@pass_state
def wait(state: State, containers: tuple[str, ...]) -> None:
    """Block until one or more containers stop, then print their exit codes."""
    failed = False
    for c in containers:
        try:
            result = state.client.post_json(f"/containers/{c}/wait")
        except _client_error() as exc:
            click.echo(f"Error response from daemon: {exc}", err=True)
            failed = True
            continue
        click.echo(str(result.get("StatusCode", 0)))
    if failed:
        raise CLIError("", 1)


# --- listing and inspecting ---------------------------------------------------------------

def _ellipsis(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def format_ports(ports: list[dict[str, Any]]) -> str:
    out = []
    for p in sorted(ports or [], key=lambda p: (p.get("PrivatePort", 0), p.get("IP", ""))):
        proto = p.get("Type", "tcp")
        if p.get("PublicPort"):
            out.append(f"{p.get('IP') or '0.0.0.0'}:{p['PublicPort']}->"
                       f"{p.get('PrivatePort')}/{proto}")
        else:
            out.append(f"{p.get('PrivatePort')}/{proto}")
    return ", ".join(out)


def container_rows(items: list[dict[str, Any]], no_trunc: bool) -> list[dict[str, Any]]:
    rows = []
    for c in items:
        command = c.get("Command") or ""
        if not no_trunc:
            command = _ellipsis(command, 20)
        names = [n.lstrip("/") for n in c.get("Names") or [] if n.count("/") == 1]
        size = ""
        if c.get("SizeRw") is not None:
            size = f"{human_size(c.get('SizeRw') or 0)} (virtual " \
                   f"{human_size(c.get('SizeRootFs') or 0)})"
        rows.append({
            "ID": c.get("Id", "") if no_trunc else short_id(c.get("Id", "")),
            "Image": c.get("Image", ""), "Command": json.dumps(command, ensure_ascii=False),
            "CreatedAt": str(c.get("Created")),
            "RunningFor": since(parse_time(c.get("Created"))),
            "Status": c.get("Status", ""), "State": c.get("State", ""),
            "Ports": format_ports(c.get("Ports") or []), "Names": ",".join(names),
            "Labels": ",".join(f"{k}={v}" for k, v in (c.get("Labels") or {}).items()),
            "Size": size, "Mounts": ",".join(m.get("Name") or m.get("Source", "")
                                             for m in c.get("Mounts") or []),
            "Networks": ",".join((c.get("NetworkSettings") or {}).get("Networks") or {}),
        })
    return rows


_PS_TABLE = ("table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t"
             "{{.Ports}}\t{{.Names}}")
_PS_HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND",
               "RunningFor": "CREATED", "CreatedAt": "CREATED AT", "Status": "STATUS",
               "State": "STATE", "Ports": "PORTS", "Names": "NAMES", "Labels": "LABELS",
               "Size": "SIZE", "Mounts": "MOUNTS", "Networks": "NETWORKS"}


@click.command()
@click.option("-a", "--all", "all_", is_flag=True, help="Show all containers")
@click.option("-q", "--quiet", is_flag=True, help="Only display container IDs")
@click.option("-f", "--filter", "filters", multiple=True, help="Filter output (key=value)")
@click.option("--format", "fmt", help="Format output using a Go template, or json")
@click.option("-n", "--last", type=int, default=-1, help="Show n last created containers")
@click.option("-l", "--latest", is_flag=True, help="Show the latest created container")
@click.option("-s", "--size", is_flag=True, help="Display total file sizes")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output")
@pass_state
def ps(state: State, all_: bool, quiet: bool, filters: tuple[str, ...], fmt: str | None,
       last: int, latest: bool, size: bool, no_trunc: bool) -> None:
    """List containers."""
    from kobako.cli.util import parse_filters

    limit = 1 if latest else (last if last > 0 else None)
    data = state.client.get_json("/containers/json", {
        "all": (all_ or limit is not None) or None, "limit": limit, "size": size or None,
        "filters": parse_filters(filters) or None})
    rows = container_rows(data, no_trunc)
    if quiet:
        for r in rows:
            click.echo(r["ID"])
        return
    default = _PS_TABLE + ("\t{{.Size}}" if size else "")
    render_rows(fmt, default, rows, _PS_HEADERS)


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", help="Format output using a Go template")
@click.option("--type", "type_", type=click.Choice(["container", "image"]),
              help="Only inspect objects of the given type")
@click.option("-s", "--size", is_flag=True, help="Display total file sizes (containers)")
@pass_state
def inspect(state: State, names: tuple[str, ...], fmt: str | None, type_: str | None,
            size: bool) -> None:
    """Return low-level information on containers or images."""
    from kobako.cli.commands.images import print_inspect

    docs, errors = [], []
    for name in names:
        doc = None
        for kind in ([type_] if type_ else ["container", "image"]):
            path = f"/containers/{name}/json" if kind == "container" else f"/images/{name}/json"
            try:
                doc = state.client.get_json(path, {"size": size or None}
                                            if kind == "container" else None)
                break
            except _client_error() as exc:
                if exc.status not in (404, 501):  # type: ignore[attr-defined]
                    raise
        if doc is None:
            errors.append(f"Error: No such object: {name}")
        else:
            docs.append(doc)
    print_inspect(docs, fmt)
    if errors:
        raise CLIError("\n".join(errors), 1)


@click.command()
@click.argument("container")
@click.argument("ps_args", nargs=-1, type=click.UNPROCESSED)
@pass_state
def top(state: State, container: str, ps_args: tuple[str, ...]) -> None:
    """Display the running processes of a container."""
    from kobako.cli.output import table

    data = state.client.get_json(f"/containers/{container}/top",
                                 {"ps_args": " ".join(ps_args) or None})
    rows = [data.get("Titles") or []] + [list(map(str, p)) for p in data.get("Processes") or []]
    table(rows)


@click.command()
@click.argument("container")
@click.argument("private_port", required=False)
@pass_state
def port(state: State, container: str, private_port: str | None) -> None:
    """List port mappings or a specific mapping for the container."""
    doc = state.client.get_json(f"/containers/{container}/json")
    ports = (doc.get("NetworkSettings") or {}).get("Ports") or {}
    if private_port and "/" not in private_port:
        private_port += "/tcp"
    found = False
    for key in sorted(ports):
        if private_port and key != private_port:
            continue
        for b in ports[key] or []:
            found = True
            host = f"{b.get('HostIp') or '0.0.0.0'}:{b.get('HostPort')}"
            click.echo(host if private_port else f"{key} -> {host}")
    if private_port and not found:
        raise CLIError(f"Error: No public port '{private_port}' published for {container}")


@click.command()
@click.argument("container")
@click.option("-f", "--follow", is_flag=True, help="Follow log output")
@click.option("--since", help="Show logs since timestamp or relative (e.g. 42m)")
@click.option("--until", help="Show logs before a timestamp or relative (e.g. 42m)")
@click.option("-t", "--timestamps", is_flag=True, help="Show timestamps")
@click.option("-n", "--tail", default="all", help="Number of lines to show from the end")
@click.option("--details", is_flag=True, help="Show extra details provided to logs")
@pass_state
def logs(state: State, container: str, follow: bool, since: str | None, until: str | None,
         timestamps: bool, tail: str, details: bool) -> None:
    """Fetch the logs of a container."""
    resp = state.client.request("GET", f"/containers/{container}/logs", {
        "stdout": 1, "stderr": 1, "follow": follow or None, "since": since, "until": until,
        "timestamps": timestamps or None, "tail": tail, "details": details or None})
    out, err = sys.stdout.buffer, sys.stderr.buffer
    for stream_id, data in resp.iter_frames():
        target = err if stream_id == 2 else out
        target.write(data)
        target.flush()


# --- exec and attach ----------------------------------------------------------------------

@click.command("exec", context_settings={"allow_interspersed_args": False})
@click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open even if not attached")
@click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY")
@click.option("-d", "--detach", is_flag=True, help="Detached mode: run command in the background")
@click.option("-e", "--env", multiple=True, help="Set environment variables")
@click.option("--env-file", multiple=True, help="Read in a file of environment variables")
@click.option("-u", "--user", help="Username or UID (format: <name|uid>[:<group|gid>])")
@click.option("-w", "--workdir", help="Working directory inside the container")
@click.option("--privileged", is_flag=True, help="Give extended privileges to the command")
@click.option("--detach-keys", help="Override the key sequence for detaching a container")
@click.argument("container")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_state
def exec_(state: State, interactive: bool, tty: bool, detach: bool, env: tuple[str, ...],
          env_file: tuple[str, ...], user: str | None, workdir: str | None, privileged: bool,
          detach_keys: str | None, container: str, command: tuple[str, ...]) -> None:
    """Execute a command in a running container."""
    from kobako.cli import attach as attach_mod
    from kobako.cli.runopts import parse_env

    body: dict[str, Any] = {
        "AttachStdin": interactive and not detach, "AttachStdout": not detach,
        "AttachStderr": not detach, "Tty": tty, "Cmd": list(command),
        "Env": parse_env(env, env_file) or None, "User": user or "",
        "WorkingDir": workdir or "", "Privileged": privileged,
    }
    if detach_keys:
        body["DetachKeys"] = detach_keys
    size = attach_mod.terminal_size() if tty else None
    if size:
        body["ConsoleSize"] = [size[0], size[1]]
    client = state.client
    exec_id = client.post_json(f"/containers/{container}/exec", body=body)["Id"]
    if detach:
        client.request("POST", f"/exec/{exec_id}/start", body={"Detach": True, "Tty": tty}).read()
        return
    hj = client.hijack(f"/exec/{exec_id}/start", body={"Detach": False, "Tty": tty})

    def resize(h: int, w: int) -> None:
        client.request("POST", f"/exec/{exec_id}/resize", {"h": h, "w": w}).read()

    attach_mod.stream(hj, stdin=interactive, tty=tty, resize=resize)
    code = client.get_json(f"/exec/{exec_id}/json").get("ExitCode")
    if code:
        raise CLIError("", int(code))


def _attach(state: State, container: str, stdin: bool, detach_keys: str | None,
            start_it: bool = False) -> None:
    from kobako.cli import attach as attach_mod

    client = state.client
    doc = client.get_json(f"/containers/{container}/json")
    tty = bool((doc.get("Config") or {}).get("Tty"))
    stdin = stdin and bool((doc.get("Config") or {}).get("OpenStdin"))
    hj = client.hijack(f"/containers/{container}/attach", {
        "stream": 1, "stdin": 1 if stdin else 0, "stdout": 1, "stderr": 1,
        "detachKeys": detach_keys})
    waiter = _Waiter(state, container, "next-exit")
    waiter.start()
    waiter.registered.wait(10)
    if start_it:
        client.request("POST", f"/containers/{container}/start").read()

    def resize(h: int, w: int) -> None:
        client.request("POST", f"/containers/{container}/resize", {"h": h, "w": w}).read()

    attach_mod.stream(hj, stdin=stdin, tty=tty, resize=resize)
    # detached (container still running) or exited: docker reports the exit code if it ended
    state_doc = client.get_json(f"/containers/{container}/json").get("State") or {}
    if not state_doc.get("Running"):
        code = waiter.status()
        if code:
            raise CLIError("", code)


@click.command()
@click.argument("container")
@click.option("--no-stdin", is_flag=True, help="Do not attach STDIN")
@click.option("--detach-keys", help="Override the key sequence for detaching a container")
@click.option("--sig-proxy/--no-sig-proxy", default=True, help="Proxy received signals")
@pass_state
def attach(state: State, container: str, no_stdin: bool, detach_keys: str | None,
           sig_proxy: bool) -> None:
    """Attach local standard input, output, and error streams to a running container."""
    _attach(state, container, not no_stdin, detach_keys)


# --- stats --------------------------------------------------------------------------------

def _stats_row(s: dict[str, Any]) -> dict[str, str]:
    cpu = s.get("cpu_stats") or {}
    pre = s.get("precpu_stats") or {}
    cpu_delta = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - \
        (pre.get("cpu_usage") or {}).get("total_usage", 0)
    sys_delta = (cpu.get("system_cpu_usage") or 0) - (pre.get("system_cpu_usage") or 0)
    ncpu = cpu.get("online_cpus") or 1
    cpu_pct = (cpu_delta / sys_delta) * ncpu * 100.0 if sys_delta > 0 and cpu_delta > 0 else 0.0
    mem = s.get("memory_stats") or {}
    usage = (mem.get("usage") or 0) - ((mem.get("stats") or {}).get("total_inactive_file") or 0)
    limit = mem.get("limit") or 0
    nets = s.get("networks") or {}
    rx = sum(n.get("rx_bytes", 0) for n in nets.values())
    tx = sum(n.get("tx_bytes", 0) for n in nets.values())
    blk = (s.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
    rd = sum(b.get("value", 0) for b in blk if b.get("op", "").lower() == "read")
    wr = sum(b.get("value", 0) for b in blk if b.get("op", "").lower() == "write")
    from kobako.cli.commands.system import _gib

    return {
        "Container": short_id(s.get("id", "")), "Name": (s.get("name") or "").lstrip("/"),
        "CPUPerc": f"{cpu_pct:.2f}%",
        "MemUsage": f"{_gib(usage)} / {_gib(limit)}",
        "MemPerc": f"{(usage / limit * 100.0) if limit else 0.0:.2f}%",
        "NetIO": f"{human_size(rx)} / {human_size(tx)}",
        "BlockIO": f"{human_size(rd)} / {human_size(wr)}",
        "PIDs": str((s.get("pids_stats") or {}).get("current", 0)),
    }


_STATS_TABLE = ("table {{.Container}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t"
                "{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}")
_STATS_HEADERS = {"Container": "CONTAINER ID", "Name": "NAME", "CPUPerc": "CPU %",
                  "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %", "NetIO": "NET I/O",
                  "BlockIO": "BLOCK I/O", "PIDs": "PIDS"}


def _fetch_stats(state: State, names: list[str]) -> list:
    """One stats sample per container, fetched in parallel (each takes a fraction of a
    second on the daemon's side: two samples for a CPU percentage)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(name: str):
        return _stats_row(state.client.get_json(f"/containers/{name}/stats", {"stream": 0}))

    if len(names) <= 1:
        return [one(n) for n in names]
    with ThreadPoolExecutor(max_workers=min(16, len(names))) as pool:
        return list(pool.map(one, names))


@click.command()
@click.argument("containers", nargs=-1)
@click.option("-a", "--all", "all_", is_flag=True, help="Show all containers")
@click.option("--no-stream", is_flag=True, help="Disable streaming stats, pull the first result")
@click.option("--format", "fmt", help="Format output using a Go template")
@pass_state
def stats(state: State, containers: tuple[str, ...], all_: bool, no_stream: bool,
          fmt: str | None) -> None:
    """Display a live stream of container resource usage statistics."""
    names = list(containers) or [c["Id"] for c in state.client.get_json(
        "/containers/json", {"all": all_ or None})]
    while True:
        rows = _fetch_stats(state, names)
        if not no_stream and sys.stdout.isatty():
            click.echo("\033[2J\033[H", nl=False)
        render_rows(fmt, _STATS_TABLE, rows, _STATS_HEADERS)
        if no_stream:
            return
        time.sleep(1)


@click.command("prune")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
@click.option("--filter", "filters", multiple=True, help="Provide filter values")
@pass_state
def container_prune(state: State, force: bool, filters: tuple[str, ...]) -> None:
    """Remove all stopped containers."""
    from kobako.cli.util import parse_filters

    if not force and not click.confirm("WARNING! This will remove all stopped containers.\n"
                                       "Are you sure you want to continue?", default=False):
        return
    result = state.client.post_json("/containers/prune",
                                    {"filters": parse_filters(filters) or None})
    print_prune_report(result, "ContainersDeleted", "Containers")


@click.group("container")
def container() -> None:
    """Manage containers."""


for _name, _cmd in [("run", run), ("create", create), ("start", start), ("stop", stop),
                    ("restart", restart), ("kill", kill), ("rm", rm), ("remove", rm),
                    ("ls", ps), ("list", ps), ("ps", ps), ("logs", logs), ("exec", exec_),
                    ("attach", attach), ("inspect", inspect), ("top", top), ("wait", wait),
                    ("pause", pause), ("unpause", unpause), ("rename", rename), ("port", port),
                    ("stats", stats), ("prune", container_prune)]:
    container.add_command(_cmd, _name)
