"""kobako network: ls, create, inspect, rm, prune, connect, disconnect (through the API)."""

from __future__ import annotations

import json

import click

from kobako.cli.util import State, parse_filters, pass_state


@click.group()
def network() -> None:
    """Manage networks."""


@network.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only display network IDs")
@click.option("-f", "--filter", "filters", multiple=True, help="Filter output (key=value)")
@pass_state
def ls(state: State, quiet: bool, filters: tuple[str, ...]) -> None:
    """List networks."""
    params = {"filters": json.dumps(parse_filters(filters))} if filters else None
    nets = state.client.get_json("/networks", params)
    if quiet:
        for n in nets:
            click.echo(n["Id"][:12])
        return
    click.echo(f"{'NETWORK ID':<15}{'NAME':<20}{'DRIVER':<10}SCOPE")
    for n in nets:
        click.echo(f"{n['Id'][:12]:<15}{n['Name']:<20}{n['Driver']:<10}{n['Scope']}")


@network.command()
@click.argument("name")
@click.option("-d", "--driver", default="bridge", help="Driver to manage the network")
@click.option("--subnet", help="Subnet in CIDR format")
@click.option("--gateway", help="IPv4 gateway for the subnet")
@click.option("--ip-range", help="Allocate container IPs from a sub-range")
@click.option("--internal", is_flag=True, help="Restrict external access to the network")
@click.option("--label", multiple=True, help="Set metadata on a network")
@click.option("-o", "--opt", multiple=True, help="Set driver specific options")
@pass_state
def create(state: State, name: str, driver: str, subnet: str | None, gateway: str | None,
           ip_range: str | None, internal: bool, label: tuple[str, ...],
           opt: tuple[str, ...]) -> None:
    """Create a network."""
    config = {k: v for k, v in (("Subnet", subnet), ("Gateway", gateway),
                                ("IPRange", ip_range)) if v}
    body = {"Name": name, "Driver": driver, "Internal": internal,
            "IPAM": {"Driver": "default", "Config": [config] if config else []},
            "Labels": dict(item.partition("=")[::2] for item in label),
            "Options": dict(item.partition("=")[::2] for item in opt)}
    click.echo(state.client.post_json("/networks/create", body=body)["Id"])


@network.command()
@click.argument("networks", nargs=-1, required=True)
@pass_state
def inspect(state: State, networks: tuple[str, ...]) -> None:
    """Display detailed information on one or more networks."""
    click.echo(json.dumps([state.client.get_json(f"/networks/{n}") for n in networks],
                          indent=4))


@network.command("rm")
@click.argument("networks", nargs=-1, required=True)
@pass_state
def rm(state: State, networks: tuple[str, ...]) -> None:
    """Remove one or more networks."""
    for n in networks:
        state.client.delete(f"/networks/{n}")
        click.echo(n)


@network.command()
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
@pass_state
def prune(state: State, force: bool) -> None:
    """Remove all unused networks."""
    result = state.client.post_json("/networks/prune")
    for name in result.get("NetworksDeleted") or []:
        click.echo(name)


@network.command()
@click.argument("network_ref")
@click.argument("container")
@click.option("--ip", help="IPv4 address")
@click.option("--alias", multiple=True, help="Add network-scoped alias for the container")
@pass_state
def connect(state: State, network_ref: str, container: str, ip: str | None,
            alias: tuple[str, ...]) -> None:
    """Connect a container to a network."""
    config = {"Aliases": list(alias) or None,
              "IPAMConfig": {"IPv4Address": ip} if ip else None}
    state.client.request("POST", f"/networks/{network_ref}/connect",
                         body={"Container": container, "EndpointConfig": config}).read()


@network.command()
@click.argument("network_ref")
@click.argument("container")
@click.option("-f", "--force", is_flag=True, help="Force the container to disconnect")
@pass_state
def disconnect(state: State, network_ref: str, container: str, force: bool) -> None:
    """Disconnect a container from a network."""
    state.client.request("POST", f"/networks/{network_ref}/disconnect",
                         body={"Container": container, "Force": force}).read()
