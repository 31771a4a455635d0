"""Errors raised by the image library.

The API layer maps them onto Docker's status codes in one place:
NotFound -> 404, Conflict -> 409, InvalidReference/InvalidDigest/InvalidParameter -> 400,
AuthError -> 401, everything else -> 500.
"""

from __future__ import annotations


class ImageError(Exception):
    """Base class of every error the image library raises."""


class NotFound(ImageError):
    """No such image, blob, manifest or snapshot."""


class InvalidReference(ImageError, ValueError):
    """An image reference (name, tag or digest) that does not parse."""


class InvalidDigest(InvalidReference):
    """A digest string that is not `<algorithm>:<hex>` of a supported algorithm."""


class InvalidParameter(ImageError, ValueError):
    """A malformed argument: a bad filter, a bad --change line, a bad archive."""


class DigestMismatch(ImageError):
    """Content does not match its digest (or its announced size)."""

    def __init__(self, message: str, expected: str | None = None, actual: str | None = None):
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class UnsupportedMediaType(ImageError):
    """A manifest, config or layer media type this library does not understand."""

    def __init__(self, media_type: str | None, where: str = ""):
        what = f" in {where}" if where else ""
        super().__init__(f"unsupported media type {media_type!r}{what}")
        self.media_type = media_type


class RegistryError(ImageError):
    """A registry-side failure; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class AuthError(RegistryError):
    """The registry refused our credentials (or we had none)."""


class Conflict(ImageError):
    """The operation conflicts with current state, e.g. the image is used by a container."""


class UnsafeArchive(ImageError):
    """A layer or archive tries to escape its root or is otherwise malformed."""
