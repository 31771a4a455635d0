"""Real-registry fixtures for the pull/push tests (and the pull benchmark).

- Registry: Debian's docker-registry (distribution v2) on 127.0.0.1:<free port> with
  its own config and storage in a temp dir: anonymous, htpasswd, or token auth.
- TokenServer: a loopback aiohttp token server issuing RS256 JWTs (x5c header) that
  the registry trusts through `auth.token.rootcertbundle`; keys made with openssl.
- FaultProxy: a loopback HTTP proxy in front of a registry that can cut blob
  downloads after N bytes, throttle them, and records the Range headers it saw.
- Image builders that put random-layer images straight into a ContentStore.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import io
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, web

from kobako.image.store import ContentStore

REGISTRY_BIN = "/usr/bin/docker-registry"
PREFIX = "kobako-test-reg-"
SERVICE = "kobako-test-registry"
ISSUER = "kobako-test-issuer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- docker-registry ------------------------------------------------------------------------


class Registry:
    """One docker-registry process; `stop()` ends it by pid."""

    def __init__(self, workdir: pathlib.Path, auth: dict[str, Any] | None = None):
        self.dir = pathlib.Path(workdir) / f"{PREFIX}{uuid.uuid4().hex[:8]}"
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.auth = auth
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "registry.log"

    def config(self) -> str:
        lines = [
            "version: 0.1",
            "log:",
            "  level: info",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.dir / 'storage'}",
            "  delete:",
            "    enabled: true",
            "  maintenance:",
            "    uploadpurging:",
            "      enabled: false",
            "http:",
            f"  addr: {self.host}",
            f"  secret: {uuid.uuid4().hex}",
        ]
        if self.auth:
            lines.append("auth:")
            for kind, params in self.auth.items():
                lines.append(f"  {kind}:")
                for k, v in params.items():
                    lines.append(f"    {k}: {v}")
        return "\n".join(lines) + "\n"

    def start(self) -> Registry:
        cfg = self.dir / "config.yml"
        cfg.write_text(self.config())
        log = open(self.log_path, "wb")  # noqa: SIM115 - kept for the process's lifetime
        self.proc = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log_path.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1).close()
                return self
            except urllib.error.HTTPError:
                return self  # 401: up, with auth
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("docker-registry did not come up")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def htpasswd_auth(workdir: pathlib.Path, users: dict[str, str]) -> dict[str, Any]:
    """The registry's `auth.htpasswd` section, with a bcrypt file made by htpasswd -B."""
    path = pathlib.Path(workdir) / f"{PREFIX}htpasswd-{uuid.uuid4().hex[:8]}"
    lines = []
    for user, password in users.items():
        out = subprocess.run(
            ["htpasswd", "-Bbn", user, password], check=True, capture_output=True, text=True
        ).stdout.strip()
        lines.append(out)
    path.write_text("\n".join(lines) + "\n")
    return {"htpasswd": {"realm": "kobako-test", "path": str(path)}}


# -- a tiny threaded aiohttp server ---------------------------------------------------------


class ThreadedApp:
    """Runs an aiohttp app on 127.0.0.1:<free port> in its own thread and loop."""

    def __init__(self, app: web.Application):
        self.app = app
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def start(self) -> ThreadedApp:
        self._thread.start()

        async def up() -> None:
            self._runner = web.AppRunner(self.app)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

        asyncio.run_coroutine_threadsafe(up(), self.loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
            self._runner = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


# -- token server ---------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Issues registry tokens for `users` (user -> password); anonymous gets pull only
    if `anonymous_pull`. Counts the token requests it served."""

    def __init__(self, workdir: pathlib.Path, users: dict[str, str], *,
                 anonymous_pull: bool = False, token_field: str = "token", ttl: int = 300):
        self.dir = pathlib.Path(workdir) / f"{PREFIX}token-{uuid.uuid4().hex[:8]}"
        self.dir.mkdir(parents=True)
        self.users = users
        self.anonymous_pull = anonymous_pull
        self.token_field = token_field
        self.ttl = ttl
        self.requests: list[dict[str, Any]] = []
        self.key = self.dir / "key.pem"
        self.cert = self.dir / "cert.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
             str(self.key), "-out", str(self.cert), "-days", "1", "-subj",
             "/CN=kobako-test-token-issuer"],
            check=True, capture_output=True,
        )
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
            check=True, capture_output=True,
        ).stdout
        self.x5c = base64.b64encode(der).decode()
        app = web.Application()
        app.router.add_get("/token", self._token)
        self.server = ThreadedApp(app)

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/token"

    def registry_auth(self) -> dict[str, Any]:
        return {"token": {"realm": self.realm, "service": SERVICE, "issuer": ISSUER,
                          "rootcertbundle": str(self.cert)}}

    def start(self) -> TokenServer:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        sig = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(), check=True, capture_output=True,
        ).stdout
        return signing_input + "." + _b64url(sig)

    async def _token(self, request: web.Request) -> web.Response:
        user = None
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if self.users.get(name) != password:
                return web.json_response({"details": "incorrect username or password"},
                                         status=401)
            user = name
        scopes = request.query.getall("scope", [])
        self.requests.append({"user": user, "scopes": scopes,
                              "service": request.query.get("service")})
        access = []
        for scope in scopes:
            for item in scope.split(" "):
                kind, _, rest = item.partition(":")
                name, _, actions = rest.rpartition(":")
                wanted = actions.split(",")
                granted = wanted if user else (["pull"] if self.anonymous_pull else [])
                granted = [a for a in wanted if a in granted]
                access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": user or "", "aud": SERVICE, "exp": now + self.ttl,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        token = await asyncio.get_running_loop().run_in_executor(None, self.sign, claims)
        return web.json_response({self.token_field: token, "expires_in": self.ttl})


# -- fault-injecting proxy ------------------------------------------------------------------


@dataclass
class Faults:
    drop_after: int | None = None  # cut a blob body after this many bytes
    drops: int = 0  # how many blob GETs to cut (-1: all)
    rate: int | None = None  # bytes per second for blob bodies
    corrupt: str | None = None  # flip one byte in the body of this blob digest
    ranges: list[str] = field(default_factory=list)  # Range headers of blob GETs
    blob_gets: int = 0
    drop_patches: int = 0  # cut this many upload PATCHes before they reach the registry
    inflight: int = 0  # blob GETs being answered right now
    max_inflight: int = 0


class FaultProxy:
    """A loopback reverse proxy for a registry that misbehaves on blob downloads."""

    def __init__(self, upstream: str, faults: Faults | None = None):
        self.upstream = upstream
        self.faults = faults or Faults()
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        app.on_cleanup.append(self._close_session)
        self.server = ThreadedApp(app)
        self._session: ClientSession | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def start(self) -> FaultProxy:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    async def _close_session(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self._session is None:
            self._session = ClientSession(auto_decompress=False)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",)}
        headers["Host"] = self.host
        body = await request.read()
        is_blob = request.method == "GET" and "/blobs/sha256:" in request.path
        f = self.faults
        if request.method == "PATCH" and f.drop_patches > 0:
            f.drop_patches -= 1
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        if is_blob:
            f.blob_gets += 1
            f.ranges.append(request.headers.get("Range", ""))
            f.inflight += 1
            f.max_inflight = max(f.max_inflight, f.inflight)
        try:
            return await self._forward(request, headers, body, is_blob)
        finally:
            if is_blob:
                f.inflight -= 1

    async def _forward(self, request: web.Request, headers: dict[str, str], body: bytes,
                       is_blob: bool) -> web.StreamResponse:
        assert self._session is not None
        f = self.faults
        async with self._session.request(
            request.method, f"http://{self.upstream}{request.path_qs}", headers=headers,
            data=body or None, allow_redirects=False,
        ) as up:
            out = web.StreamResponse(status=up.status, reason=up.reason)
            for k, v in up.headers.items():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    out.headers.add(k, v)
            if up.headers.get("Content-Length") is not None:
                out.content_length = int(up.headers["Content-Length"])
            await out.prepare(request)
            if request.method == "HEAD":
                return out
            sent = 0
            async for chunk in up.content.iter_chunked(64 << 10):
                if is_blob and f.corrupt and f.corrupt in request.path and sent == 0 and chunk:
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                if (is_blob and f.drop_after is not None and f.drops != 0
                        and sent + len(chunk) > f.drop_after):
                    if f.drops > 0:
                        f.drops -= 1
                    await out.write(chunk[: f.drop_after - sent])
                    assert request.transport is not None
                    request.transport.abort()  # the connection drops mid-body
                    return out
                await out.write(chunk)
                sent += len(chunk)
                if is_blob and f.rate:
                    await asyncio.sleep(len(chunk) / f.rate)
            await out.write_eof()
            return out


# -- test images ----------------------------------------------------------------------------


def make_layer(files: dict[str, bytes], *, compress: bool = True) -> tuple[bytes, str]:
    """A layer tar (gzip unless told) of regular files; returns (blob, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    diff_id = "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
    if not compress:
        return tar_bytes, diff_id
    return gzip.compress(tar_bytes, compresslevel=1, mtime=0), diff_id


def random_layer(size: int) -> tuple[bytes, str]:
    return make_layer({f"data-{uuid.uuid4().hex[:8]}.bin": os.urandom(size)})


@dataclass
class BuiltImage:
    manifest_digest: str
    manifest: bytes
    config_digest: str
    layers: list[str]
    media_type: str


def put_image(
    store: ContentStore,
    layers: list[tuple[bytes, str]],
    *,
    arch: str = "amd64",
    variant: str | None = None,
    oci: bool = False,
) -> BuiltImage:
    """Store layer blobs, a config and a manifest; returns what was stored."""
    layer_mt = ("application/vnd.oci.image.layer.v1.tar+gzip" if oci
                else "application/vnd.docker.image.rootfs.diff.tar.gzip")
    config_mt = ("application/vnd.oci.image.config.v1+json" if oci
                 else "application/vnd.docker.container.image.v1+json")
    manifest_mt = ("application/vnd.oci.image.manifest.v1+json" if oci
                   else "application/vnd.docker.distribution.manifest.v2+json")
    config: dict[str, Any] = {
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Labels": {"kobako.test": uuid.uuid4().hex}},
        "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
        "created": "2026-01-01T00:00:00Z",
    }
    if variant:
        config["variant"] = variant
    config_bytes = json.dumps(config).encode()
    config_digest = store.put(config_bytes)
    descs = []
    for blob, _ in layers:
        descs.append({"mediaType": layer_mt, "size": len(blob), "digest": store.put(blob)})
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": manifest_mt,
        "config": {"mediaType": config_mt, "size": len(config_bytes), "digest": config_digest},
        "layers": descs,
    }).encode()
    return BuiltImage(store.put(manifest), manifest, config_digest,
                      [d["digest"] for d in descs], manifest_mt)


def put_index(store: ContentStore, images: list[tuple[BuiltImage, dict[str, str]]],
              *, oci: bool = True) -> str:
    mt = ("application/vnd.oci.image.index.v1+json" if oci
          else "application/vnd.docker.distribution.manifest.list.v2+json")
    index = {
        "schemaVersion": 2, "mediaType": mt,
        "manifests": [
            {"mediaType": img.media_type, "size": len(img.manifest),
             "digest": img.manifest_digest, "platform": plat}
            for img, plat in images
        ],
    }
    return store.put(json.dumps(index).encode())
