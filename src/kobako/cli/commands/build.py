"""`kobako build`: send a build context to kobakod's classic builder (POST /build)."""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import sys
import tarfile
import tempfile
from typing import IO, Any

import click

from kobako.cli.util import CLIError, State, pass_state


@click.command()
@click.argument("path")
@click.option("-t", "--tag", "tags", multiple=True, help="Name and optionally a tag (name:tag)")
@click.option("-f", "--file", "dockerfile", help="Name of the Dockerfile (default: PATH/Dockerfile)")
@click.option("--build-arg", "build_args", multiple=True, help="Set build-time variables")
@click.option("--label", "labels", multiple=True, help="Set metadata for an image")
@click.option("--target", help="Set the target build stage to build")
@click.option("--no-cache", is_flag=True, help="Do not use cache when building the image")
@click.option("--cache-from", "cache_from", multiple=True,
              help="Images to consider as cache sources")
@click.option("--pull", is_flag=True, help="Always attempt to pull a newer version of the image")
@click.option("--rm/--no-rm", "remove", default=True,
              help="Remove intermediate containers after a successful build")
@click.option("--force-rm", is_flag=True, help="Always remove intermediate containers")
@click.option("-q", "--quiet", is_flag=True, help="Suppress the build output and print image ID")
@click.option("--network", help="Networking mode for the RUN instructions")
@click.option("--platform", help="Set platform if server is multi-platform capable")
@pass_state
def build(state: State, path: str, tags: tuple[str, ...], dockerfile: str | None,
          build_args: tuple[str, ...], labels: tuple[str, ...], target: str | None,
          no_cache: bool, cache_from: tuple[str, ...], pull: bool, remove: bool, force_rm: bool, quiet: bool,
          network: str | None, platform: str | None) -> None:
    """Build an image from a Dockerfile."""
    if not os.path.isdir(path):
        raise CLIError(f"unable to prepare context: path {path!r} not found")
    with tempfile.TemporaryFile() as body:
        name = context_tar(path, dockerfile, body)
        body.seek(0)
        params: dict[str, Any] = {
            "t": list(tags) or None, "dockerfile": name, "buildargs": _pairs(build_args, True),
            "labels": _pairs(labels, False), "target": target, "nocache": no_cache or None,
            "cachefrom": json.dumps(list(cache_from)) if cache_from else None,
            "pull": pull or None, "rm": "1" if remove else "0", "forcerm": force_rm or None,
            "q": quiet or None, "networkmode": network, "platform": platform,
        }
        resp = state.client.request(
            "POST", "/build", params, body=body,
            headers={"Content-Type": "application/x-tar",
                     "X-Registry-Config": _registry_config()})
        for message in resp.iter_json():
            detail = message.get("errorDetail") or {}
            if message.get("error") or detail:
                raise CLIError(str(message.get("error") or detail.get("message")),
                               code=int(detail.get("code") or 1))
            if message.get("stream"):
                click.echo(message["stream"], nl=False)


def context_tar(path: str, dockerfile: str | None, out: IO[bytes]) -> str:
    """The context directory as a tar, minus what .dockerignore excludes (never the
    Dockerfile nor .dockerignore itself, as the docker CLI); the Dockerfile's name in it.
    A Dockerfile from outside the context (or "-", stdin) is added under a name of its own."""
    from kobako.image.dockerignore import DockerIgnore

    root = os.path.abspath(path)
    ignore_path = os.path.join(root, ".dockerignore")
    ignore = DockerIgnore(open(ignore_path).read() if os.path.exists(ignore_path) else "")
    outside: bytes | None = None
    name = "Dockerfile"
    if dockerfile == "-":
        outside = sys.stdin.buffer.read()
    elif dockerfile:
        full = os.path.abspath(dockerfile)
        if os.path.commonpath([full, root]) == root:
            name = os.path.relpath(full, root)
        else:
            with open(full, "rb") as f:
                outside = f.read()
    if outside is not None:
        name = f".kobako-dockerfile-{secrets.token_hex(6)}"
    kept = {name, ".dockerignore"}
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for directory, dirs, files in os.walk(root):
            dirs.sort()
            for entry in sorted(dirs) + sorted(files):
                full = os.path.join(directory, entry)
                rel = os.path.relpath(full, root)
                if rel in kept or not ignore.excluded(rel):
                    tf.add(full, arcname=rel, recursive=False)
        if outside is not None:
            info = tarfile.TarInfo(name)
            info.size = len(outside)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(outside))
    return name


def _pairs(items: tuple[str, ...], from_env: bool) -> str | None:
    """KEY=VALUE options as JSON; a bare KEY of --build-arg takes the value from our env."""
    if not items:
        return None
    out: dict[str, str | None] = {}
    for item in items:
        key, sep, value = item.partition("=")
        out[key] = value if sep else (os.environ.get(key) if from_env else "")
    return json.dumps(out)


def _registry_config() -> str:
    """X-Registry-Config: every login in docker's config.json, for the FROM images."""
    from kobako.cli.commands.images import auth_config
    from kobako.image.auth import DockerConfig

    auths: dict[str, dict[str, str]] = {}
    try:
        config = DockerConfig()
        for key in (config.load().get("auths") or {}):
            creds = config.get(key)
            if creds is not None:
                auths[key] = auth_config(creds, key)
    except Exception as exc:  # a broken config must not block a build of public images
        print(f"WARNING: could not read credentials: {exc}", file=sys.stderr)
    return base64.urlsafe_b64encode(json.dumps(auths).encode()).decode()
