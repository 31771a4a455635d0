"""Docker image references, parsed and normalized as docker does.

The grammar and the normalization rules follow distribution/reference
(`reference.go`, `regexp.go`, `normalize.go`): `busybox` is
`docker.io/library/busybox:latest`, the first path component is a registry
host only if it contains "." or ":" or is "localhost", and a missing tag means
"latest" unless a digest is given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kobako.image.errors import InvalidReference

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
# The key docker's config.json uses for Docker Hub credentials.
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = _ALNUM + r"(?:" + _SEPARATOR + _ALNUM + r")*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN_NAME = _DOMAIN_COMPONENT + r"(?:\." + _DOMAIN_COMPONENT + r")*"
_HOST = r"(?:" + _DOMAIN_NAME + r"|" + _IPV6 + r")"
_DOMAIN = _HOST + r"(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = r"(?:" + _DOMAIN + r"/)?" + _PATH_COMPONENT + r"(?:/" + _PATH_COMPONENT + r")*"

_REFERENCE_RE = re.compile(
    r"^(" + _NAME + r")(?::(" + _TAG + r"))?(?:@(" + _DIGEST + r"))?$"
)
_ANCHORED_NAME_RE = re.compile(
    r"^(?:(" + _DOMAIN + r")/)?(" + _PATH_COMPONENT + r"(?:/" + _PATH_COMPONENT + r")*)$"
)
_IDENTIFIER_RE = re.compile(r"^[a-f0-9]{64}$")
_TAG_RE = re.compile(r"^" + _TAG + r"$")
_DIGEST_RE = re.compile(r"^" + _DIGEST + r"$")
_SHA256_RE = re.compile(r"^sha256:[a-f0-9]{64}$")

INVALID_FORMAT = "invalid reference format"


@dataclass(frozen=True)
class Reference:
    """A normalized, fully qualified image reference."""

    registry: str  # "docker.io", "localhost:5000", "127.0.0.1:5000"
    repository: str  # "library/busybox"
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The familiar repository name: "busybox", "localhost:5000/a/b"."""
        return familiar_name(self.registry, self.repository)

    @property
    def full_name(self) -> str:
        """The normalized repository name: "docker.io/library/busybox"."""
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        """The host:port the registry API is served from."""
        return registry_api_host(self.registry)

    def familiar(self) -> str:
        """The short string docker shows: "busybox:latest", "x/y@sha256:..."."""
        return self.name + self._suffix()

    def with_tag(self, tag: str) -> Reference:
        if not _TAG_RE.match(tag):
            raise InvalidReference(f"{INVALID_FORMAT}: invalid tag {tag!r}")
        return Reference(self.registry, self.repository, tag, None)

    def with_digest(self, digest: str) -> Reference:
        if not _DIGEST_RE.match(digest):
            raise InvalidReference(f"{INVALID_FORMAT}: invalid digest {digest!r}")
        return Reference(self.registry, self.repository, None, digest)

    @property
    def reference(self) -> str:
        """What goes after /manifests/ in the registry API: the digest, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def _suffix(self) -> str:
        out = ""
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out

    def __str__(self) -> str:
        return self.full_name + self._suffix()


def familiar_name(registry: str, repository: str) -> str:
    if registry == DEFAULT_DOMAIN:
        if repository.startswith(OFFICIAL_REPO_PREFIX) and "/" not in repository[8:]:
            return repository[len(OFFICIAL_REPO_PREFIX):]
        return repository
    return f"{registry}/{repository}"


def registry_api_host(registry: str) -> str:
    """docker.io's API lives on registry-1.docker.io; every other registry on itself."""
    if registry in (DEFAULT_DOMAIN, LEGACY_DEFAULT_DOMAIN):
        return DOCKER_HUB_API_HOST
    return registry


def normalize_registry(host: str) -> str:
    """The registry name docker uses for a login/config key or a host typed by a user."""
    host = host.strip()
    for prefix in ("https://", "http://"):
        if host.startswith(prefix):
            host = host[len(prefix):]
    host = host.split("/", 1)[0]
    if host in (LEGACY_DEFAULT_DOMAIN, DOCKER_HUB_API_HOST, DEFAULT_DOMAIN, ""):
        return DEFAULT_DOMAIN
    return host


def _split_docker_domain(name: str) -> tuple[str, str]:
    i = name.find("/")
    head = name[:i] if i >= 0 else ""
    if i == -1 or (
        not any(c in head for c in ".:") and head != "localhost" and head.lower() == head
    ):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = head, name[i + 1:]
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def parse(text: str, *, default_tag: bool = True) -> Reference:
    """Parse a reference as `docker pull` does (ParseNormalizedNamed + TagNameOnly).

    With default_tag, a reference with neither tag nor digest gets "latest".
    """
    if not text:
        raise InvalidReference(INVALID_FORMAT)
    if _IDENTIFIER_RE.match(text):
        raise InvalidReference(
            f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings"
        )
    domain, remainder = _split_docker_domain(text)
    tag_sep = remainder.find(":")
    remote_name = remainder[:tag_sep] if tag_sep > -1 else remainder
    # An "@digest" without a tag: the repository ends before "@".
    remote_name = remote_name.split("@", 1)[0]
    if remote_name.lower() != remote_name:
        raise InvalidReference(
            f"{INVALID_FORMAT}: repository name ({remote_name}) must be lowercase"
        )
    full = f"{domain}/{remainder}"
    m = _REFERENCE_RE.match(full)
    if not m:
        raise InvalidReference(INVALID_FORMAT)
    name, tag, digest = m.group(1), m.group(2), m.group(3)
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReference(
            f"{INVALID_FORMAT}: repository name must not be more than "
            f"{NAME_TOTAL_LENGTH_MAX} characters"
        )
    if digest is not None and digest.startswith("sha256:") and not _SHA256_RE.match(digest):
        raise InvalidReference(f"{INVALID_FORMAT}: invalid checksum digest format")
    nm = _ANCHORED_NAME_RE.match(name)
    assert nm is not None  # the reference regexp already matched the name
    registry, repository = nm.group(1), nm.group(2)
    if registry != domain:
        # "a_b.c/x": split as a host, but not a valid one (Go would give an empty domain).
        raise InvalidReference(f"{INVALID_FORMAT}: invalid registry host {domain!r}")
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(registry, repository, tag, digest)


def parse_repository(text: str) -> Reference:
    """Parse a name without tag or digest (for `docker push name` or `login`)."""
    ref = parse(text, default_tag=False)
    return ref


def is_digest(text: str) -> bool:
    return bool(_DIGEST_RE.match(text))


def is_tag(text: str) -> bool:
    return bool(_TAG_RE.match(text))
