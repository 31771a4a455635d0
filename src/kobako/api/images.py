"""Image routes, adapting HTTP to the image library (`ImageBackend`).

The library is synchronous: its calls run in worker threads. Progress comes back
through a callback as Docker's JSON messages and is streamed as chunked JSON lines.
As in Docker, an error before anything was streamed is a proper HTTP status; after
that it is an `errorDetail` message in the stream.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import ipaddress
import json
import logging
import os
import socket
import tempfile
import threading
from collections.abc import Awaitable, Callable
from typing import IO, Any
from urllib.parse import urlparse

from kobako.api.context import ctx
from kobako.api.errors import BadRequest, message_for
from kobako.api.http import Request, Response, StreamResponse, json_response
from kobako.api.params import bool_param, filters_param, str_param
from kobako.api.streams import JSONStream, stream_tar
from kobako.engine.errors import EngineError, NotImplementedYet
from kobako.image.errors import ImageError

log = logging.getLogger("kobako.api.images")

_COPY_CHUNK = 256 * 1024
MAX_IMPORT_URL_BYTES = 8 * 1024 * 1024 * 1024


class ClientGone(Exception):
    """The HTTP client disconnected; raised inside the worker to abandon the operation."""


def json_header(request: Request, name: str) -> Any:
    """A header holding base64url JSON (padding optional), as docker sends credentials;
    None when absent."""
    raw = request.headers.get(name)
    if not raw:
        return None
    try:
        padded = raw + "=" * (-len(raw) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"invalid {name} header: {exc}") from exc


def credentials(auth_config: dict[str, Any]) -> Any:
    """A Docker AuthConfig as the library's Credentials; None when it holds nothing
    (docker sends "{}" then)."""
    username = auth_config.get("username") or ""
    password = auth_config.get("password") or ""
    token = auth_config.get("identitytoken") or None
    if not (username or password or token):
        return None
    from kobako.image.auth import Credentials

    return Credentials(str(username), str(password), identity_token=token)


def registry_auth(request: Request) -> Any:
    """X-Registry-Auth as the library's Credentials."""
    data = json_header(request, "X-Registry-Auth")
    if data is None:
        return None
    if not isinstance(data, dict):
        raise BadRequest("invalid X-Registry-Auth header: expected a JSON object")
    return credentials(data)


Starter = Callable[[Callable[[dict[str, Any]], None]], Awaitable[Any]]


async def progress_call(request: Request, start: Starter,
                         finish: Callable[[Any], list[dict[str, Any]]] | None = None,
                         ) -> StreamResponse:
    """Run `start(progress)` (a coroutine, or a thread via to_thread), streaming progress."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    gone = threading.Event()

    def progress(message: dict[str, Any]) -> None:
        if gone.is_set():
            raise ClientGone("client disconnected")  # stops a worker thread
        loop.call_soon_threadsafe(queue.put_nowait, dict(message))

    work = asyncio.ensure_future(start(progress))
    stream = JSONStream(request)
    getter: asyncio.Future | None = None
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter, work}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                await stream.send(getter.result())
                continue
            getter.cancel()
            await asyncio.sleep(0)  # let call_soon_threadsafe'd messages land
            while not queue.empty():
                await stream.send(queue.get_nowait())
            break
        try:
            result = work.result()
        except Exception as exc:
            if not request.headers_sent:
                raise  # nothing sent yet: answer with the proper status
            log.info("streamed operation failed: %s", exc)
            await stream.send_error(message_for(exc), getattr(exc, "exit_code", None))
            return await stream.finish()
        for message in (finish(result) if finish else []):
            await stream.send(message)
        return await stream.finish()
    except BaseException:
        gone.set()
        if not work.done():
            work.cancel()  # a client that went away cancels its pull/push
        if getter is not None and not getter.done():
            getter.cancel()
        raise


def _join_ref(name: str, tag: str | None) -> str:
    if not tag:
        return name
    if tag.startswith("sha256:"):
        return f"{name}@{tag}"
    last = name.rsplit("/", 1)[-1]
    if ":" in last or "@" in name:
        return name
    return f"{name}:{tag}"


async def create(request: Request) -> StreamResponse:
    """POST /images/create: pull (fromImage) or import (fromSrc)."""
    backend = ctx(request).image_backend()
    from_image = str_param(request, "fromImage")
    from_src = str_param(request, "fromSrc")
    tag = str_param(request, "tag")
    platform = str_param(request, "platform") or None
    if from_image:
        reference = _join_ref(from_image, tag or "latest")
        auth = registry_auth(request)
        result = await progress_call(request, _refusals_as_dockerd(
            "pull", reference,
            lambda progress: backend.pull(reference, platform=platform, auth=auth,
                                          progress=progress)))
        ctx(request).events.publish("image", "pull", familiar_ref(reference),
                                    {"name": familiar_ref(reference)})
        return result
    if from_src:
        return await _import(request, from_src, tag, platform)
    raise BadRequest("fromImage or fromSrc is required")


def _refusals_as_dockerd(verb: str, reference: str, start: Starter) -> Starter:
    """A registry's refusal of a pull or push, as dockerd answers it: never 401, which
    makes the docker CLI ask for a password (dockerd sends 401 only from /auth). A
    denied pull is a 404 ("pull access denied ... may require 'docker login'"),
    missing credentials a 500 naming the registry's complaint."""
    from kobako.image.errors import AuthError, NotFound, RegistryError

    async def run(progress: Callable[[dict[str, Any]], None]) -> Any:
        try:
            return await start(progress)
        except AuthError as err:
            if err.status == 403 and verb == "pull":
                raise NotFound(
                    f"pull access denied for {familiar_ref(reference, name_only=True)}, repository does "
                    f"not exist or may require 'docker login': {err}") from None
            raise RegistryError(str(err), status=500) from None
    return run


def _loopback_url(url: str) -> bool:
    host = urlparse(url).hostname or ""
    try:
        addrs = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def _spool_dir(request: Request) -> str | None:
    path = os.path.join(ctx(request).config.exec_root, "tmp")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError:
        return None
    return path


async def spool_body(request: Request) -> IO[bytes]:
    """Copy the (possibly huge) request body to an anonymous temp file and rewind it."""
    f = tempfile.TemporaryFile(dir=_spool_dir(request))
    try:
        while True:
            chunk = await request.content.read(_COPY_CHUNK)
            if not chunk:
                break
            await asyncio.to_thread(f.write, chunk)
        f.seek(0)
    except BaseException:
        f.close()
        raise
    return f


async def _spool_url(request: Request, url: str) -> IO[bytes]:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise BadRequest(f"unsupported import source {url!r}: use - (request body) or a URL")
    if not await asyncio.to_thread(_loopback_url, url):
        raise BadRequest(f"importing from {parsed.hostname!r} is not allowed: "
                         "kobakod only fetches import URLs on loopback")
    import aiohttp  # lazy: only imports from a URL need the client

    f = tempfile.TemporaryFile(dir=_spool_dir(request))
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            if resp.status != 200:
                raise BadRequest(f"fetching {url}: HTTP {resp.status}")
            total = 0
            async for chunk in resp.content.iter_chunked(_COPY_CHUNK):
                total += len(chunk)
                if total > MAX_IMPORT_URL_BYTES:
                    raise BadRequest(f"fetching {url}: larger than {MAX_IMPORT_URL_BYTES} bytes")
                await asyncio.to_thread(f.write, chunk)
        f.seek(0)
    except aiohttp.ClientError as exc:
        f.close()
        raise BadRequest(f"fetching {url}: {exc}") from exc
    except BaseException:
        f.close()
        raise
    return f


async def _import(request: Request, src: str, tag: str | None,
                  platform: str | None) -> StreamResponse:
    backend = ctx(request).image_backend()
    repo = str_param(request, "repo") or None
    changes = request.query.getall("changes", [])
    message = str_param(request, "message") or None
    body = await (spool_body(request) if src == "-" else _spool_url(request, src))
    try:
        ref = _join_ref(repo, tag or "latest") if repo else None
        image_id = await asyncio.to_thread(
            functools.partial(backend.import_image, body, reference=ref,
                              changes=list(changes), message=message or "",
                              platform=platform))
    finally:
        body.close()
    ctx(request).events.publish("image", "import", image_id,
                                {"name": familiar_ref(ref) if ref else image_id})
    stream = JSONStream(request)
    await stream.send({"status": image_id})
    return await stream.finish()


async def push(request: Request) -> StreamResponse:
    backend = ctx(request).image_backend()
    name = request.match_info["name"]
    reference = _join_ref(name, str_param(request, "tag"))
    auth = registry_auth(request)
    result = await progress_call(request, _refusals_as_dockerd(
        "push", reference, lambda progress: backend.push(reference, auth=auth,
                                                         progress=progress)))
    ctx(request).events.publish("image", "push", reference, {"name": reference})
    return result


async def tag(request: Request) -> Response:
    backend = ctx(request).image_backend()
    name = request.match_info["name"]
    repo = str_param(request, "repo")
    if not repo:
        raise BadRequest("repository name is required (repo=)")
    target = _join_ref(repo, str_param(request, "tag") or "latest")
    await asyncio.to_thread(backend.tag, name, target)
    ctx(request).events.publish("image", "tag", await _image_id(backend, target),
                                {"name": familiar_ref(target)})
    return Response(status=201)


def familiar_ref(ref: str, name_only: bool = False) -> str:
    """Docker names images in events and errors the short way ("busybox:latest", or
    "busybox" with `name_only`)."""
    try:
        from kobako.image.reference import parse

        parsed = parse(ref)
        return parsed.name if name_only else parsed.familiar()
    except Exception:  # an event must not fail the request it reports
        return ref


async def _image_id(backend: Any, ref: str) -> str:
    try:
        doc = await asyncio.to_thread(backend.inspect, ref)
        return str(doc.get("Id") or ref)
    except Exception:  # as above: best effort for the event's actor
        return ref


async def remove(request: Request) -> Response:
    backend = ctx(request).image_backend()
    name = request.match_info["name"]
    image_id = await _image_id(backend, name)
    result = await asyncio.to_thread(functools.partial(
        backend.remove, name, force=bool_param(request, "force"),
        prune=not bool_param(request, "noprune")))
    for item in result:
        for action, ident in item.items():
            # dockerd's words; each event names the image by its ID
            actor = image_id if action == "Untagged" else ident
            ctx(request).events.publish("image", _RMI_EVENTS[action], actor, {"name": actor})
    return json_response(result)


_RMI_EVENTS = {"Untagged": "untag", "Deleted": "delete"}


async def list_images(request: Request) -> Response:
    backend = ctx(request).image_backend()
    result = await asyncio.to_thread(functools.partial(
        backend.list, filters_param(request), all=bool_param(request, "all")))
    return json_response(result)


async def inspect(request: Request) -> Response:
    backend = ctx(request).image_backend()
    return json_response(await asyncio.to_thread(backend.inspect, request.match_info["name"]))


async def history(request: Request) -> Response:
    backend = ctx(request).image_backend()
    return json_response(await asyncio.to_thread(backend.history, request.match_info["name"]))


async def prune(request: Request) -> Response:
    backend = ctx(request).image_backend()
    result = await asyncio.to_thread(backend.prune, filters_param(request))
    ctx(request).events.publish("image", "prune", "", {
        "reclaimed": str(result.get("SpaceReclaimed", 0))})
    return json_response(result)


async def _save(request: Request, names: list[str]) -> StreamResponse:
    from kobako.engine.archive import thread_stream

    backend = ctx(request).image_backend()
    if not names:
        raise BadRequest("no image names given")

    def work(out: IO[bytes], ready: Callable[[Any], None]) -> None:
        # every name is found before the head goes out: "no such image" is a 404
        backend.save(names, out, lambda: ready(None))

    _, chunks = await thread_stream(work)
    return await stream_tar(request, chunks)


async def get_one(request: Request) -> StreamResponse:
    return await _save(request, [request.match_info["name"]])


async def get_many(request: Request) -> StreamResponse:
    return await _save(request, request.query.getall("names", []))


async def load(request: Request) -> StreamResponse:
    """POST /images/load. As dockerd, a 200 JSON stream whatever happens: an archive that
    cannot be loaded is an error message in it (docker-py raises ImageLoadError on it)."""
    backend = ctx(request).image_backend()
    quiet = bool_param(request, "quiet", default=True)  # dockerd's default
    body = await spool_body(request)
    try:
        # The library returns docker's "Loaded image: ..." lines, and also streams them
        # through `progress` when it has one.
        if quiet:
            loaded = await asyncio.to_thread(backend.load, body, None)
            stream = JSONStream(request)
            for line in loaded:
                await stream.send({"stream": line + "\n"})
            result: StreamResponse = await stream.finish()
        else:
            result = await progress_call(
                request, lambda progress: asyncio.to_thread(backend.load, body, progress))
    except (ImageError, EngineError) as exc:
        if request.headers_sent:
            raise
        stream = JSONStream(request)
        await stream.send_error(message_for(exc))
        return await stream.finish()
    finally:
        body.close()
    ctx(request).events.publish("image", "load", "", {})
    return result


async def search(request: Request) -> Response:
    raise NotImplementedYet("image search is not supported by kobako")


async def distribution(request: Request) -> Response:
    """GET /distribution/{name}/json: what the registry serves for an image, not pulled."""
    backend = ctx(request).image_backend()
    reference = _join_ref(request.match_info["name"], "latest")
    doc = await _refusals_as_dockerd("pull", reference, lambda _progress: backend.inspect_remote(
        reference, auth=registry_auth(request)))(lambda _message: None)
    return json_response(doc)


def register(add: Any) -> None:
    add("GET", "/distribution/{name:.+}/json", distribution)
    add("GET", "/images/json", list_images)
    add("POST", "/images/create", create)
    add("POST", "/images/load", load)
    add("GET", "/images/get", get_many)
    add("GET", "/images/search", search)
    add("POST", "/images/prune", prune)
    add("GET", "/images/{name:.+}/json", inspect)
    add("GET", "/images/{name:.+}/history", history)
    add("GET", "/images/{name:.+}/get", get_one)
    add("POST", "/images/{name:.+}/push", push)
    add("POST", "/images/{name:.+}/tag", tag)
    add("DELETE", "/images/{name:.+}", remove)
