"""kobako netns expose/unexpose: containers' network namespaces for `ip netns`."""

from __future__ import annotations

import click

from kobako.cli.util import State, err, fail, pass_state


@click.group()
def netns() -> None:
    """Show containers' network namespaces to `ip netns`.

    `expose` links a container's network namespace into /var/run/netns under the
    container's name, so `ip netns list` shows it and `ip netns exec NAME ip a`
    runs a host command inside it. The link goes away when the container stops.

    The kernel makes a difference between the two ways in:

    \b
      ip netns exec NAME CMD   switches only the network namespace: CMD is a host
                               program, sees the host's files, processes and users,
                               but the container's interfaces, routes and sockets.
      kobako exec NAME CMD     enters all of the container's namespaces (mount,
                               pid, uts, ipc, net...): CMD is the container's
                               program and sees only the container.
    """


def _target(state: State, ref: str) -> tuple[str, str, int]:
    doc = state.client.get_json(f"/containers/{ref}/json")
    if not doc["State"].get("Running") or not doc["State"].get("Pid"):
        fail(f"Error response from daemon: container {ref} is not running")
    return doc["Name"].lstrip("/"), doc["Id"], int(doc["State"]["Pid"])


@netns.command()
@click.argument("containers", nargs=-1)
@pass_state
def expose(state: State, containers: tuple[str, ...]) -> None:
    """Link containers' network namespaces as /var/run/netns/<name> (all running
    containers when none is given)."""
    from kobako.network.exposure import ExposureError
    from kobako.network.exposure import expose as link

    refs = containers or tuple(c["Id"] for c in state.client.get_json("/containers/json"))
    failed = False
    for ref in refs:
        name, cid, pid = _target(state, ref)
        try:
            exposure = link(name, cid, pid)
        except ExposureError as error:
            err(f"cannot expose {ref}: {error.strerror}")
            failed = True
            continue
        click.echo(exposure.link)
    if failed:
        fail("", 1)


@netns.command()
@click.argument("names", nargs=-1)
@pass_state
def unexpose(state: State, names: tuple[str, ...]) -> None:
    """Remove the /var/run/netns links made by `expose` (all of them when no name is
    given). Only links made by kobako are touched."""
    from kobako.network.exposure import ExposureError, by_name, records
    from kobako.network.exposure import unexpose as unlink

    targets = [by_name(n) for n in names] if names else records()
    failed = False
    for name, exposure in zip(names or [e.name for e in targets], targets, strict=True):
        if exposure is None:
            err(f"{name} was not exposed by kobako")
            failed = True
            continue
        try:
            unlink(exposure)
        except ExposureError as error:
            err(f"cannot unexpose {name}: {error.strerror}")
            failed = True
            continue
        click.echo(name)
    if failed:
        fail("", 1)
