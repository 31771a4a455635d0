"""Shared CLI plumbing: the per-invocation state and the error that ends a command."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, NoReturn

import click

if TYPE_CHECKING:
    from kobako.client.api import APIClient


class CLIError(Exception):
    """Ends the command with `message` on stderr (if any) and exit status `code`."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.message = message
        self.code = code


class State:
    def __init__(self, host: str | None = None, debug: bool = False):
        self.host = host
        self.debug = debug
        self._client: APIClient | None = None

    @property
    def client(self) -> APIClient:
        if self._client is None:
            from kobako.client.api import APIClient

            self._client = APIClient(self.host)
        return self._client


# the commands' decorator for the State the top-level group makes
pass_state = click.make_pass_decorator(State)


def fail(message: str, code: int = 1) -> NoReturn:
    raise CLIError(message, code)


def err(message: str) -> None:
    print(message, file=sys.stderr)


def parse_filters(items: Iterable[str]) -> dict[str, list[str]]:
    """docker's repeated --filter key=value into the API's filters map."""
    out: dict[str, list[str]] = {}
    for item in items:
        if "=" not in item:
            raise CLIError(f"bad format of filter (expected name=value): {item}")
        k, v = item.split("=", 1)
        out.setdefault(k.strip().lower(), []).append(v)
    return out
