"""The `kobako` command: a client of kobakod's API, mirroring docker's commands.

Commands are imported lazily (only the one being run), so that start-up stays
around Python's own start-up plus click.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from kobako.cli.util import CLIError, State

# name -> ("module:attribute", short help). Modules are under kobako.cli.commands.
COMMANDS: dict[str, tuple[str, str]] = {
    # containers
    "run": ("containers:run", "Create and run a new container from an image"),
    "create": ("containers:create", "Create a new container"),
    "start": ("containers:start", "Start one or more stopped containers"),
    "stop": ("containers:stop", "Stop one or more running containers"),
    "restart": ("containers:restart", "Restart one or more containers"),
    "kill": ("containers:kill", "Kill one or more running containers"),
    "rm": ("containers:rm", "Remove one or more containers"),
    "ps": ("containers:ps", "List containers"),
    "logs": ("containers:logs", "Fetch the logs of a container"),
    "exec": ("containers:exec_", "Execute a command in a running container"),
    "attach": ("containers:attach", "Attach local standard input, output, and error streams"),
    "inspect": ("containers:inspect", "Return low-level information on kobako objects"),
    "top": ("containers:top", "Display the running processes of a container"),
    "wait": ("containers:wait", "Block until containers stop, then print their exit codes"),
    "pause": ("containers:pause", "Pause all processes within one or more containers"),
    "unpause": ("containers:unpause", "Unpause all processes within one or more containers"),
    "rename": ("containers:rename", "Rename a container"),
    "port": ("containers:port", "List port mappings or a specific mapping for the container"),
    "stats": ("containers:stats", "Display a live stream of container resource usage"),
    "container": ("containers:container", "Manage containers"),
    "network": ("network:network", "Manage networks"),
    "ns": ("ns:ns", "Show the namespaces of containers and the host, and which are shared"),
    "netns": ("netns:netns", "Link containers' network namespaces for `ip netns`"),
    # images
    "build": ("build:build", "Build an image from a Dockerfile"),
    "pull": ("images:pull", "Download an image from a registry"),
    "push": ("images:push", "Upload an image to a registry"),
    "images": ("images:images", "List images"),
    "rmi": ("images:rmi", "Remove one or more images"),
    "tag": ("images:tag", "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE"),
    "save": ("images:save", "Save one or more images to a tar archive"),
    "load": ("images:load", "Load an image from a tar archive or STDIN"),
    "import": ("images:import_", "Import the contents from a tarball to create an image"),
    "history": ("images:history", "Show the history of an image"),
    "image": ("images:image", "Manage images"),
    # system
    "version": ("system:version", "Show the kobako version information"),
    "info": ("system:info", "Display system-wide information"),
    "events": ("system:events", "Get real time events from the server"),
    "login": ("system:login", "Log in to a registry"),
    "logout": ("system:logout", "Log out from a registry"),
    "completion": ("system:completion", "Print the shell completion script (bash, zsh, fish)"),
    "volume": ("volume:volume", "Manage volumes"),
    "cp": ("storage:cp", "Copy files/folders between a container and the local filesystem"),
    "diff": ("storage:diff", "Inspect changes to files or directories on a container's filesystem"),
    "export": ("storage:export", "Export a container's filesystem as a tar archive"),
    "commit": ("storage:commit", "Create a new image from a container's changes"),
    "update": ("storage:update", "Update configuration of one or more containers"),
}


class LazyGroup(click.Group):
    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]] | None = None,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            target, _ = self.lazy[cmd_name]
            module, attr = target.split(":")
            return getattr(importlib.import_module(f"kobako.cli.commands.{module}"), attr)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # short help from the table: --help must not import every command module
        rows = [(name, self.lazy[name][1]) for name in sorted(self.lazy)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, lazy=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-H", "--host", envvar="KOBAKO_HOST", default=None, metavar="HOST",
              help="Daemon socket to connect to (default unix:///run/kobako.sock, or $KOBAKO_HOST)")
@click.option("-D", "--debug", is_flag=True, help="Enable debug output")
@click.version_option(package_name="kobako", prog_name="kobako", message="%(prog)s version %(version)s")
@click.pass_context
def cli(ctx: click.Context, host: str | None, debug: bool) -> None:
    """kobako: a Docker-compatible container engine client."""
    ctx.obj = State(host=host, debug=debug)


def main(argv: list[str] | None = None) -> int:
    from kobako.client.errors import ClientError, DaemonUnreachable

    try:
        cli.main(args=argv, prog_name="kobako", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return 125 if _running_run(argv) else exc.exit_code
    except click.exceptions.Abort:
        print("Aborted!", file=sys.stderr)
        return 130
    except CLIError as exc:
        if exc.message:
            print(exc.message, file=sys.stderr)
        return exc.code
    except ClientError as exc:
        print(f"Error response from daemon: {exc.message}", file=sys.stderr)
        return 125 if _running_run(argv) else 1
    except DaemonUnreachable as exc:
        print(str(exc), file=sys.stderr)
        return 125 if _running_run(argv) else 1
    except BrokenPipeError:
        return 141
    except KeyboardInterrupt:
        return 130
    return 0


def entry() -> None:
    """The console script."""
    from kobako import fastexit

    fastexit.run(main)


def _running_run(argv: list[str] | None) -> bool:
    args = list(argv if argv is not None else sys.argv[1:])
    while args and args[0].startswith("-"):  # global options before the command
        opt = args.pop(0)
        if opt in ("-H", "--host") and args:
            args.pop(0)
    if args and args[0] == "container":
        args.pop(0)
    return bool(args) and args[0] in ("run", "create")


if __name__ == "__main__":
    sys.exit(main())
