"""Basic (htpasswd) and Bearer token auth against a real docker-registry."""

from __future__ import annotations

import asyncio
import json
import pathlib

import pytest
from registry_fixtures import Registry, TokenServer, htpasswd_auth, put_image, random_layer

from kobako.image.auth import Authenticator, Credentials, DockerConfig, login, logout
from kobako.image.errors import AuthError
from kobako.image.pull import pull
from kobako.image.push import push
from kobako.image.store import ContentStore

pytestmark = pytest.mark.root

USER, PASSWORD = "kobako-test-user", "s3cret-pw"


@pytest.fixture
def basic_registry(tmp_path: pathlib.Path):
    with Registry(tmp_path, auth=htpasswd_auth(tmp_path, {USER: PASSWORD})) as reg:
        yield reg


@pytest.fixture(params=["token", "access_token"])
def token_registry(request, tmp_path: pathlib.Path):
    server = TokenServer(tmp_path, {USER: PASSWORD}, token_field=request.param).start()
    try:
        with Registry(tmp_path, auth=server.registry_auth()) as reg:
            yield reg, server
    finally:
        server.stop()


def _round_trip(reg: Registry, tmp_path: pathlib.Path, auth) -> None:
    src = ContentStore(tmp_path / "src")
    dst = ContentStore(tmp_path / "dst")
    img = put_image(src, [random_layer(20_000), random_layer(20_000)])
    ref = f"{reg.host}/kobako-test/private:1"
    asyncio.run(push(src, ref, img.manifest_digest, auth=auth))
    # Cross-repo mount needs pull on the source too: the scopes must carry both.
    res = asyncio.run(push(src, f"{reg.host}/kobako-test/other:1", img.manifest_digest,
                           auth=auth, mount_sources=lambda d: [ref]))
    assert len(res.mounted) == 3
    result = asyncio.run(pull(dst, ref, auth=auth))
    assert result.manifest_digest == img.manifest_digest
    assert result.config_digest == img.config_digest


def test_basic_auth_round_trip(basic_registry: Registry, tmp_path: pathlib.Path) -> None:
    _round_trip(basic_registry, tmp_path, Credentials(USER, PASSWORD))


def test_basic_auth_refuses_anonymous_and_wrong_password(
    basic_registry: Registry, tmp_path: pathlib.Path
) -> None:
    dst = ContentStore(tmp_path / "dst")
    ref = f"{basic_registry.host}/kobako-test/private:1"
    with pytest.raises(AuthError) as e:
        asyncio.run(pull(dst, ref))
    assert e.value.status == 401
    with pytest.raises(AuthError, match="unauthorized"):
        asyncio.run(pull(dst, ref, auth=Credentials(USER, "wrong")))


def test_token_auth_round_trip(token_registry, tmp_path: pathlib.Path) -> None:
    reg, server = token_registry
    auth = Authenticator(Credentials(USER, PASSWORD))
    _round_trip(reg, tmp_path, auth)
    assert server.requests, "the registry never sent us to the token server"
    assert all(r["user"] == USER and r["service"] == "kobako-test-registry"
               for r in server.requests)
    mount_scopes = [r["scopes"] for r in server.requests
                    if "repository:kobako-test/private:pull" in r["scopes"]
                    and "repository:kobako-test/other:pull,push" in r["scopes"]]
    assert mount_scopes, server.requests


def test_token_auth_anonymous_is_refused(token_registry, tmp_path: pathlib.Path) -> None:
    reg, _ = token_registry
    src = ContentStore(tmp_path / "src")
    img = put_image(src, [random_layer(100)])
    with pytest.raises(AuthError):
        asyncio.run(push(src, f"{reg.host}/kobako-test/anon:1", img.manifest_digest))


def test_token_is_cached_per_scope(token_registry, tmp_path: pathlib.Path) -> None:
    reg, server = token_registry
    src = ContentStore(tmp_path / "src")
    img = put_image(src, [random_layer(100) for _ in range(4)])
    auth = Authenticator(Credentials(USER, PASSWORD))
    asyncio.run(push(src, f"{reg.host}/kobako-test/cache:1", img.manifest_digest, auth=auth))
    # One token for the push scope, however many blobs went up.
    assert len(server.requests) == 1, server.requests


def test_login_logout_config_json(basic_registry: Registry, tmp_path: pathlib.Path) -> None:
    cfg = tmp_path / "docker-config" / "config.json"
    host = basic_registry.host
    with pytest.raises(AuthError):
        asyncio.run(login(host, USER, "wrong", config_path=cfg))
    assert not cfg.exists()
    assert asyncio.run(login(host, USER, PASSWORD, config_path=cfg)) == "Login Succeeded"
    data = json.loads(cfg.read_text())
    assert data["auths"][host]["auth"]  # base64(user:pass), as docker writes it
    assert (cfg.stat().st_mode & 0o777) == 0o600
    # The stored credentials are what pull uses.
    assert DockerConfig(cfg).get(host) == Credentials(USER, PASSWORD)
    src = ContentStore(tmp_path / "src")
    img = put_image(src, [random_layer(100)])
    asyncio.run(push(src, f"{host}/kobako-test/cfg:1", img.manifest_digest,
                     auth=Authenticator.from_config(cfg)))
    assert logout(host, config_path=cfg) == f"Removing login credentials for {host}"
    assert DockerConfig(cfg).get(host) is None
    assert logout(host, config_path=cfg) == f"Not logged in to {host}"


def test_login_token_registry(token_registry, tmp_path: pathlib.Path) -> None:
    reg, _ = token_registry
    cfg = tmp_path / "cfg.json"
    assert asyncio.run(login(reg.host, USER, PASSWORD, config_path=cfg)) == "Login Succeeded"
    with pytest.raises(AuthError, match="incorrect username or password"):
        asyncio.run(login(reg.host, USER, "nope", config_path=cfg, save=False))
