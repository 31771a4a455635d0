"""OCI lifecycle hooks: each gets the container's state JSON on stdin and may have a timeout."""

from __future__ import annotations

import json
import os
import signal

from .errors import RuntimeFailure

# the hooks that fail the operation; poststart and poststop failures are only logged
FATAL_HOOKS = ("prestart", "createRuntime", "createContainer", "startContainer")


class HookFailed(RuntimeFailure):
    pass


def run_hooks(config: dict, kind: str, state: dict) -> None:
    for hook in (config.get("hooks") or {}).get(kind) or []:
        run_hook(hook, kind, state)


def run_hook(hook: dict, kind: str, state: dict) -> None:
    import subprocess

    path = hook.get("path")
    if not path:
        raise HookFailed(f"{kind} hook has no path")
    args = hook.get("args") or [path]
    env = dict(e.split("=", 1) for e in hook.get("env") or [] if "=" in e)
    timeout = hook.get("timeout")
    if timeout is not None and timeout <= 0:
        raise HookFailed(f"{kind} hook {path}: timeout must be positive")
    try:
        proc = subprocess.Popen(
            args, executable=path, env=env, stdin=subprocess.PIPE, close_fds=True,
            start_new_session=True,
        )
    except OSError as err:
        raise HookFailed(f"{kind} hook {path}: {err.strerror}") from err
    try:
        proc.communicate(json.dumps(state).encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        # the whole session: a hook's children must not outlive it (nor hold our stdio)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise HookFailed(f"{kind} hook {path} timed out after {timeout}s") from None
    except BrokenPipeError:
        proc.wait()  # the hook did not read its stdin; only its exit status matters
    if proc.returncode != 0:
        raise HookFailed(f"{kind} hook {path} failed with exit status {proc.returncode}")


def has_hooks(config: dict, *kinds: str) -> bool:
    hooks = config.get("hooks") or {}
    return any(hooks.get(kind) for kind in kinds)
