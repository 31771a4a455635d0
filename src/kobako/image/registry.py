"""An OCI Distribution (Docker Registry HTTP API v2) client.

One client talks to one registry on behalf of one or more repositories. It picks
the scheme as docker does (plain HTTP for loopback and for registries marked
insecure, HTTPS otherwise), answers the registry's auth challenges through an
Authenticator, retries requests on broken connections with a bounded backoff, and
turns the registry's error JSON into RegistryError messages ("manifest unknown",
"unauthorized: ...").
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

import aiohttp

from kobako.image.auth import Authenticator, _error_text
from kobako.image.errors import AuthError, DigestMismatch, NotFound, RegistryError
from kobako.image.media import MANIFEST_ACCEPT
from kobako.image.reference import Reference, normalize_registry, registry_api_host

log = logging.getLogger(__name__)

_RETRYABLE = (
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    TimeoutError,
)


class RegistryNotFound(RegistryError, NotFound):
    """The registry answered 404 (manifest unknown, blob unknown, name unknown)."""


class ConnectionFailed(RegistryError):
    """The registry could not be reached, or kept dropping the connection."""


@dataclass(frozen=True)
class ManifestResponse:
    data: bytes
    media_type: str
    digest: str


@dataclass(frozen=True)
class Endpoint:
    """Where to send requests: a base URL and the name its auth state is kept under."""

    base: str  # "http://127.0.0.1:5000"
    auth_key: str  # registry name for credentials and challenges
    mirror: bool = False


def host_without_port(host: str) -> str:
    if host.startswith("["):
        return host[1:host.index("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    h = host_without_port(host)
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def is_insecure(host: str, insecure_registries: Iterable[str] = ()) -> bool:
    """docker's rule: a registry listed by host[:port] or whose IP is in a listed CIDR."""
    bare = host_without_port(host)
    for entry in insecure_registries:
        entry = entry.strip()
        for prefix in ("http://", "https://"):
            entry = entry.removeprefix(prefix)
        entry = entry.rstrip("/")
        if entry in (host, bare):
            return True
        if "/" in entry:
            try:
                net = ipaddress.ip_network(entry, strict=False)
                if ipaddress.ip_address(bare) in net:
                    return True
            except ValueError:
                continue
    return False


def repo_scope(repository: str, actions: str = "pull") -> str:
    return f"repository:{repository}:{actions}"


class RegistryClient:
    """Talks to one registry. Use as an async context manager (it owns an HTTP session)."""

    def __init__(
        self,
        ref_or_host: Reference | str,
        *,
        auth: Authenticator | None = None,
        insecure_registries: Iterable[str] | None = None,
        mirrors: Iterable[str] | None = None,
        session: aiohttp.ClientSession | None = None,
        retries: int = 4,
        backoff: float = 0.2,
        connect_timeout: float = 30.0,
        read_timeout: float = 60.0,
        sleep: Callable[[float], object] = asyncio.sleep,
    ):
        if isinstance(ref_or_host, Reference):
            self.registry = ref_or_host.registry
        else:
            self.registry = normalize_registry(ref_or_host)
        self.host = registry_api_host(self.registry)
        self.auth = auth or Authenticator()
        self.insecure_registries = list(insecure_registries or [])
        self.mirrors = [m.rstrip("/") for m in (mirrors or [])]
        self.retries = retries
        self.backoff = backoff
        self._sleep = sleep
        self._own_session = session is None
        self._session = session
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._endpoints: list[Endpoint] | None = None
        self._ready_lock = asyncio.Lock()
        self._pinged: set[str] = set()
        self._ping_locks: dict[str, asyncio.Lock] = {}

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=16),
                headers={"User-Agent": "kobako/0.1 (docker-compatible)"},
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def insecure(self) -> bool:
        return is_loopback(self.host) or is_insecure(self.host, self.insecure_registries)

    # -- endpoint selection and ping -------------------------------------------------------

    async def endpoints(self) -> list[Endpoint]:
        async with self._ready_lock:
            if self._endpoints is None:
                eps = []
                if self.registry == "docker.io":
                    for m in self.mirrors:
                        if "://" not in m:
                            m = "https://" + m
                        host = urllib.parse.urlsplit(m).netloc
                        eps.append(Endpoint(m, normalize_registry(host), mirror=True))
                eps.append(Endpoint(await self._pick_base(self.host), self.registry))
                self._endpoints = eps
            return self._endpoints

    async def _ensure_pinged(self, ep: Endpoint) -> None:
        """Like docker, GET /v2/ before the first real request to an endpoint: concurrent
        requests then share one challenge (and one token fetch) instead of each meeting
        a 401. Endpoints never used (a registry behind a working mirror) are never pinged.
        """
        if ep.base in self._pinged:
            return
        lock = self._ping_locks.setdefault(ep.base, asyncio.Lock())
        async with lock:
            if ep.base in self._pinged:
                return
            try:
                await self._ping(ep)
            except (aiohttp.ClientError, TimeoutError) as e:
                log.debug("ping %s failed: %s", ep.base, e)  # the request will say why
            self._pinged.add(ep.base)

    async def _pick_base(self, host: str) -> str:
        if is_loopback(host):
            return f"http://{host}"
        if not is_insecure(host, self.insecure_registries):
            return f"https://{host}"
        # Insecure registry: HTTPS without verification first, plain HTTP if that fails.
        try:
            async with self.session.get(f"https://{host}/v2/", ssl=False) as resp:
                await resp.read()
                return f"https://{host}"
        except (TimeoutError, aiohttp.ClientError) as e:
            log.debug("https to insecure registry %s failed (%s), using http", host, e)
            return f"http://{host}"

    async def _ping(self, ep: Endpoint) -> None:
        async with self._send(ep, "GET", "/v2/", auth_header=None) as resp:
            await resp.read()
            if resp.status == 401:
                self.auth.remember_challenge(ep.auth_key, resp.headers.get("WWW-Authenticate", ""))

    async def verify_login(self) -> None:
        """Check the credentials as `docker login` does: /v2/ with them must succeed."""
        ep = (await self.endpoints())[-1]
        resp = await self.request("GET", "/v2/", scopes=[], endpoint=ep)
        async with resp:
            body = await resp.read()
            if resp.status != 200:
                raise AuthError(
                    f"login to {self.registry} failed: {resp.status} "
                    f"{_error_text(body) or 'unauthorized'}",
                    status=resp.status,
                )

    # -- the request loop ------------------------------------------------------------------

    def _url(self, ep: Endpoint, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return urllib.parse.urljoin(ep.base + "/", path.lstrip("/")) if path else ep.base

    def _send(
        self,
        ep: Endpoint,
        method: str,
        path: str,
        *,
        auth_header: str | None,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        params: dict[str, str] | None = None,
    ):
        h = dict(headers or {})
        if auth_header:
            h["Authorization"] = auth_header
        return self.session.request(
            method, self._url(ep, path), headers=h, data=data, params=params,
            allow_redirects=True,
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        scopes: list[str],
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        params: dict[str, str] | None = None,
        endpoint: Endpoint | None = None,
        retry: bool = True,
    ) -> aiohttp.ClientResponse:
        """Send a request (auth, bounded retries); the caller must release the response."""
        ep = endpoint or (await self.endpoints())[-1]
        await self._ensure_pinged(ep)
        attempt = 0
        authed_again = False
        while True:
            auth_header = await self.auth.authorization(self.session, ep.auth_key, scopes)
            try:
                resp = await self._send(
                    ep, method, path, auth_header=auth_header, headers=headers,
                    data=data, params=params,
                )
            except _RETRYABLE as e:
                attempt += 1
                if not retry or attempt > self.retries:
                    raise ConnectionFailed(
                        f"{method} {self._url(ep, path)}: {_describe(e)}"
                        f" (after {attempt} attempts)"
                    ) from e
                await self._sleep(self.backoff * (2 ** (attempt - 1)))
                continue
            if resp.status == 401 and not authed_again:
                header = resp.headers.get("WWW-Authenticate", "")
                resp.release()
                if not self.auth.remember_challenge(ep.auth_key, header):
                    raise AuthError("unauthorized: authentication required", status=401)
                if auth_header is not None:
                    # Our token was refused (expired, or too narrow): get a fresh one.
                    await self.auth.authorization(self.session, ep.auth_key, scopes, force=True)
                authed_again = True
                continue
            return resp

    async def _read_with_mirrors(
        self, method: str, path_for: Callable[[Endpoint], str], *, scopes: list[str],
        headers: dict[str, str] | None = None,
    ) -> tuple[aiohttp.ClientResponse, Endpoint]:
        """A read from the first mirror that has it, else from the registry itself."""
        eps = await self.endpoints()
        for ep in eps[:-1]:
            try:
                resp = await self.request(
                    method, path_for(ep), scopes=scopes, headers=headers, endpoint=ep
                )
            except (RegistryError, aiohttp.ClientError) as e:
                log.info("mirror %s failed: %s; trying the next endpoint", ep.base, e)
                continue
            if resp.status < 400:
                return resp, ep
            resp.release()
        ep = eps[-1]
        return await self.request(method, path_for(ep), scopes=scopes, headers=headers,
                                  endpoint=ep), ep

    # -- manifests -------------------------------------------------------------------------

    async def get_manifest(
        self, repository: str, reference: str, accept: Iterable[str] = MANIFEST_ACCEPT
    ) -> ManifestResponse:
        headers = {"Accept": ", ".join(accept)}
        resp, ep = await self._read_with_mirrors(
            "GET", lambda ep: self._repo_path(ep, repository, f"manifests/{reference}"),
            scopes=[repo_scope(repository)], headers=headers,
        )
        async with resp:
            body = await self._read_body(resp, f"manifest {repository}:{reference}")
            await _raise_for(resp, body, f"manifest for {repository}:{reference}")
            media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        return ManifestResponse(body, media_type, digest)

    async def head_manifest(self, repository: str, reference: str) -> ManifestResponse | None:
        """The digest and media type of a manifest without its body, or None if unknown."""
        headers = {"Accept": ", ".join(MANIFEST_ACCEPT)}
        resp = await self.request(
            "HEAD", f"/v2/{repository}/manifests/{reference}",
            scopes=[repo_scope(repository)], headers=headers,
        )
        async with resp:
            if resp.status == 404:
                return None
            await _raise_for(resp, b"", f"manifest for {repository}:{reference}")
            digest = resp.headers.get("Docker-Content-Digest", "")
            media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        return ManifestResponse(b"", media_type, digest)

    async def put_manifest(
        self, repository: str, reference: str, data: bytes, media_type: str
    ) -> str:
        resp = await self.request(
            "PUT", f"/v2/{repository}/manifests/{reference}",
            scopes=[repo_scope(repository, "pull,push")],
            headers={"Content-Type": media_type}, data=data,
        )
        async with resp:
            body = await resp.read()
            await _raise_for(resp, body, f"manifest {repository}:{reference}")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        announced = resp.headers.get("Docker-Content-Digest")
        if announced and announced != digest:
            raise DigestMismatch(
                f"registry stored manifest as {announced}, we sent {digest}",
                expected=digest, actual=announced,
            )
        return digest

    # -- blobs: reading --------------------------------------------------------------------

    async def blob_size(
        self, repository: str, digest: str, actions: str = "pull"
    ) -> int | None:
        """HEAD a blob: its size if the registry has it in this repository, else None.

        A push asks with actions "pull,push" so one token serves the whole push.
        """
        resp = await self.request(
            "HEAD", f"/v2/{repository}/blobs/{digest}",
            scopes=[repo_scope(repository, actions)],
        )
        async with resp:
            if resp.status == 404:
                return None
            await _raise_for(resp, b"", f"blob {digest}")
            return int(resp.headers.get("Content-Length", "0"))

    async def open_blob(
        self, repository: str, digest: str, offset: int = 0
    ) -> aiohttp.ClientResponse:
        """GET a blob from `offset` (Range). Status 206 means resumed, 200 means from 0."""
        headers = {"Range": f"bytes={offset}-"} if offset else None
        resp, _ = await self._read_with_mirrors(
            "GET", lambda ep: self._repo_path(ep, repository, f"blobs/{digest}"),
            scopes=[repo_scope(repository)], headers=headers,
        )
        if resp.status == 416 and offset:
            resp.release()
            resp = await self.request(
                "GET", f"/v2/{repository}/blobs/{digest}", scopes=[repo_scope(repository)]
            )
        if resp.status not in (200, 206):
            async with resp:
                body = await resp.read()
                await _raise_for(resp, body, f"blob {digest}")
        return resp

    async def read_blob(self, repository: str, digest: str) -> bytes:
        """A small blob (a config, a manifest) read whole and verified."""
        resp = await self.open_blob(repository, digest)
        async with resp:
            body = await self._read_body(resp, f"blob {digest}")
        actual = "sha256:" + hashlib.sha256(body).hexdigest()
        if digest.startswith("sha256:") and actual != digest:
            raise DigestMismatch(f"blob {digest} has digest {actual}", expected=digest,
                                 actual=actual)
        return body

    async def _read_body(self, resp: aiohttp.ClientResponse, what: str) -> bytes:
        try:
            return await resp.read()
        except _RETRYABLE as e:
            raise ConnectionFailed(f"reading {what}: {_describe(e)}") from e

    # -- blobs: writing --------------------------------------------------------------------

    async def mount_blob(
        self, repository: str, digest: str, from_repository: str
    ) -> tuple[bool, str | None]:
        """Cross-repository mount. Returns (mounted, upload location if not mounted)."""
        resp = await self.request(
            "POST", f"/v2/{repository}/blobs/uploads/",
            scopes=[repo_scope(repository, "pull,push"), repo_scope(from_repository)],
            params={"mount": digest, "from": from_repository},
        )
        async with resp:
            body = await resp.read()
            if resp.status == 201:
                return True, None
            await _raise_for(resp, body, f"mount of {digest} from {from_repository}")
            return False, resp.headers.get("Location")

    async def start_upload(self, repository: str) -> str:
        resp = await self.request(
            "POST", f"/v2/{repository}/blobs/uploads/",
            scopes=[repo_scope(repository, "pull,push")],
        )
        async with resp:
            body = await resp.read()
            await _raise_for(resp, body, f"upload to {repository}")
            location = resp.headers.get("Location")
        if not location:
            raise RegistryError(f"upload to {repository}: registry sent no Location")
        return location

    async def upload_monolithic(
        self, repository: str, digest: str, data: bytes, location: str | None = None
    ) -> None:
        """POST to start, one PUT ?digest= with the whole blob."""
        location = location or await self.start_upload(repository)
        resp = await self.request(
            "PUT", _with_query(location, digest=digest),
            scopes=[repo_scope(repository, "pull,push")],
            headers={"Content-Type": "application/octet-stream"}, data=data,
        )
        async with resp:
            body = await resp.read()
            await _raise_for(resp, body, f"upload of {digest}")

    async def upload_chunked(
        self,
        repository: str,
        digest: str,
        source: BinaryIO,
        size: int,
        *,
        chunk_size: int = 8 << 20,
        location: str | None = None,
        on_progress: Callable[[int], object] | None = None,
    ) -> None:
        """POST, PATCH chunk by chunk (Content-Range), then PUT ?digest=.

        A chunk whose connection breaks is resent from the offset the registry reports
        for the upload session, a bounded number of times.
        """
        scopes = [repo_scope(repository, "pull,push")]
        location = location or await self.start_upload(repository)
        offset = 0
        failures = 0
        while offset < size:
            source.seek(offset)
            chunk = source.read(min(chunk_size, size - offset))
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
            }
            try:
                resp = await self.request(
                    "PATCH", location, scopes=scopes, headers=headers, data=chunk, retry=False
                )
            except ConnectionFailed:
                failures += 1
                if failures > self.retries:
                    raise
                await self._sleep(self.backoff * (2 ** (failures - 1)))
                location, reported = await self._upload_status(location, scopes)
                # distribution says "0-0" both for 0 and 1 byte: trust what it confirmed.
                offset = offset if reported == 1 and offset <= 1 else reported
                continue
            async with resp:
                body = await resp.read()
                await _raise_for(resp, body, f"upload of {digest}")
                location = resp.headers.get("Location") or location
                offset = _range_end(resp.headers.get("Range"), offset + len(chunk))
            if on_progress is not None:
                on_progress(offset)
        resp = await self.request(
            "PUT", _with_query(location, digest=digest), scopes=scopes,
            headers={"Content-Length": "0"}, data=b"",
        )
        async with resp:
            body = await resp.read()
            await _raise_for(resp, body, f"upload of {digest}")

    async def _upload_status(self, location: str, scopes: list[str]) -> tuple[str, int]:
        resp = await self.request("GET", location, scopes=scopes)
        async with resp:
            body = await resp.read()
            await _raise_for(resp, body, "upload status")
            return resp.headers.get("Location") or location, _range_end(
                resp.headers.get("Range"), 0
            )

    # -- helpers ---------------------------------------------------------------------------

    def _repo(self, ep: Endpoint, repository: str) -> str:
        return repository

    def _repo_path(self, ep: Endpoint, repository: str, rest: str) -> str:
        return f"/v2/{self._repo(ep, repository)}/{rest}"


def _describe(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return f"{type(e).__name__}: {text}" if text != type(e).__name__ else text


def _with_query(location: str, **params: str) -> str:
    parts = urllib.parse.urlsplit(location)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query += list(params.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _range_end(header: str | None, default: int) -> int:
    """The next offset from a `Range: 0-1234` upload-status header (inclusive end)."""
    if not header:
        return default
    try:
        _, end = header.split("=")[-1].split("-")
        return int(end) + 1
    except ValueError:
        return default


async def _raise_for(resp: aiohttp.ClientResponse, body: bytes, what: str) -> None:
    if resp.status < 400:
        return
    detail = _error_text(body) if body else ""
    code = _error_code(body)
    if resp.status == 401:
        raise AuthError(f"{what}: unauthorized: {detail or 'authentication required'}",
                        status=401)
    if resp.status == 403:
        raise AuthError(f"{what}: denied: {detail or 'requested access to the resource is denied'}",
                        status=403)
    if resp.status == 404:
        default = "manifest unknown" if what.startswith("manifest") else "not found"
        raise RegistryNotFound(f"{what} not found: {_join(code, detail) or default}", status=404)
    raise RegistryError(
        f"{what}: registry answered {resp.status} {resp.reason}"
        + (f": {_join(code, detail)}" if detail else ""),
        status=resp.status,
    )


def _error_code(body: bytes) -> str:
    """The first error code of a registry error body, spelled as a phrase."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""  # not JSON: the text itself is the detail
    errs = data.get("errors") if isinstance(data, dict) else None
    if isinstance(errs, list) and errs and isinstance(errs[0], dict):
        return str(errs[0].get("code", "")).lower().replace("_", " ")
    return ""


def _join(code: str, detail: str) -> str:
    if code and detail and code != detail.lower():
        return f"{code}: {detail}"
    return detail or code


async def iter_body(resp: aiohttp.ClientResponse, chunk: int = 1 << 20) -> AsyncIterator[bytes]:
    async for data in resp.content.iter_chunked(chunk):
        yield data
