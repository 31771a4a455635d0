"""The event bus: Docker's message shape, since/until replay, filters."""

from __future__ import annotations

import asyncio
import time

import pytest

from kobako.engine.errors import InvalidParameter
from kobako.engine.events import EventBus, EventFilter, parse_timestamp


def test_parse_timestamp_forms():
    now = 1000.0
    assert parse_timestamp("12.5", now) == 12.5
    assert parse_timestamp("10m", now) == now - 600
    assert parse_timestamp("1h30m", now) == now - 5400
    assert parse_timestamp("", now) is None
    with pytest.raises(InvalidParameter):
        parse_timestamp("yesterday", now)
    with pytest.raises(InvalidParameter):
        parse_timestamp("10", now) and parse_timestamp("10x", now)


def test_publish_shape():
    bus = EventBus()
    ev = bus.publish("container", "die", "abc", {"name": "n", "image": "busybox",
                                                "exitCode": "0"})
    assert ev["Type"] == "container" and ev["Action"] == "die"
    assert ev["Actor"] == {"ID": "abc", "Attributes": {"name": "n", "image": "busybox",
                                                       "exitCode": "0"}}
    assert ev["status"] == "die" and ev["id"] == "abc" and ev["from"] == "busybox"
    assert ev["time"] == ev["timeNano"] // 1_000_000_000


def test_filters():
    bus = EventBus()
    c = bus.publish("container", "exec_start: sh", "abc123", {"name": "web", "app": "x"})
    i = bus.publish("image", "tag", "sha256:1", {"name": "busybox:latest"})
    assert EventFilter({"type": ["container"]}).matches(c)
    assert not EventFilter({"type": ["container"]}).matches(i)
    assert EventFilter({"event": ["exec_start"]}).matches(c)
    assert EventFilter({"container": ["web"]}).matches(c)
    assert EventFilter({"container": ["abc"]}).matches(c)
    assert not EventFilter({"container": ["other"]}).matches(c)
    assert EventFilter({"label": ["app=x"]}).matches(c)
    assert not EventFilter({"label": ["app=y"]}).matches(c)
    assert EventFilter({"image": ["busybox:latest"]}).matches(i)
    assert EventFilter({"type": ["image"], "event": ["tag"]}).matches(i)
    with pytest.raises(InvalidParameter):
        EventFilter({"nope": ["x"]})


def test_subscribe_replays_since_and_stops_at_until():
    async def main():
        bus = EventBus()
        t0 = time.time()
        bus.publish("container", "create", "a", when=t0 - 10)
        bus.publish("container", "start", "a", when=t0 - 5)
        got = []
        async for ev in bus.subscribe(since=t0 - 7, until=time.time() + 0.2):
            got.append(ev["Action"])
        assert got == ["start"]
        # live events arrive, and the subscriber is removed afterwards
        received = []

        async def consume():
            async for ev in bus.subscribe(until=time.time() + 0.5):
                received.append(ev["Action"])

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        bus.publish("container", "die", "a")
        await task
        assert received == ["die"]
        assert bus.subscriber_count == 0
    asyncio.run(main())


def test_history_is_bounded():
    bus = EventBus(history=3)
    for i in range(10):
        bus.publish("container", "create", str(i))
    assert [e["Actor"]["ID"] for e in bus._history] == ["7", "8", "9"]
