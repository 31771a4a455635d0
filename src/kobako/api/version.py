"""API versions: the /v1.NN/ prefix, the supported range and the daemon's version facts."""

from __future__ import annotations

import platform
import re

from kobako import __version__ as _pkg_version

MIN_API_VERSION = "1.24"
MAX_API_VERSION = "1.47"
DEFAULT_API_VERSION = MAX_API_VERSION

VERSION_PATTERN = r"v[0-9]+\.[0-9]+"
_VERSION_RE = re.compile(r"^[0-9]+\.[0-9]+$")

SERVER_VERSION = _pkg_version
GIT_COMMIT = "kobako"
GO_VERSION = "python" + platform.python_version()


def parse(version: str) -> tuple[int, int]:
    major, minor = version.split(".", 1)
    return int(major), int(minor)


def check_request_version(version: str) -> str | None:
    """Docker's message when a client's /v1.NN/ is out of range, else None."""
    if not _VERSION_RE.match(version):
        return f"invalid API version {version!r}"
    if parse(version) < parse(MIN_API_VERSION):
        return (f"client version {version} is too old. Minimum supported API version is "
                f"{MIN_API_VERSION}, please upgrade your client to a newer version")
    if parse(version) > parse(MAX_API_VERSION):
        return (f"client version {version} is too new. Maximum supported API version is "
                f"{MAX_API_VERSION}")
    return None


def server_header() -> str:
    return f"kobako/{SERVER_VERSION} (linux)"
