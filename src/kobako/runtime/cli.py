"""kobako-runtime: runc's command line over kobako.runtime.

Output formats (state, list, ps) match runc's exactly, because containerd's shim
and podman parse them. Errors go to stderr and to --log (JSON lines with
--log-format json), with a non-zero exit.

Imports are kept lazy: this runs once per container operation, and start-up
time is most of its cost.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from kobako import __version__
from kobako.linux.cgroups.errors import CgroupError

from .errors import RuntimeFailure
from .log import RuntimeLog
from .state import DEFAULT_ROOT, OCI_VERSION

_GLOBALS_WITH_VALUE = {"--root", "--log", "--log-format", "--rootless", "--criu"}


def _command_of(argv: list[str]) -> str | None:
    """The subcommand, found without building every subcommand's parser (start-up time)."""
    args = iter(argv)
    for arg in args:
        if arg in _GLOBALS_WITH_VALUE:
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


class _Formatter(argparse.HelpFormatter):
    """A fixed width: argparse would otherwise import shutil to ask the terminal, per flag."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=100)


def _parser(only: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kobako-runtime", description="a runc-compatible OCI runtime",
                                formatter_class=_Formatter)
    p.add_argument("--root", default=DEFAULT_ROOT, help="state directory (default %(default)s)")
    p.add_argument("--log", default=None, help="log file (default: stderr only)")
    p.add_argument("--log-format", default="text", choices=["text", "json"])
    p.add_argument("--debug", action="store_true")
    p.add_argument("--systemd-cgroup", action="store_true",
                   help='cgroupsPath is "slice:prefix:name", laid out as systemd would')
    p.add_argument("--rootless", default="auto", help="accepted for runc compatibility")
    p.add_argument("--criu", default="criu", help="accepted for runc compatibility")
    p.add_argument("-v", "--version", action="store_true", help="print the version")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    names = [only] if only in _SUBCOMMANDS else list(_SUBCOMMANDS)
    for name in names:
        help_text, define = _SUBCOMMANDS[name]
        define(sub.add_parser(name, help=help_text, description=help_text,
                              formatter_class=_Formatter))
    return p


def _create_flags(c: argparse.ArgumentParser) -> None:
    c.add_argument("-b", "--bundle", default=".")
    c.add_argument("--console-socket")
    c.add_argument("--pid-file")
    c.add_argument("--no-pivot", action="store_true")
    c.add_argument("--no-new-keyring", action="store_true")
    c.add_argument("--preserve-fds", type=int, default=0)
    c.add_argument("--pidfd-socket", help="not supported")
    c.add_argument("container_id")


def _run_flags(c: argparse.ArgumentParser) -> None:
    _create_flags(c)
    c.add_argument("-d", "--detach", action="store_true")
    c.add_argument("--keep", action="store_true", help="do not delete the container after exit")


def _id_only(c: argparse.ArgumentParser) -> None:
    c.add_argument("container_id")


def _kill_flags(c: argparse.ArgumentParser) -> None:
    c.add_argument("-a", "--all", action="store_true")
    c.add_argument("container_id")
    c.add_argument("signal", nargs="?", default="SIGTERM")


def _delete_flags(c: argparse.ArgumentParser) -> None:
    c.add_argument("-f", "--force", action="store_true")
    c.add_argument("container_id")


def _ps_flags(c: argparse.ArgumentParser) -> None:
    c.add_argument("-f", "--format", default="table", choices=["table", "json"])
    c.add_argument("container_id")
    c.add_argument("ps_args", nargs=argparse.REMAINDER)


def _list_flags(c: argparse.ArgumentParser) -> None:
    c.add_argument("-f", "--format", default="table", choices=["table", "json"])
    c.add_argument("-q", "--quiet", action="store_true")


def _update_flags(c: argparse.ArgumentParser) -> None:
    c.add_argument("-r", "--resources", help="LinuxResources JSON file, - for stdin")
    for flag in ("--memory", "--memory-reservation", "--memory-swap", "--kernel-memory",
                 "--cpu-shares", "--cpu-quota", "--cpu-period", "--cpu-rt-runtime",
                 "--cpu-rt-period", "--cpuset-cpus", "--cpuset-mems", "--pids-limit",
                 "--blkio-weight", "--cpu-idle"):
        c.add_argument(flag)
    c.add_argument("container_id")


def _events_flags(c: argparse.ArgumentParser) -> None:
    c.add_argument("--stats", action="store_true", help="print one stats document")
    c.add_argument("--interval", default="5s")
    c.add_argument("container_id")


def _exec_flags(c: argparse.ArgumentParser) -> None:
    c.add_argument("-p", "--process", help="process.json")
    c.add_argument("-t", "--tty", action="store_true")
    c.add_argument("-d", "--detach", action="store_true")
    c.add_argument("--pid-file")
    c.add_argument("--console-socket")
    c.add_argument("--pidfd-socket", help="not supported")
    c.add_argument("--cwd")
    c.add_argument("-e", "--env", action="append", default=[])
    c.add_argument("-u", "--user")
    c.add_argument("-g", "--additional-gids", action="append", default=[])
    c.add_argument("-c", "--cap", action="append", default=[])
    c.add_argument("--no-new-privs", action="store_true")
    c.add_argument("--preserve-fds", type=int, default=0)
    c.add_argument("--process-label")
    c.add_argument("--apparmor")
    c.add_argument("--cgroup")
    c.add_argument("--ignore-paused", action="store_true")
    c.add_argument("container_id")
    c.add_argument("exec_args", metavar="command", nargs=argparse.REMAINDER)


def _spec_flags(c: argparse.ArgumentParser) -> None:
    c.add_argument("-b", "--bundle", default=".")
    c.add_argument("--rootless", action="store_true")


def _no_flags(c: argparse.ArgumentParser) -> None:
    pass


_SUBCOMMANDS = {
    "create": ("create a container", _create_flags),
    "run": ("create and run a container", _run_flags),
    "start": ("start a created container", _id_only),
    "state": ("output the state of a container", _id_only),
    "kill": ("send a signal to the container's init (or all processes)", _kill_flags),
    "delete": ("delete a container and everything it holds", _delete_flags),
    "ps": ("list the processes running in a container", _ps_flags),
    "list": ("list containers", _list_flags),
    "pause": ("freeze all processes of a container", _id_only),
    "resume": ("thaw a paused container", _id_only),
    "update": ("update a container's resource limits", _update_flags),
    "events": ("container statistics", _events_flags),
    "exec": ("run a process in a running container", _exec_flags),
    "features": ("show the runtime's features (JSON)", _no_flags),
    "spec": ("write a default config.json", _spec_flags),
}


def print_version() -> None:
    commit = "unknown"
    print(f"kobako-runtime version {__version__}\ncommit: {commit}\nspec: {OCI_VERSION}")


def parse_signal(value: str) -> int:
    from kobako.linux.signals import signal_number

    try:
        return signal_number(value)
    except ValueError as err:
        raise RuntimeFailure(str(err)) from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Go-style single-dash long flags (-root, -log) appear in some callers.
    argv = [("-" + a) if a.startswith("-") and not a.startswith("--") and len(a) > 2
            and a[1:].split("=")[0] in _LONG_GLOBALS else a for a in argv]
    args = _parser(_command_of(argv)).parse_args(argv)
    log = RuntimeLog(args.log, args.log_format, args.debug)
    if args.version:
        print_version()
        return 0
    if not args.command:
        _parser().print_help()
        return 0
    if args.command in _MIGRATING:
        from kobako.linux.cgroups import warmup

        warmup.start()
    try:
        return _COMMANDS[args.command](args, log) or 0
    except (RuntimeFailure, CgroupError) as err:  # (a cgroup refusing the init, say)
        log.error(str(err))
        return 1
    except OSError as err:
        log.error(str(err))
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # a bug of ours: still one line, and in --log for the shim
        log.error(f"internal error: {type(err).__name__}: {err}")
        if args.debug:
            raise
        return 1


def entry() -> None:
    """The console script."""
    from kobako import fastexit

    fastexit.run(main)


# commands that move a process into a cgroup by its pid (exec's is born there)
_MIGRATING = {"create", "run"}

_LONG_GLOBALS = {"root", "log", "log-format", "debug", "systemd-cgroup", "rootless", "criu"}


def _runtime(args, log):
    from .container import Runtime

    return Runtime(os.path.abspath(args.root), systemd_cgroup=args.systemd_cgroup, log=log)


def _create(args, log):
    _runtime(args, log).create(
        args.container_id, args.bundle, pid_file=args.pid_file,
        console_socket=args.console_socket, no_pivot=args.no_pivot,
        no_new_keyring=args.no_new_keyring, preserve_fds=args.preserve_fds,
    )


def _start(args, log):
    _runtime(args, log).start(args.container_id)


def _state(args, log):
    print(json.dumps(_runtime(args, log).state(args.container_id), indent=2))


def _kill(args, log):
    _runtime(args, log).kill(args.container_id, parse_signal(args.signal), args.all)


def _delete(args, log):
    from .errors import ContainerNotExist

    try:
        _runtime(args, log).delete(args.container_id, force=args.force)
    except ContainerNotExist:
        if not args.force:
            raise


def _pause(args, log):
    _runtime(args, log).pause(args.container_id)


def _resume(args, log):
    _runtime(args, log).resume(args.container_id)


def _list(args, log):
    docs = _runtime(args, log).list()
    if args.quiet:
        for doc in docs:
            print(doc["id"])
    elif args.format == "json":
        # as runc prints it: compact, the owner filled in
        print(json.dumps([{**d, "owner": d["owner"] or "root"} for d in docs],
                         separators=(",", ":")))
    else:
        rows = [["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]]
        rows += [[d["id"], str(d["pid"]), d["status"], d["bundle"], d["created"],
                  d["owner"] or "root"] for d in docs]
        print(_tabwriter(rows), end="")


def _tabwriter(rows: list[list[str]], minwidth: int = 12, padding: int = 3) -> str:
    """Go's text/tabwriter as runc configures it (minwidth 12, padding 3)."""
    widths = [max(minwidth, max(len(r[i]) for r in rows) + padding) for i in range(len(rows[0]))]
    return "".join(
        "".join(cell.ljust(widths[i]) if i < len(row) - 1 else cell
                for i, cell in enumerate(row)) + "\n"
        for row in rows
    )


def _ps(args, log):
    pids = _runtime(args, log).pids(args.container_id)
    if args.format == "json":
        print(json.dumps(pids))
        return
    import subprocess

    ps_args = args.ps_args or ["-ef"]
    out = subprocess.run(["ps", *ps_args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeFailure(f"ps {' '.join(ps_args)}: {out.stderr.strip()}")
    lines = out.stdout.splitlines()
    if not lines:
        return
    header = lines[0].split()
    if "PID" not in header:
        raise RuntimeFailure("couldn't find PID field in ps output")
    column = header.index("PID")
    print(lines[0])
    wanted = set(pids)
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > column and fields[column].isdigit() and int(fields[column]) in wanted:
            print(line)


def _update(args, log):
    if args.resources:
        raw = sys.stdin.read() if args.resources == "-" else open(args.resources).read()
        try:
            resources = json.loads(raw)
        except ValueError as err:
            raise RuntimeFailure(f"invalid resources JSON: {err}") from None
    else:
        resources = _resources_from_flags(args)
    _runtime(args, log).update(args.container_id, resources)


_BYTE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def _flag_number(flag: str, value: str | None, byte_units: bool = False) -> int | None:
    """A numeric update flag; memory flags take units as runc's (Docker's RAMInBytes): 10m, 1g."""
    if value is None:
        return None
    text = value.strip().lower()
    unit = ""
    if byte_units:
        text = text.removesuffix("b")
        if text[-1:] in _BYTE_UNITS:
            text, unit = text[:-1], text[-1]
    try:
        number = float(text) if unit and "." in text else int(text)
    except ValueError:
        raise RuntimeFailure(f"invalid value for --{flag}: {value!r}") from None
    return int(number * _BYTE_UNITS[unit])


def _resources_from_flags(args) -> dict:
    def num(flag: str, byte_units: bool = False):
        return _flag_number(flag, getattr(args, flag.replace("-", "_")), byte_units)

    memory = {"limit": num("memory", True), "reservation": num("memory-reservation", True),
              "swap": num("memory-swap", True), "kernel": num("kernel-memory", True)}
    cpu = {"shares": num("cpu-shares"), "quota": num("cpu-quota"),
           "period": num("cpu-period"), "realtimeRuntime": num("cpu-rt-runtime"),
           "realtimePeriod": num("cpu-rt-period"), "cpus": args.cpuset_cpus,
           "mems": args.cpuset_mems, "idle": num("cpu-idle")}
    resources: dict = {}
    for key, group in (("memory", memory), ("cpu", cpu)):
        group = {k: v for k, v in group.items() if v is not None}
        if group:
            resources[key] = group
    if args.pids_limit is not None:
        resources["pids"] = {"limit": num("pids-limit")}
    if args.blkio_weight is not None:
        resources["blockIO"] = {"weight": num("blkio-weight")}
    return resources


def _events(args, log):
    runtime = _runtime(args, log)
    if args.stats:
        print(json.dumps({"type": "stats", "id": args.container_id,
                          "data": runtime.stats(args.container_id)}))
        return
    import time

    interval = _duration(args.interval)
    while True:
        try:
            data = runtime.stats(args.container_id)
        except RuntimeFailure:
            return
        print(json.dumps({"type": "stats", "id": args.container_id, "data": data}), flush=True)
        time.sleep(interval)


def _duration(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for suffix in ("ms", "s", "m", "h"):
        if value.endswith(suffix) and value[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(value[: -len(suffix)]) * units[suffix]
    raise RuntimeFailure(f"invalid duration {value!r}")


def _exec(args, log):
    from .exec import exec_from_cli

    return exec_from_cli(_runtime(args, log), args)


def _run(args, log):
    from .run import run_from_cli

    return run_from_cli(_runtime(args, log), args)


def _features(args, log):
    from .features import features

    print(json.dumps(features(), indent=4))


def _spec(args, log):
    from .spec import default_spec

    path = os.path.join(args.bundle, "config.json")
    if os.path.exists(path):
        raise RuntimeFailure("File config.json exists. Remove it first.")
    with open(path, "w") as f:
        json.dump(default_spec(rootless=args.rootless), f, indent="\t")


_COMMANDS = {
    "create": _create, "start": _start, "state": _state, "kill": _kill, "delete": _delete,
    "pause": _pause, "resume": _resume, "list": _list, "ps": _ps, "update": _update,
    "events": _events, "exec": _exec, "run": _run, "features": _features, "spec": _spec,
}

if __name__ == "__main__":
    entry()
