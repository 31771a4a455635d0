"""Image commands: pull, push, images, rmi, tag, save, load, import, history, inspect, prune."""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

import click

from kobako.cli.commands.build import build as build_command
from kobako.cli.output import (
    human_size,
    parse_time,
    print_prune_report,
    render_rows,
    short_id,
    since,
)
from kobako.cli.util import CLIError, State, parse_filters, pass_state


def split_ref(ref: str) -> tuple[str, str | None]:
    """"repo:tag" -> (repo, tag); a digest or a port colon stays in the repo."""
    if "@" in ref:
        return ref, None
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = ref.rsplit(":", 1)
        return repo, tag
    return ref, None


def registry_auth_header(ref: str) -> str:
    """X-Registry-Auth for `ref` from docker's config.json ("e30=" i.e. {} when none)."""
    try:
        from kobako.image.auth import DockerConfig
        from kobako.image.reference import parse

        reg = parse(ref).registry
        creds = DockerConfig().get(reg)
    except Exception as exc:  # a broken config must not block anonymous pulls
        print(f"WARNING: could not read credentials: {exc}", file=sys.stderr)
        creds = None
    doc = auth_config(creds, reg) if creds is not None else {}
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()


def auth_config(creds: Any, registry: str) -> dict[str, str]:
    """Credentials from docker's config.json as the API's AuthConfig."""
    doc = {"username": creds.username, "password": creds.password, "serveraddress": registry}
    if creds.identity_token:
        doc["identitytoken"] = creds.identity_token
    return doc


_LAYER_ID = re.compile(r"[0-9a-f]{12}")


class StreamFailed(CLIError):
    pass


def show_progress(messages: Iterator[dict[str, Any]], quiet: bool = False) -> list[dict]:
    """Render docker JSON progress: rich bars on a terminal, plain status lines otherwise."""
    seen: list[dict] = []
    if quiet:
        for m in messages:
            _check(m)
            seen.append(m)
        return seen
    if not sys.stdout.isatty():
        for m in messages:
            _check(m)
            seen.append(m)
            if m.get("progressDetail", {}).get("total") and m.get("status") in (
                    "Downloading", "Extracting", "Pushing"):
                continue  # bars only make sense on a terminal
            line = m.get("stream") or m.get("status") or ""
            ident = m.get("id")
            click.echo(f"{ident}: {line}" if ident else line.rstrip("\n"))
        return seen
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    tasks: dict[str, Any] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  transient=False) as prog:
        for m in messages:
            _check(m)
            seen.append(m)
            ident, status = m.get("id"), m.get("status") or m.get("stream", "").rstrip("\n")
            if not ident or not _LAYER_ID.fullmatch(ident):
                # "latest: Pulling from ...", "Digest: ...": lines, not bars (as docker)
                prog.console.print(f"{ident}: {status}" if ident else status, markup=False,
                                   highlight=False)
                continue
            detail = m.get("progressDetail") or {}
            if ident not in tasks:
                tasks[ident] = prog.add_task(f"{ident}: {status}", total=None)
            kwargs: dict[str, Any] = {"description": f"{ident}: {status}"}
            if detail.get("total"):
                kwargs["total"] = detail["total"]
                kwargs["completed"] = detail.get("current", 0)
            if status in ("Pull complete", "Already exists", "Pushed", "Layer already exists",
                          "Mounted from", "Download complete"):
                task = prog.tasks[tasks[ident]]
                if task.total:
                    kwargs["completed"] = task.total
            prog.update(tasks[ident], **kwargs)
    return seen


def _check(m: dict[str, Any]) -> None:
    if m.get("error") or m.get("errorDetail"):
        msg = m.get("error") or (m.get("errorDetail") or {}).get("message")
        raise StreamFailed(str(msg), 1)


@click.command()
@click.argument("name")
@click.option("-a", "--all-tags", is_flag=True, help="Download all tagged images (unsupported)")
@click.option("--platform", help="Set platform if server is multi-platform capable")
@click.option("-q", "--quiet", is_flag=True, help="Suppress verbose output")
@pass_state
def pull(state: State, name: str, all_tags: bool, platform: str | None, quiet: bool) -> None:
    """Download an image from a registry."""
    if all_tags:
        raise CLIError("--all-tags is not supported by kobako")
    repo, tag = split_ref(name)
    if tag is None and "@" not in repo:
        tag = "latest"
        if not quiet:
            click.echo("Using default tag: latest")
    params = {"fromImage": repo, "tag": tag, "platform": platform}
    resp = state.client.request("POST", "/images/create", params,
                                headers={"X-Registry-Auth": registry_auth_header(name)})
    show_progress(resp.iter_json(), quiet=quiet)
    full = _canonical(repo + (f":{tag}" if tag else ""))
    click.echo(full)


def _canonical(ref: str) -> str:
    try:
        from kobako.image.reference import parse

        r = parse(ref)
        return f"{r.full_name}{':' + r.tag if r.tag else ''}{'@' + r.digest if r.digest else ''}"
    except Exception:  # display only: fall back to what the user typed
        return ref


@click.command()
@click.argument("name")
@click.option("-q", "--quiet", is_flag=True, help="Suppress verbose output")
@pass_state
def push(state: State, name: str, quiet: bool) -> None:
    """Upload an image to a registry."""
    repo, tag = split_ref(name)
    resp = state.client.request("POST", f"/images/{repo}/push", {"tag": tag},
                                headers={"X-Registry-Auth": registry_auth_header(name)})
    show_progress(resp.iter_json(), quiet=quiet)


def image_rows(images: list[dict[str, Any]], digests: bool, no_trunc: bool) -> list[dict]:
    rows = []
    for img in images:
        ident = img.get("Id", "")
        shown_id = ident if no_trunc else short_id(ident)
        created = img.get("Created")
        base = {"ID": shown_id, "CreatedSince": since(parse_time(created)),
                "CreatedAt": str(created), "Size": human_size(img.get("Size") or 0),
                "Containers": str(img.get("Containers", "N/A")), "Digest": "<none>",
                "VirtualSize": human_size(img.get("VirtualSize") or img.get("Size") or 0)}
        tags = [t for t in img.get("RepoTags") or [] if t != "<none>:<none>"]
        digests_of = {d.split("@", 1)[0]: d.split("@", 1)[1]
                      for d in img.get("RepoDigests") or [] if "@" in d}
        if tags:
            for t in tags:
                repo, tag = split_ref(t)
                rows.append({**base, "Repository": repo, "Tag": tag or "<none>",
                             "Digest": digests_of.get(repo, "<none>")})
        elif digests_of:
            for repo, dg in digests_of.items():
                rows.append({**base, "Repository": repo, "Tag": "<none>", "Digest": dg})
        else:
            rows.append({**base, "Repository": "<none>", "Tag": "<none>"})
    return rows


_IMAGES_TABLE = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
_IMAGES_TABLE_DIGESTS = ("table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t"
                         "{{.CreatedSince}}\t{{.Size}}")
_IMAGE_HEADERS = {"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID",
                  "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE",
                  "Digest": "DIGEST", "Containers": "CONTAINERS", "VirtualSize": "SIZE"}


@click.command("images")
@click.argument("repository", required=False)
@click.option("-a", "--all", "all_", is_flag=True, help="Show all images")
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs")
@click.option("-f", "--filter", "filters", multiple=True, help="Filter output (key=value)")
@click.option("--format", "fmt", help="Format output using a Go template, or json")
@click.option("--digests", is_flag=True, help="Show digests")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output")
@pass_state
def images(state: State, repository: str | None, all_: bool, quiet: bool,
           filters: tuple[str, ...], fmt: str | None, digests: bool, no_trunc: bool) -> None:
    """List images."""
    flt = parse_filters(filters)
    if repository:
        flt.setdefault("reference", []).append(repository)
    data = state.client.get_json("/images/json", {"all": all_ or None,
                                                  "filters": flt or None})
    if quiet:
        seen = set()
        for img in data:
            ident = img["Id"] if no_trunc else short_id(img["Id"])
            if ident not in seen:
                seen.add(ident)
                click.echo(ident)
        return
    rows = image_rows(data, digests, no_trunc)
    render_rows(fmt, _IMAGES_TABLE_DIGESTS if digests else _IMAGES_TABLE, rows, _IMAGE_HEADERS)


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Force removal of the image")
@click.option("--no-prune", is_flag=True, help="Do not delete untagged parents")
@pass_state
def rmi(state: State, names: tuple[str, ...], force: bool, no_prune: bool) -> None:
    """Remove one or more images."""
    from kobako.client.errors import ClientError

    failed = False
    for name in names:
        try:
            result = state.client.delete(f"/images/{name}", {"force": force or None,
                                                             "noprune": no_prune or None})
        except ClientError as exc:
            click.echo(f"Error response from daemon: {exc.message}", err=True)
            failed = True
            continue
        for item in result or []:
            for action, ident in item.items():
                click.echo(f"{action}: {ident}")
    if failed:
        raise CLIError("", 1)


@click.command()
@click.argument("source")
@click.argument("target")
@pass_state
def tag(state: State, source: str, target: str) -> None:
    """Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE."""
    repo, t = split_ref(target)
    state.client.request("POST", f"/images/{source}/tag", {"repo": repo, "tag": t}).read()


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to a file")
@pass_state
def save(state: State, names: tuple[str, ...], output: str | None) -> None:
    """Save one or more images to a tar archive (streamed to STDOUT by default)."""
    if output is None and sys.stdout.isatty():
        raise CLIError("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    resp = state.client.request("GET", "/images/get", {"names": list(names)})
    if output:
        tmp = f"{output}.kobako-tmp"
        with open(tmp, "wb") as f:
            for chunk in resp.iter_chunks():
                f.write(chunk)
        os.replace(tmp, output)
    else:
        out = sys.stdout.buffer
        for chunk in resp.iter_chunks():
            out.write(chunk)
        out.flush()


@click.command()
@click.option("-i", "--input", "input_", type=click.Path(exists=True, dir_okay=False),
              help="Read from tar archive file, instead of STDIN")
@click.option("-q", "--quiet", is_flag=True, help="Suppress the load output")
@pass_state
def load(state: State, input_: str | None, quiet: bool) -> None:
    """Load an image from a tar archive or STDIN."""
    if input_ is None and sys.stdin.isatty():
        raise CLIError("requested load from stdin, but stdin is empty")
    src = open(input_, "rb") if input_ else sys.stdin.buffer  # noqa: SIM115
    try:
        resp = state.client.request("POST", "/images/load", {"quiet": quiet or None}, body=src)
        for m in resp.iter_json():
            _check(m)
            if m.get("stream"):
                click.echo(m["stream"], nl=False)
            elif not quiet and m.get("status"):
                ident = m.get("id")
                click.echo(f"{ident}: {m['status']}" if ident else m["status"])
    finally:
        if input_:
            src.close()


@click.command("import")
@click.argument("source")
@click.argument("reference", required=False)
@click.option("-c", "--change", "changes", multiple=True,
              help="Apply Dockerfile instruction to the created image")
@click.option("-m", "--message", help="Set commit message for imported image")
@click.option("--platform", help="Set platform if server is multi-platform capable")
@pass_state
def import_(state: State, source: str, reference: str | None, changes: tuple[str, ...],
            message: str | None, platform: str | None) -> None:
    """Import the contents from a tarball (file, URL or -) to create a filesystem image."""
    click.echo(import_tar(state, source, reference, list(changes), message, platform))


def import_tar(state: State, source: str, reference: str | None, changes: list[str],
               message: str | None, platform: str | None) -> str:
    repo, t = split_ref(reference) if reference else (None, None)
    params: dict[str, Any] = {"repo": repo, "tag": t, "changes": changes or None,
                              "message": message, "platform": platform}
    body = None
    if source == "-":
        params["fromSrc"] = "-"
        body = sys.stdin.buffer
    elif "://" in source:
        params["fromSrc"] = source
    else:
        params["fromSrc"] = "-"
        try:
            body = open(source, "rb")  # noqa: SIM115
        except OSError as exc:
            raise CLIError(f"open {source}: {exc.strerror}") from exc
    try:
        resp = state.client.request("POST", "/images/create", params,
                                    body=body if body is not None else b"")
        image_id = ""
        for m in resp.iter_json():
            _check(m)
            image_id = m.get("status") or image_id
        return image_id
    finally:
        if body is not None and body is not sys.stdin.buffer:
            body.close()


_HISTORY_TABLE = "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"


@click.command()
@click.argument("name")
@click.option("-H", "--human", default=True, type=bool, help="Print sizes and dates in human form")
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output")
@click.option("--format", "fmt", help="Format output using a Go template")
@pass_state
def history(state: State, name: str, human: bool, quiet: bool, no_trunc: bool,
            fmt: str | None) -> None:
    """Show the history of an image."""
    data = state.client.get_json(f"/images/{name}/history")
    rows = []
    for h in data:
        ident = h.get("Id") or "<missing>"
        if ident != "<missing>" and not no_trunc:
            ident = short_id(ident)
        created_by = h.get("CreatedBy") or ""
        if not no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        rows.append({"ID": ident, "CreatedSince": since(parse_time(h.get("Created"))),
                     "CreatedAt": str(h.get("Created")), "CreatedBy": created_by,
                     "Size": human_size(h.get("Size") or 0) if human else str(h.get("Size")),
                     "Comment": h.get("Comment") or ""})
    if quiet:
        for r in rows:
            click.echo(r["ID"])
        return
    render_rows(fmt, _HISTORY_TABLE, rows,
                {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT",
                 "CreatedBy": "CREATED BY", "Size": "SIZE", "Comment": "COMMENT"})


def print_inspect(docs: list[Any], fmt: str | None) -> None:
    if fmt:
        from kobako.cli.gotemplate import Template, TemplateError

        try:
            tmpl = Template(fmt)
            for d in docs:
                click.echo(tmpl.render(d))
        except TemplateError as exc:
            raise CLIError(f"template: {exc}", 1) from exc
        return
    click.echo(json.dumps(docs, indent=4, ensure_ascii=False))


@click.command("inspect")
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", help="Format output using a Go template")
@pass_state
def image_inspect(state: State, names: tuple[str, ...], fmt: str | None) -> None:
    """Display detailed information on one or more images."""
    from kobako.client.errors import ClientError

    docs, errors = [], []
    for name in names:
        try:
            docs.append(state.client.get_json(f"/images/{name}/json"))
        except ClientError as exc:
            if exc.status != 404:
                raise
            errors.append(f"Error: No such image: {name}")
    print_inspect(docs, fmt)
    if errors:
        raise CLIError("\n".join(errors), 1)


@click.command()
@click.option("-a", "--all", "all_", is_flag=True, help="Remove all unused images")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
@click.option("--filter", "filters", multiple=True, help="Provide filter values")
@pass_state
def prune(state: State, all_: bool, force: bool, filters: tuple[str, ...]) -> None:
    """Remove unused images."""
    flt = parse_filters(filters)
    flt["dangling"] = ["false" if all_ else "true"]
    if not force:
        what = "all images without at least one container associated to them" if all_ \
            else "all dangling images"
        if not click.confirm(f"WARNING! This will remove {what}.\nAre you sure you want to "
                             "continue?", default=False):
            return
    result = state.client.post_json("/images/prune", {"filters": flt})
    print_prune_report(result, "ImagesDeleted", "Images",
                       lambda item: [f"{action.lower()}: {ident}" for action, ident in item.items()])


@click.command()
@click.argument("what", type=click.Choice(["busybox", "debian:bookworm", "debian"]))
@click.option("-t", "--tag", "reference", help="Name the image (default: WHAT, :latest)")
@click.option("--mirror", help="Debian mirror for debootstrap")
@pass_state
def bootstrap(state: State, what: str, reference: str | None, mirror: str | None) -> None:
    """Build a busybox or debian:bookworm rootfs locally and import it through the API."""
    import tempfile

    try:
        from kobako.image import bootstrap as bs
    except ImportError as exc:
        raise CLIError(f"image bootstrap is not available in this build: {exc}") from exc
    if what == "debian":
        what = "debian:bookworm"
    ref = reference or (what if ":" in what else f"{what}:latest")
    with tempfile.TemporaryDirectory(prefix="kobako-bootstrap-") as tmp:
        tar_path = os.path.join(tmp, "rootfs.tar")
        if what == "busybox":
            with open(tar_path, "wb") as f:
                f.write(bs.bootstrap_busybox())
            changes = bs.BUSYBOX_CHANGES
        else:
            click.echo(f"Running debootstrap for {what} (this takes a few minutes)...", err=True)
            bs.bootstrap_debian(what.split(":", 1)[1], mirror, tar_path, workdir=tmp)
            changes = bs.DEBIAN_CHANGES
        image_id = import_tar(state, tar_path, ref, list(changes),
                              f"kobako image bootstrap {what}", None)
    click.echo(f"{ref} {image_id}")


@click.group("image")
def image() -> None:
    """Manage images."""


image.add_command(images, "ls")
image.add_command(images, "list")
image.add_command(pull, "pull")
image.add_command(push, "push")
image.add_command(rmi, "rm")
image.add_command(rmi, "remove")
image.add_command(tag, "tag")
image.add_command(save, "save")
image.add_command(load, "load")
image.add_command(import_, "import")
image.add_command(history, "history")
image.add_command(image_inspect, "inspect")
image.add_command(prune, "prune")
image.add_command(bootstrap, "bootstrap")

image.add_command(build_command, "build")
