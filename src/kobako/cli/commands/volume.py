"""`kobako volume`: create, ls, inspect, rm, prune (as docker's)."""

from __future__ import annotations

import json
from typing import Any

import click

from kobako.cli.output import print_prune_report, render_rows
from kobako.cli.util import CLIError, State, parse_filters, pass_state


def _options(items: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep and what == "opt":
            raise CLIError(f"invalid key value pair format in driver options: {item}")
        out[key] = value
    return out


@click.command("create")
@click.argument("name", required=False)
@click.option("-d", "--driver", default="local", help="Specify volume driver name")
@click.option("-o", "--opt", "opts", multiple=True, help="Set driver specific options")
@click.option("--label", "labels", multiple=True, help="Set metadata for a volume")
@click.option("--name", "name_opt", help="Specify volume name")
@pass_state
def create(state: State, name: str | None, driver: str, opts: tuple[str, ...],
           labels: tuple[str, ...], name_opt: str | None) -> None:
    """Create a volume."""
    doc = state.client.post_json("/volumes/create", body={
        "Name": name or name_opt or "", "Driver": driver,
        "DriverOpts": _options(opts, "opt"), "Labels": _options(labels, "label")})
    click.echo(doc["Name"])


@click.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only display volume names")
@click.option("-f", "--filter", "filters", multiple=True, help="Provide filter values")
@click.option("--format", "fmt", help="Format output using a Go template")
@pass_state
def ls(state: State, quiet: bool, filters: tuple[str, ...], fmt: str | None) -> None:
    """List volumes."""
    params = {"filters": json.dumps(parse_filters(filters))} if filters else None
    volumes = state.client.get_json("/volumes", params).get("Volumes") or []
    if quiet:
        for v in volumes:
            click.echo(v["Name"])
        return
    render_rows(fmt, "table {{.Driver}}\t{{.Name}}", volumes,
                {"Driver": "DRIVER", "Name": "VOLUME NAME"})


@click.command("inspect")
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", help="Format output using a Go template")
@pass_state
def inspect(state: State, names: tuple[str, ...], fmt: str | None) -> None:
    """Display detailed information on one or more volumes."""
    from kobako.cli.commands.images import print_inspect

    docs: list[Any] = []
    failed = False
    for name in names:
        try:
            docs.append(state.client.get_json(f"/volumes/{name}"))
        except Exception as exc:  # noqa: BLE001 - reported as docker does, then exit 1
            click.echo(f"Error response from daemon: {exc}", err=True)
            failed = True
    print_inspect(docs, fmt)
    if failed:
        raise CLIError("", 1)


@click.command("rm")
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Force the removal of one or more volumes")
@pass_state
def rm(state: State, names: tuple[str, ...], force: bool) -> None:
    """Remove one or more volumes."""
    failed = False
    for name in names:
        try:
            state.client.request("DELETE", f"/volumes/{name}",
                                 {"force": "1"} if force else None).read()
            click.echo(name)
        except Exception as exc:  # noqa: BLE001 - reported as docker does, then exit 1
            click.echo(f"Error response from daemon: {exc}", err=True)
            failed = True
    if failed:
        raise CLIError("", 1)


@click.command("prune")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove all unused volumes")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
@click.option("--filter", "filters", multiple=True, help="Provide filter values")
@pass_state
def prune(state: State, all_: bool, force: bool, filters: tuple[str, ...]) -> None:
    """Remove unused local volumes."""
    if not force and not click.confirm("WARNING! This will remove anonymous local volumes not "
                                       "used by at least one container.\nAre you sure you "
                                       "want to continue?", default=False):
        return
    wanted = parse_filters(filters)
    if all_:
        wanted["all"] = ["true"]
    result = state.client.post_json("/volumes/prune",
                                    {"filters": json.dumps(wanted)} if wanted else None)
    print_prune_report(result, "VolumesDeleted", "Volumes")


@click.group("volume")
def volume() -> None:
    """Manage volumes."""


for _name, _cmd in [("create", create), ("ls", ls), ("list", ls), ("inspect", inspect),
                    ("rm", rm), ("remove", rm), ("prune", prune)]:
    volume.add_command(_cmd, _name)
