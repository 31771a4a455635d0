"""`kobako-runtime run`: create, start and (unless --detach) wait, then delete."""

from __future__ import annotations

from . import foreground
from .console import receive_master
from .container import Runtime, load_config


def run_from_cli(runtime: Runtime, args) -> int:
    container_id = args.container_id
    options = dict(pid_file=args.pid_file, no_pivot=args.no_pivot,
                   no_new_keyring=args.no_new_keyring, preserve_fds=args.preserve_fds)
    if args.detach:
        runtime.create(container_id, args.bundle, console_socket=args.console_socket, **options)
        runtime.start(container_id)
        return 0
    config = load_config(args.bundle)
    options["config"] = config
    terminal = bool((config.get("process") or {}).get("terminal"))
    foreground.become_subreaper()
    ours = None
    if terminal and not args.console_socket:
        ours, theirs = foreground.console_pair()
        state = runtime.create(container_id, args.bundle, console=theirs, **options)
    else:
        state = runtime.create(container_id, args.bundle, console_socket=args.console_socket,
                               **options)
    master = None
    try:
        if ours is not None:
            master = receive_master(ours)
            ours.close()
        runtime.start(container_id)
        return foreground.wait_for(state.pid, master)
    finally:
        if not args.keep:
            runtime.delete(container_id, force=True)
