"""What a Dockerfile instruction does to an image's config.

Shared by the builder's steps and by `docker commit --change` / `docker import --change`,
which dockerd also runs through its Dockerfile dispatchers.
"""

from __future__ import annotations

import os
from typing import Any

from kobako.image import dockerfile

DEFAULT_SHELL = ["/bin/sh", "-c"]
# the instructions that only change the config (RUN, COPY, ADD, FROM, ARG do more)
CONFIG_INSTRUCTIONS = frozenset({"CMD", "ENTRYPOINT", "ENV", "EXPOSE", "HEALTHCHECK", "LABEL",
                                 "ONBUILD", "SHELL", "STOPSIGNAL", "USER", "VOLUME",
                                 "WORKDIR"})


def expanded_args(ins: dockerfile.Instruction, env: dict[str, str]) -> list[str]:
    """The instruction's arguments with $VARs replaced, where Docker replaces them."""
    if ins.keyword in dockerfile.SPLITS_WORDS:
        return [w for a in ins.args for w in dockerfile.expand_words(a, env, ins.escape)]
    if ins.keyword in dockerfile.EXPANDS and ins.keyword != "ARG":
        return [dockerfile.expand(a, env, ins.escape) for a in ins.args]
    return list(ins.args)


def config_env(config: dict[str, Any]) -> dict[str, str]:
    return dict(e.split("=", 1) for e in config.get("Env") or [] if "=" in e)


def apply(config: dict[str, Any], ins: dockerfile.Instruction, args: list[str], *,
          cmd_set: bool = False) -> bool:
    """Change `config` (an image's config section, Docker's keys) as `ins` says, with
    `args` its expanded arguments. `cmd_set`: a CMD came earlier in the same stage (an
    ENTRYPOINT then keeps it); returns that, updated. ValueError for bad arguments."""
    keyword = ins.keyword
    if keyword == "ENV":
        values = config_env(config)  # a name set again keeps its place, as dockerd
        values.update(zip(args[::2], args[1::2], strict=True))
        config["Env"] = [f"{k}={v}" for k, v in values.items()]
    elif keyword == "LABEL":
        config["Labels"] = {**(config.get("Labels") or {}),
                            **dict(zip(args[::2], args[1::2], strict=True))}
    elif keyword == "EXPOSE":
        config["ExposedPorts"] = {**(config.get("ExposedPorts") or {}),
                                  **{port_key(word): {} for word in args}}
    elif keyword == "WORKDIR":
        config["WorkingDir"] = os.path.normpath(
            os.path.join(config.get("WorkingDir") or "/", args[0]))
    elif keyword == "USER":
        config["User"] = args[0]
    elif keyword == "VOLUME":
        if not args or any(not w for w in args):
            raise ValueError("VOLUME specified can not be an empty string")
        config["Volumes"] = {**(config.get("Volumes") or {}), **{w: {} for w in args}}
    elif keyword == "STOPSIGNAL":
        config["StopSignal"] = args[0]
    elif keyword == "CMD":
        config["Cmd"] = command(config, ins)
        return True
    elif keyword == "ENTRYPOINT":
        config["Entrypoint"] = command(config, ins)
        if not cmd_set:
            config["Cmd"] = None  # a new entrypoint drops the inherited CMD
    elif keyword == "SHELL":
        config["Shell"] = list(args)
    elif keyword == "HEALTHCHECK":
        config["Healthcheck"] = healthcheck(ins)
    elif keyword == "ONBUILD":
        config["OnBuild"] = list(config.get("OnBuild") or []) + [args[0]]
    else:
        raise ValueError(f"{keyword} does not change an image's config")
    return cmd_set


def command(config: dict[str, Any], ins: dockerfile.Instruction) -> list[str]:
    """CMD, ENTRYPOINT or RUN as argv: the exec form as is, the shell form in the
    image's SHELL (/bin/sh -c by default)."""
    if ins.json:
        return list(ins.args)
    return list(config.get("Shell") or DEFAULT_SHELL) + [ins.args[0]]


def port_key(word: str) -> str:
    """EXPOSE 8080, 53/udp, 7000-7002: the ExposedPorts key ("8080/tcp")."""
    number, _, proto = word.partition("/")
    if not number or not all(part.isdigit() for part in number.split("-")):
        raise ValueError(f"invalid containerPort: {word}")
    return f"{number}/{(proto or 'tcp').lower()}"


def healthcheck(ins: dockerfile.Instruction) -> dict[str, Any]:
    if ins.args[0].upper() == "NONE":
        return {"Test": ["NONE"]}
    check: dict[str, Any] = {
        "Test": ["CMD", *ins.args[1:]] if ins.json else ["CMD-SHELL", ins.args[1]]}
    for flag, key in (("interval", "Interval"), ("timeout", "Timeout"),
                      ("start-period", "StartPeriod"), ("start-interval", "StartInterval")):
        if flag in ins.flags:
            try:
                check[key] = dockerfile.parse_duration(ins.flags[flag])
            except ValueError as err:
                raise ValueError(f"invalid --{flag}: {err}") from None
    if "retries" in ins.flags:
        try:
            check["Retries"] = int(ins.flags["retries"])
        except ValueError:
            raise ValueError(f"invalid --retries: {ins.flags['retries']}") from None
    return check
