"""Errors the API client raises."""

from __future__ import annotations


class ClientError(Exception):
    """The daemon answered with an error status; `message` is its {"message": ...}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return self.message


class DaemonUnreachable(Exception):
    """Nothing answers at the daemon's address."""

    def __init__(self, host: str, reason: str):
        super().__init__(
            f"Cannot connect to the kobako daemon at {host}. Is the kobako daemon running?"
            f" ({reason})")
        self.host = host
        self.reason = reason
