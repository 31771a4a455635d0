"""version, info, events, login, logout, completion."""

from __future__ import annotations

import json
import platform
import sys
from typing import Any

import click

from kobako.cli.output import human_size
from kobako.cli.util import CLIError, State, pass_state

_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def _client_doc() -> dict[str, Any]:
    from kobako import __version__
    from kobako.client.api import CLIENT_MAX_VERSION

    return {"Version": __version__, "ApiVersion": CLIENT_MAX_VERSION,
            "DefaultAPIVersion": CLIENT_MAX_VERSION,
            "GoVersion": "python" + platform.python_version(), "Os": "linux",
            "Arch": _ARCH.get(platform.machine(), platform.machine())}


@click.command()
@click.option("-f", "--format", "fmt", help="Format output using a Go template")
@pass_state
def version(state: State, fmt: str | None) -> None:
    """Show the kobako version information."""
    from kobako.client.errors import DaemonUnreachable

    client_doc = _client_doc()
    server: dict[str, Any] | None = None
    error = None
    try:
        server = state.client.get_json("/version")
        client_doc["ApiVersion"] = state.client.version
    except DaemonUnreachable as exc:
        error = exc
    if fmt:
        from kobako.cli.gotemplate import render

        click.echo(render(fmt, {"Client": client_doc, "Server": server}))
    else:
        click.echo("Client:")
        for label, key in (("Version", "Version"), ("API version", "ApiVersion"),
                           ("Python version", "GoVersion")):
            click.echo(f" {label + ':':<19}{client_doc[key]}")
        click.echo(f" {'OS/Arch:':<19}{client_doc['Os']}/{client_doc['Arch']}")
        if server is not None:
            click.echo("")
            click.echo(f"Server: {server.get('Platform', {}).get('Name', '')}")
            for comp in server.get("Components") or []:
                click.echo(f" {comp.get('Name')}:")
                d = comp.get("Details") or {}
                click.echo(f"  {'Version:':<18}{comp.get('Version')}")
                click.echo(f"  {'API version:':<18}{d.get('ApiVersion')} "
                           f"(minimum version {d.get('MinAPIVersion')})")
                click.echo(f"  {'Python version:':<18}{d.get('GoVersion', '')}")
                click.echo(f"  {'OS/Arch:':<18}{d.get('Os')}/{d.get('Arch')}")
                click.echo(f"  {'Kernel:':<18}{d.get('KernelVersion')}")
    if error is not None:
        raise CLIError(str(error), 1)


def _print_info(info: dict[str, Any]) -> None:
    lines = [
        "Server:",
        f" Containers: {info.get('Containers', 0)}",
        f"  Running: {info.get('ContainersRunning', 0)}",
        f"  Paused: {info.get('ContainersPaused', 0)}",
        f"  Stopped: {info.get('ContainersStopped', 0)}",
        f" Images: {info.get('Images', 0)}",
        f" Server Version: {info.get('ServerVersion', '')}",
        f" Storage Driver: {info.get('Driver', '')}",
    ]
    for k, v in info.get("DriverStatus") or []:
        lines.append(f"  {k}: {v}")
    lines += [
        f" Logging Driver: {info.get('LoggingDriver', '')}",
        f" Cgroup Driver: {info.get('CgroupDriver', '')}",
        f" Cgroup Version: {info.get('CgroupVersion', '')}",
        f" Runtimes: {' '.join(sorted(info.get('Runtimes') or {}))}",
        f" Default Runtime: {info.get('DefaultRuntime', '')}",
        " Security Options:",
    ]
    for opt in info.get("SecurityOptions") or []:
        parts = dict(p.split("=", 1) for p in opt.split(",") if "=" in p)
        lines.append(f"  {parts.get('name', opt)}")
        if "profile" in parts:
            lines.append(f"   Profile: {parts['profile']}")
    lines += [
        f" Kernel Version: {info.get('KernelVersion', '')}",
        f" Operating System: {info.get('OperatingSystem', '')}",
        f" OSType: {info.get('OSType', '')}",
        f" Architecture: {info.get('Architecture', '')}",
        f" CPUs: {info.get('NCPU', 0)}",
        f" Total Memory: {_gib(info.get('MemTotal', 0))}",
        f" Name: {info.get('Name', '')}",
        f" ID: {info.get('ID', '')}",
        f" Kobako Root Dir: {info.get('DockerRootDir', '')}",
        f" Debug Mode: {str(bool(info.get('Debug'))).lower()}",
        f" Live Restore Enabled: {str(bool(info.get('LiveRestoreEnabled'))).lower()}",
    ]
    reg = info.get("RegistryConfig") or {}
    insecure = reg.get("InsecureRegistryCIDRs") or []
    insecure += [k for k, v in (reg.get("IndexConfigs") or {}).items() if not v.get("Secure")]
    if insecure:
        lines.append(" Insecure Registries:")
        lines += [f"  {r}" for r in insecure]
    if reg.get("Mirrors"):
        lines.append(" Registry Mirrors:")
        lines += [f"  {m}" for m in reg["Mirrors"]]
    click.echo("\n".join(lines))
    for w in info.get("Warnings") or []:
        click.echo(f"WARNING: {w}", err=True)


def _gib(n: int) -> str:
    """docker's units.BytesSize: binary units with 2 decimals."""
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    size, i = float(n), 0
    while size >= 1024 and i < len(units) - 1:
        size /= 1024
        i += 1
    return f"{size:.4g}{units[i]}"


@click.command()
@click.option("-f", "--format", "fmt", help="Format output using a Go template")
@pass_state
def info(state: State, fmt: str | None) -> None:
    """Display system-wide information."""
    doc = state.client.get_json("/info")
    if fmt:
        from kobako.cli.gotemplate import render

        click.echo(render(fmt, doc))
        return
    _print_info(doc)


@click.command()
@click.option("--since", help="Show all events created since timestamp")
@click.option("--until", help="Stream events until this timestamp")
@click.option("-f", "--filter", "filters", multiple=True, help="Filter output (key=value)")
@click.option("--format", "fmt", help="Format output using a Go template")
@pass_state
def events(state: State, since: str | None, until: str | None, filters: tuple[str, ...],
           fmt: str | None) -> None:
    """Get real time events from the server."""
    from kobako.cli.util import parse_filters

    params = {"since": since, "until": until, "filters": parse_filters(filters) or None}
    resp = state.client.request("GET", "/events", params)
    for ev in resp.iter_json():
        if fmt:
            from kobako.cli.gotemplate import render

            click.echo(render(fmt, ev))
            continue
        from datetime import UTC, datetime

        when = datetime.fromtimestamp(ev.get("timeNano", 0) / 1e9, UTC)
        actor = ev.get("Actor", {})
        attrs = ", ".join(f"{k}={v}" for k, v in sorted((actor.get("Attributes") or {}).items()))
        click.echo(f"{when.isoformat()} {ev.get('Type')} {ev.get('Action')} "
                   f"{actor.get('ID', '')}" + (f" ({attrs})" if attrs else ""))


@click.command()
@click.argument("server", required=False)
@click.option("-u", "--username", help="Username")
@click.option("-p", "--password", help="Password")
@click.option("--password-stdin", is_flag=True, help="Take the password from stdin")
@pass_state
def login(state: State, server: str | None, username: str | None, password: str | None,
          password_stdin: bool) -> None:
    """Log in to a registry (credentials are stored in docker's config.json)."""
    from kobako.image.auth import Credentials, DockerConfig

    server = server or "docker.io"
    if password_stdin:
        if password:
            raise CLIError("--password and --password-stdin are mutually exclusive")
        password = sys.stdin.read().rstrip("\r\n")
    if not username:
        username = click.prompt("Username")
    if password is None:
        password = click.prompt("Password", hide_input=True)
    body = {"username": username, "password": password, "serveraddress": server}
    result = state.client.post_json("/auth", body=body)
    DockerConfig().store(server, Credentials(username, password,
                                             (result or {}).get("IdentityToken") or None))
    click.echo((result or {}).get("Status") or "Login Succeeded")


@click.command()
@click.argument("server", required=False)
def logout(server: str | None) -> None:
    """Log out from a registry."""
    from kobako.image.auth import logout as do_logout

    click.echo(do_logout(server or "docker.io"))


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script: eval "$(kobako completion bash)"."""
    from click.shell_completion import get_completion_class

    from kobako.cli.main import cli

    cls = get_completion_class(shell)
    if cls is None:
        raise CLIError(f"unsupported shell {shell}")
    click.echo(cls(cli, {}, "kobako", "_KOBAKO_COMPLETE").source())


def dump_json(doc: Any) -> str:
    return json.dumps(doc, indent=4)


__all__ = ["version", "info", "events", "login", "logout", "completion", "human_size"]
