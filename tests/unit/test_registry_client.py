"""Registry client, auth and progress pieces against in-process fakes (no root)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pathlib
import stat

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from kobako.image.auth import (
    Authenticator,
    Credentials,
    DockerConfig,
    parse_www_authenticate,
)
from kobako.image.errors import AuthError
from kobako.image.pull import human_size, progress_bar
from kobako.image.registry import (
    ConnectionFailed,
    RegistryClient,
    RegistryNotFound,
    is_insecure,
    is_loopback,
)

# -- WWW-Authenticate -----------------------------------------------------------------------


def test_parse_bearer_challenge() -> None:
    (ch,) = parse_www_authenticate(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/busybox:pull,push"'
    )
    assert ch.scheme == "bearer"
    assert ch.params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/busybox:pull,push",
    }


def test_parse_several_challenges_and_escapes() -> None:
    chs = parse_www_authenticate('Basic realm="a \\"quoted\\" realm", Bearer realm=x,error=y')
    assert [c.scheme for c in chs] == ["basic", "bearer"]
    assert chs[0].params["realm"] == 'a "quoted" realm'
    assert chs[1].params == {"realm": "x", "error": "y"}
    assert parse_www_authenticate("") == []


# -- scheme rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("host, loop", [
    ("127.0.0.1:5000", True), ("127.5.5.5", True), ("localhost:5000", True),
    ("[::1]:5000", True), ("10.0.0.1:5000", False), ("quay.io", False),
])
def test_is_loopback(host: str, loop: bool) -> None:
    assert is_loopback(host) is loop


def test_is_insecure() -> None:
    assert is_insecure("reg.local:5000", ["reg.local:5000"])
    assert is_insecure("reg.local:5000", ["http://reg.local"])
    assert is_insecure("10.1.2.3:5000", ["10.0.0.0/8"])
    assert not is_insecure("11.1.2.3:5000", ["10.0.0.0/8"])
    assert not is_insecure("reg.local:5000", ["other:5000"])


def test_scheme_choice() -> None:
    async def go() -> list[str]:
        out = []
        for host in ("127.0.0.1:1", "localhost:1"):
            async with RegistryClient(host) as c:
                out.append(await c._pick_base(c.host))
        async with RegistryClient("quay.io") as c:
            out.append(await c._pick_base(c.host))
        return out
    assert asyncio.run(go()) == ["http://127.0.0.1:1", "http://localhost:1", "https://quay.io"]


# -- docker config.json ---------------------------------------------------------------------


def test_config_json_round_trip(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({
        "auths": {
            "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()},
            "http://old.example:5000/v1/": {"auth": base64.b64encode(b"u:p:with:colons")
                                            .decode()},
        },
        "psFormat": "table {{.ID}}",
    }))
    cfg = DockerConfig(path)
    assert cfg.get("docker.io") == Credentials("hub", "pw")
    assert cfg.get("registry-1.docker.io") == Credentials("hub", "pw")
    assert cfg.get("old.example:5000") == Credentials("u", "p:with:colons")
    assert cfg.get("nowhere:1") is None
    cfg.store("127.0.0.1:5000", Credentials("me", "secret"))
    data = json.loads(path.read_text())
    assert data["psFormat"] == "table {{.ID}}"  # unknown keys survive
    assert base64.b64decode(data["auths"]["127.0.0.1:5000"]["auth"]) == b"me:secret"
    assert cfg.erase("127.0.0.1:5000") and cfg.get("127.0.0.1:5000") is None
    assert not cfg.erase("127.0.0.1:5000")


def test_config_path_from_env(tmp_path: pathlib.Path, monkeypatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "d"))
    assert DockerConfig().path == tmp_path / "d" / "config.json"


def test_credential_helper(tmp_path: pathlib.Path, monkeypatch) -> None:
    log = tmp_path / "helper.log"
    helper = tmp_path / "bin" / "docker-credential-kobakotest"
    helper.parent.mkdir()
    helper.write_text(f"""#!/bin/sh
input=$(cat)
echo "$1 $input" >> {log}
case "$1" in
  get) [ "$input" = "reg.example" ] && echo '{{"ServerURL":"reg.example","Username":"hu","Secret":"hs"}}' \\
        || {{ echo "credentials not found in native keychain"; exit 1; }} ;;
  store|erase) ;;
esac
""")
    helper.chmod(helper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{helper.parent}:{os.environ['PATH']}")
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"credHelpers": {"reg.example": "kobakotest"}}))
    cfg = DockerConfig(path)
    assert cfg.get("reg.example") == Credentials("hu", "hs")
    assert cfg.get("other.example") is None  # no helper and no auths entry
    cfg.store("reg.example", Credentials("a", "b"))
    assert "auth" not in json.loads(path.read_text())["auths"]["reg.example"]
    lines = log.read_text().splitlines()
    assert lines[0] == "get reg.example"
    assert json.loads(lines[1].split(" ", 1)[1]) == {
        "ServerURL": "reg.example", "Username": "a", "Secret": "b"}


# -- a fake registry ------------------------------------------------------------------------


class Fake:
    def __init__(self) -> None:
        self.app = web.Application()
        self.hits: dict[str, int] = {}
        self.tokens = 0
        self.drops = 0

    def count(self, name: str) -> int:
        self.hits[name] = self.hits.get(name, 0) + 1
        return self.hits[name]


def _run(fake: Fake, body) -> object:
    async def go():
        server = TestServer(fake.app, host="127.0.0.1")
        await server.start_server()
        try:
            return await body(f"127.0.0.1:{server.port}", server)
        finally:
            await server.close()
    return asyncio.run(go())


def test_error_json_becomes_clear_errors() -> None:
    fake = Fake()

    async def v2(request):
        return web.json_response({})

    async def manifest(request):
        return web.json_response(
            {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown",
                         "detail": {"Tag": "nope"}}]}, status=404)

    async def blob(request):
        return web.json_response(
            {"errors": [{"code": "DENIED", "message": "requested access to the resource "
                         "is denied"}]}, status=403)

    fake.app.router.add_get("/v2/", v2)
    fake.app.router.add_get("/v2/x/manifests/{ref}", manifest)
    fake.app.router.add_get("/v2/x/blobs/{d}", blob)

    async def body(host, server):
        async with RegistryClient(host) as c:
            with pytest.raises(RegistryNotFound, match="manifest for x:nope not found: "
                               "manifest unknown") as e:
                await c.get_manifest("x", "nope")
            assert e.value.status == 404
            with pytest.raises(AuthError, match="denied: requested access") as e2:
                await c.read_blob("x", "sha256:" + "0" * 64)
            assert e2.value.status == 403
    _run(fake, body)


def test_retries_broken_connections_then_gives_up() -> None:
    fake = Fake()
    fails = {"n": 2}

    async def v2(request):
        return web.json_response({})

    async def manifest(request):
        if fails["n"] != 0:
            fails["n"] -= 1
            request.transport.abort()  # the connection breaks before any answer
            return web.Response()
        return web.Response(
            body=b'{"schemaVersion":2}',
            content_type="application/vnd.oci.image.manifest.v1+json")

    fake.app.router.add_get("/v2/", v2)
    fake.app.router.add_get("/v2/x/manifests/{ref}", manifest)
    sleeps: list[float] = []

    async def fake_sleep(s: float) -> None:
        sleeps.append(s)

    async def body(host, server):
        async with RegistryClient(host, sleep=fake_sleep, retries=3) as c:
            m = await c.get_manifest("x", "t")
            assert m.media_type == "application/vnd.oci.image.manifest.v1+json"
            # aiohttp itself retries a dropped pooled connection once, so 1 or 2 of ours.
            assert sleeps in ([0.2], [0.2, 0.4])  # exponential backoff
            fails["n"] = -1
            sleeps.clear()
            with pytest.raises(ConnectionFailed, match="after 4 attempts"):
                await c.get_manifest("x", "t")
            assert sleeps == [0.2, 0.4, 0.8]  # bounded
    _run(fake, body)


def test_token_flow_cached_until_expiry() -> None:
    fake = Fake()
    now = {"t": 1000.0}

    async def v2(request):
        return web.Response(status=401, headers={
            "WWW-Authenticate": f'Bearer realm="http://{request.host}/token",service="svc"'})

    async def token(request):
        fake.tokens += 1
        assert request.query["service"] == "svc"
        assert request.query["scope"] == "repository:x:pull"
        assert request.headers["Authorization"] == Credentials("u", "p").basic_header()
        return web.json_response({"access_token": f"tok{fake.tokens}", "expires_in": 60})

    async def manifest(request):
        if request.headers.get("Authorization") != f"Bearer tok{fake.tokens}":
            return web.Response(status=401, headers={
                "WWW-Authenticate": f'Bearer realm="http://{request.host}/token",'
                                    'service="svc",scope="repository:x:pull"'})
        return web.Response(body=b"{}", content_type="application/json")

    fake.app.router.add_get("/v2/", v2)
    fake.app.router.add_get("/token", token)
    fake.app.router.add_get("/v2/x/manifests/{ref}", manifest)

    async def body(host, server):
        auth = Authenticator(Credentials("u", "p"), clock=lambda: now["t"])
        async with RegistryClient(host, auth=auth) as c:
            await asyncio.gather(*(c.get_manifest("x", "t") for _ in range(5)))
            assert fake.tokens == 1
            now["t"] += 30
            await c.get_manifest("x", "t")
            assert fake.tokens == 1
            now["t"] += 60  # expired: a new token
            await c.get_manifest("x", "t")
            assert fake.tokens == 2
    _run(fake, body)


def test_token_server_refuses() -> None:
    fake = Fake()

    async def v2(request):
        return web.Response(status=401, headers={
            "WWW-Authenticate": f'Bearer realm="http://{request.host}/token",service="svc"'})

    async def token(request):
        return web.json_response({"details": "incorrect username or password"}, status=401)

    fake.app.router.add_get("/v2/", v2)
    fake.app.router.add_get("/token", token)
    fake.app.router.add_get("/v2/x/manifests/{ref}", v2)

    async def body(host, server):
        async with RegistryClient(host, auth=Authenticator(Credentials("u", "bad"))) as c:
            with pytest.raises(AuthError, match="incorrect username or password"):
                await c.get_manifest("x", "t")
    _run(fake, body)


# -- progress strings -----------------------------------------------------------------------


def test_human_size_like_go_units() -> None:
    assert human_size(0) == "0B"
    assert human_size(999) == "999B"
    assert human_size(1000) == "1kB"
    assert human_size(2_150_000) == "2.15MB"
    assert human_size(1_234_567) == "1.235MB"


def test_progress_bar_like_dockerd() -> None:
    assert progress_bar(1_000_000, 2_000_000) == "[" + "=" * 25 + ">" + " " * 25 + "]      1MB/2MB"
    assert progress_bar(2_000_000, 2_000_000) == "[" + "=" * 50 + ">]      2MB/2MB"
    assert progress_bar(0, 0) == ""


def test_docker_hub_mirror_serves_reads() -> None:
    """Reads for docker.io go to the mirror first; the real hub is never contacted."""
    fake = Fake()
    seen: list[str] = []

    async def v2(request):
        seen.append(request.path)
        return web.json_response({})

    async def manifest(request):
        seen.append(request.path)
        return web.Response(body=b'{"schemaVersion":2}',
                            content_type="application/vnd.oci.image.index.v1+json")

    fake.app.router.add_get("/v2/", v2)
    fake.app.router.add_get("/v2/library/busybox/manifests/{ref}", manifest)

    async def body(host, server):
        async with RegistryClient("docker.io", mirrors=[f"http://{host}"]) as c:
            m = await c.get_manifest("library/busybox", "latest")
            assert m.media_type == "application/vnd.oci.image.index.v1+json"
            eps = await c.endpoints()
            assert [e.base for e in eps] == [f"http://{host}", "https://registry-1.docker.io"]
            assert eps[-1].base not in c._pinged
    _run(fake, body)
    assert seen == ["/v2/", "/v2/library/busybox/manifests/latest"]
