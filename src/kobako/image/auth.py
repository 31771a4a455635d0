"""Registry credentials and authentication, as docker stores and uses them.

Credentials live in docker's config.json (`auths{host:{auth: base64(user:pass)}}`),
optionally delegated to credential helpers (`credsStore`, `credHelpers`) that speak
the docker-credential-helpers protocol on stdin/stdout. Authentication follows the
registry's WWW-Authenticate challenge: Basic, or Bearer with a token fetched from
the realm (docker's token flow), cached per scope until it expires.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import pathlib
import re
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from kobako.image.errors import AuthError, RegistryError
from kobako.image.reference import DEFAULT_DOMAIN, DOCKER_HUB_CONFIG_KEY, normalize_registry
from kobako.linux.files import write_atomic

# Tokens without expires_in are valid for 60 s (docker's minimum).
_DEFAULT_TOKEN_TTL = 60.0


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    # An identity token (OAuth refresh token) some registries hand out at login.
    identity_token: str | None = None

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


class CredentialHelperError(AuthError):
    """A docker-credential-<name> helper failed."""


def default_config_path() -> pathlib.Path:
    base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return pathlib.Path(base) / "config.json"


def config_key(registry: str) -> str:
    """The key docker uses in `auths` for a registry (Docker Hub has its legacy URL)."""
    reg = normalize_registry(registry)
    return DOCKER_HUB_CONFIG_KEY if reg == DEFAULT_DOMAIN else reg


class DockerConfig:
    """docker's config.json: read, and written back atomically keeping unknown keys."""

    def __init__(self, path: str | os.PathLike[str] | None = None):
        self.path = pathlib.Path(path) if path else default_config_path()

    def load(self) -> dict:
        try:
            data = json.loads(self.path.read_text() or "{}")
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as e:
            raise AuthError(f"{self.path}: invalid JSON: {e}") from e
        if not isinstance(data, dict):
            raise AuthError(f"{self.path}: not a JSON object")
        return data

    def save(self, data: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(str(self.path), json.dumps(data, indent="\t") + "\n", 0o600)

    def _helper_for(self, data: dict, key: str) -> str | None:
        helpers = data.get("credHelpers") or {}
        host = normalize_registry(key)
        for candidate in (key, host):
            if candidate in helpers:
                return helpers[candidate]
        return data.get("credsStore") or None

    def get(self, registry: str) -> Credentials | None:
        data = self.load()
        key = config_key(registry)
        helper = self._helper_for(data, key)
        if helper:
            return helper_get(helper, key)
        auths = data.get("auths") or {}
        entry = auths.get(key)
        if entry is None:
            # docker also accepts keys written as URLs ("https://host/v1/", "http://host").
            for k, v in auths.items():
                if config_key(k) == key:
                    entry = v
                    break
        if not entry:
            return None
        user, password = entry.get("username", ""), entry.get("password", "")
        if entry.get("auth"):
            try:
                decoded = base64.b64decode(entry["auth"]).decode()
            except (ValueError, UnicodeDecodeError) as e:
                raise AuthError(f"{self.path}: invalid auth for {key}: {e}") from e
            user, sep, password = decoded.partition(":")
            if not sep:
                raise AuthError(f"{self.path}: invalid auth for {key}: no ':' separator")
        token = entry.get("identitytoken") or None
        if not user and not token:
            return None
        return Credentials(user, password, token)

    def store(self, registry: str, creds: Credentials) -> None:
        data = self.load()
        key = config_key(registry)
        helper = self._helper_for(data, key)
        auths = data.setdefault("auths", {})
        if helper:
            helper_store(helper, key, creds)
            auths[key] = {}  # docker keeps an empty entry so `docker info` lists it
        else:
            raw = f"{creds.username}:{creds.password}".encode()
            entry: dict = {"auth": base64.b64encode(raw).decode()}
            if creds.identity_token:
                entry["identitytoken"] = creds.identity_token
            auths[key] = entry
        self.save(data)

    def erase(self, registry: str) -> bool:
        """Forget a registry's credentials; returns whether there were any."""
        data = self.load()
        key = config_key(registry)
        helper = self._helper_for(data, key)
        found = False
        if helper:
            with contextlib.suppress(CredentialHelperError):
                helper_erase(helper, key)
                found = True
        auths = data.get("auths") or {}
        for k in [k for k in auths if config_key(k) == key]:
            del auths[k]
            found = True
        if found:
            self.save(data)
        return found


def _run_helper(helper: str, action: str, stdin: str) -> str:
    prog = f"docker-credential-{helper}"
    try:
        proc = subprocess.run(
            [prog, action], input=stdin, capture_output=True, text=True, timeout=30
        )
    except FileNotFoundError as e:
        raise CredentialHelperError(f"credential helper {prog} not found") from e
    except subprocess.TimeoutExpired as e:
        raise CredentialHelperError(f"credential helper {prog} {action} timed out") from e
    if proc.returncode != 0:
        msg = (proc.stdout.strip() or proc.stderr.strip() or f"exit {proc.returncode}")
        raise CredentialHelperError(f"{prog} {action}: {msg}")
    return proc.stdout


def helper_get(helper: str, server: str) -> Credentials | None:
    try:
        out = _run_helper(helper, "get", server)
    except CredentialHelperError as e:
        if "credentials not found" in str(e):
            return None
        raise
    try:
        reply = json.loads(out)
    except json.JSONDecodeError as e:
        raise CredentialHelperError(f"docker-credential-{helper} get: bad reply: {e}") from e
    user, secret = reply.get("Username", ""), reply.get("Secret", "")
    if user == "<token>":
        return Credentials("", "", secret)
    return Credentials(user, secret)


def helper_store(helper: str, server: str, creds: Credentials) -> None:
    user = "<token>" if creds.identity_token else creds.username
    secret = creds.identity_token or creds.password
    payload = json.dumps({"ServerURL": server, "Username": user, "Secret": secret})
    _run_helper(helper, "store", payload)


def helper_erase(helper: str, server: str) -> None:
    _run_helper(helper, "erase", server)


# -- WWW-Authenticate ----------------------------------------------------------------------

_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lowercase: "bearer", "basic"
    params: dict[str, str] = field(default_factory=dict)


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse `Bearer realm="...",service="...",scope="..."` (several challenges allowed)."""
    challenges: list[Challenge] = []
    pos = 0
    header = header.strip()
    while pos < len(header):
        m = re.match(r"\s*,?\s*([A-Za-z][A-Za-z0-9_-]*)", header[pos:])
        if not m:
            break
        scheme = m.group(1).lower()
        pos += m.end()
        params: dict[str, str] = {}
        while pos < len(header):
            pm = _PARAM_RE.match(header, pos)
            if not pm:
                break
            value = pm.group(2)
            value = re.sub(r"\\(.)", r"\1", value) if value is not None else pm.group(3)
            params[pm.group(1).lower()] = value
            pos = pm.end()
        challenges.append(Challenge(scheme, params))
    return challenges


# -- the authenticator the registry client uses --------------------------------------------

CredentialLookup = Callable[[str], "Credentials | None"]


@dataclass
class _Token:
    value: str
    expires: float


class Authenticator:
    """Answers a registry's challenges: basic credentials and cached bearer tokens.

    `credentials` is either fixed Credentials (docker's X-Registry-Auth for one
    request) or a lookup by registry name (config.json); None means anonymous.
    """

    def __init__(
        self,
        credentials: Credentials | CredentialLookup | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._credentials = credentials
        self._clock = clock
        self._tokens: dict[tuple[str, str, str], _Token] = {}
        self._challenges: dict[str, Challenge] = {}
        # One lock per (event loop, token key): concurrent requests for one scope share
        # a single token fetch; an Authenticator may outlive an event loop.
        self._locks: dict[tuple[int, tuple[str, str, str]], asyncio.Lock] = {}

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None) -> Authenticator:
        cfg = DockerConfig(path)
        return cls(cfg.get)

    def credentials_for(self, registry: str) -> Credentials | None:
        c = self._credentials
        if c is None or isinstance(c, Credentials):
            return c
        return c(registry)

    def remember_challenge(self, registry: str, header: str) -> Challenge | None:
        """Record the strongest challenge in a 401's WWW-Authenticate header."""
        challenges = parse_www_authenticate(header)
        for scheme in ("bearer", "basic"):
            for ch in challenges:
                if ch.scheme == scheme:
                    self._challenges[registry] = ch
                    return ch
        return None

    def known_challenge(self, registry: str) -> Challenge | None:
        return self._challenges.get(registry)

    async def authorization(
        self,
        session: aiohttp.ClientSession,
        registry: str,
        scopes: list[str],
        *,
        force: bool = False,
    ) -> str | None:
        """The Authorization header value for a request, or None (anonymous)."""
        ch = self._challenges.get(registry)
        if ch is None:
            return None
        creds = self.credentials_for(registry)
        if ch.scheme == "basic":
            if creds is None:
                raise AuthError("unauthorized: authentication required", status=401)
            return creds.basic_header()
        if ch.scheme != "bearer":
            raise AuthError(f"unsupported authentication scheme {ch.scheme!r}", status=401)
        scope = " ".join(sorted(set(scopes)))
        key = (registry, ch.params.get("service", ""), scope)
        lock_key = (id(asyncio.get_running_loop()), key)
        lock = self._locks.setdefault(lock_key, asyncio.Lock())
        async with lock:
            tok = self._tokens.get(key)
            if tok is None or force or tok.expires <= self._clock():
                tok = await self._fetch_token(session, ch, scopes, creds)
                self._tokens[key] = tok
        return "Bearer " + tok.value

    async def _fetch_token(
        self,
        session: aiohttp.ClientSession,
        ch: Challenge,
        scopes: list[str],
        creds: Credentials | None,
    ) -> _Token:
        realm = ch.params.get("realm")
        if not realm:
            raise AuthError("bearer challenge without a realm", status=401)
        query: list[tuple[str, str]] = []
        if ch.params.get("service"):
            query.append(("service", ch.params["service"]))
        for scope in sorted(set(scopes)):
            query.append(("scope", scope))
        headers = {}
        if creds is not None and creds.identity_token:
            # OAuth2 refresh-token grant, as docker does with an identity token.
            form = {
                "grant_type": "refresh_token",
                "refresh_token": creds.identity_token,
                "service": ch.params.get("service", ""),
                "client_id": "kobako",
                "scope": " ".join(sorted(set(scopes))),
            }
            req = session.post(realm, data=form)
        else:
            if creds is not None:
                query.append(("account", creds.username))
                headers["Authorization"] = creds.basic_header()
            req = session.get(realm, params=query, headers=headers)
        try:
            async with req as resp:
                body = await resp.read()
                if resp.status in (401, 403):
                    raise AuthError(
                        f"unauthorized: {_error_text(body) or 'incorrect username or password'}",
                        status=resp.status,
                    )
                if resp.status != 200:
                    raise RegistryError(
                        f"token server {realm} answered {resp.status}: {_error_text(body)}",
                        status=resp.status,
                    )
        except aiohttp.ClientError as e:
            raise RegistryError(f"cannot reach token server {realm}: {e}") from e
        try:
            reply = json.loads(body)
        except json.JSONDecodeError as e:
            raise RegistryError(f"token server {realm}: invalid JSON reply") from e
        value = reply.get("token") or reply.get("access_token")
        if not value:
            raise RegistryError(f"token server {realm}: no token in reply")
        ttl = float(reply.get("expires_in") or _DEFAULT_TOKEN_TTL)
        # Renew a little before the server would refuse it.
        return _Token(value, self._clock() + max(ttl - 5.0, 1.0))


def _error_text(body: bytes) -> str:
    """The message of a registry error body ({"errors":[{code,message}]}) or the text."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return body.decode(errors="replace").strip()[:200]
    if isinstance(data, dict):
        errs = data.get("errors")
        if isinstance(errs, list) and errs:
            parts = []
            for e in errs:
                if isinstance(e, dict):
                    parts.append(str(e.get("message") or e.get("code") or e))
            return "; ".join(parts)
        for k in ("details", "message", "error"):
            if data.get(k):
                return str(data[k])
    return str(data)[:200]


LoginVerifier = Callable[[str, Credentials], Awaitable[None]]


async def login(
    registry: str,
    username: str,
    password: str,
    *,
    config_path: str | os.PathLike[str] | None = None,
    insecure_registries: list[str] | None = None,
    session: aiohttp.ClientSession | None = None,
    save: bool = True,
) -> str:
    """Verify credentials against the registry's /v2/, then store them as docker does.

    Returns docker's "Login Succeeded" status text.
    """
    from kobako.image.registry import RegistryClient  # the client needs this module

    creds = Credentials(username, password)
    auth = Authenticator(creds)
    async with RegistryClient(
        registry, auth=auth, insecure_registries=insecure_registries, session=session
    ) as client:
        await client.verify_login()
    if save:
        DockerConfig(config_path).store(registry, creds)
    return "Login Succeeded"


def logout(registry: str, *, config_path: str | os.PathLike[str] | None = None) -> str:
    """Forget stored credentials; docker's messages for both outcomes."""
    key = config_key(registry)
    if DockerConfig(config_path).erase(registry):
        return f"Removing login credentials for {key}"
    return f"Not logged in to {key}"
