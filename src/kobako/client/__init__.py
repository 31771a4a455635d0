"""kobako's API client (used by the CLI and tests)."""

from kobako.client.api import APIClient, Hijacked, Response
from kobako.client.errors import ClientError, DaemonUnreachable

__all__ = ["APIClient", "ClientError", "DaemonUnreachable", "Hijacked", "Response"]
