"""An in-process event bus producing Docker's event messages.

Services call `publish()`; `GET /events` calls `subscribe()` which replays the
buffered events newer than `since`, then follows live ones until `until` (or
forever). The message format is Docker's (both the legacy `status/id/from` keys
and the `Type/Action/Actor` ones), so the docker CLI and docker-py read it as is.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kobako.engine.errors import InvalidParameter

EVENT_TYPES = ("container", "image", "network", "volume", "daemon", "plugin", "node",
               "service", "secret", "config", "builder")
_FILTER_KEYS = {"container", "event", "image", "label", "type", "volume", "network",
                "daemon", "plugin", "scope"}


def parse_timestamp(value: str | None, now: float | None = None) -> float | None:
    """Parse Docker's since/until forms: unix seconds (with fraction) or a Go duration ago."""
    if value is None or value == "":
        return None
    now = time.time() if now is None else now
    try:
        return float(value)
    except ValueError:
        pass
    units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    total, num = 0.0, ""
    i = 0
    while i < len(value):
        ch = value[i]
        if ch.isdigit() or ch == ".":
            num += ch
            i += 1
            continue
        unit = value[i:i + 2] if value[i:i + 2] in units else ch
        if unit not in units or not num:
            raise InvalidParameter(f"invalid timestamp or duration: {value!r}")
        total += float(num) * units[unit]
        num = ""
        i += len(unit)
    if num:
        raise InvalidParameter(f"invalid timestamp or duration: {value!r}")
    return now - total


@dataclass
class EventFilter:
    """Docker's event filters: values within a key are OR'ed, keys are AND'ed."""

    filters: Mapping[str, Iterable[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in self.filters:
            if key not in _FILTER_KEYS:
                raise InvalidParameter(f"invalid filter '{key}'")

    def matches(self, ev: Mapping[str, Any]) -> bool:
        actor = ev.get("Actor", {})
        attrs = actor.get("Attributes", {}) or {}
        for key, values in self.filters.items():
            values = list(values)
            if not values:
                continue
            if key == "type":
                ok = ev.get("Type") in values
            elif key == "event":
                action = ev.get("Action", "")
                ok = action in values or action.split(":", 1)[0] in values
            elif key == "scope":
                ok = ev.get("scope") in values
            elif key == "label":
                ok = any(_label_match(attrs, v) for v in values)
            elif key == "image":
                ok = ev.get("Type") in ("container", "image") and (
                    attrs.get("image") in values or actor.get("ID") in values
                    or attrs.get("name") in values or ev.get("from") in values)
            else:  # container, volume, network, daemon, plugin: match the actor
                ok = ev.get("Type") == key and (
                    actor.get("ID") in values or attrs.get("name") in values
                    or any(str(actor.get("ID", "")).startswith(v) for v in values if len(v) >= 3))
            if not ok:
                return False
        return True


def _label_match(attrs: Mapping[str, str], spec: str) -> bool:
    if "=" in spec:
        k, v = spec.split("=", 1)
        return attrs.get(k) == v
    return spec in attrs


class EventBus:
    """Fan-out of events to subscribers, with a bounded replay buffer for `since`."""

    def __init__(self, history: int = 1024):
        self._history: deque[dict[str, Any]] = deque(maxlen=history)
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()

    def publish(self, type_: str, action: str, actor_id: str,
                attributes: Mapping[str, str] | None = None, scope: str = "local",
                when: float | None = None) -> dict[str, Any]:
        now_ns = time.time_ns() if when is None else int(when * 1e9)
        attrs = dict(attributes or {})
        ev: dict[str, Any] = {
            "Type": type_, "Action": action,
            "Actor": {"ID": actor_id, "Attributes": attrs},
            "scope": scope, "time": now_ns // 1_000_000_000, "timeNano": now_ns,
        }
        if type_ in ("container", "image"):
            # the legacy fields docker clients before 1.22 read
            ev["status"] = action
            ev["id"] = actor_id
            if "image" in attrs:
                ev["from"] = attrs["image"]
        self._history.append(ev)
        for q in list(self._subscribers):
            if q.qsize() < 10_000:  # a stuck subscriber must not grow memory forever
                q.put_nowait(ev)
        return ev

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    async def subscribe(self, since: float | None = None, until: float | None = None,
                        filters: EventFilter | None = None) -> AsyncIterator[dict[str, Any]]:
        """Yield matching events; stops at `until` (absolute unix time) when given."""
        flt = filters or EventFilter()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._subscribers.add(queue)
        replayed: set[int] = set()
        try:
            if since is not None:
                snapshot = list(self._history)
                replayed = {id(ev) for ev in snapshot}
                for ev in snapshot:
                    t = ev["timeNano"] / 1e9
                    if t < since or (until is not None and t > until):
                        continue
                    if flt.matches(ev):
                        yield ev
            while True:
                timeout = None
                if until is not None:
                    timeout = until - time.time()
                    if timeout <= 0:
                        return
                try:
                    ev = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    return
                if id(ev) in replayed:
                    continue  # already sent from the replay buffer
                if flt.matches(ev):
                    yield ev
        finally:
            self._subscribers.discard(queue)
