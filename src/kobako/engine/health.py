"""Healthchecks: Config.Healthcheck probes run inside the container, as Docker runs them.

Status starts as "starting"; a passing probe makes it "healthy"; `Retries` failing
probes in a row make it "unhealthy". Failures during the start period do not count
(a success there still makes it healthy). State.Health keeps the last five results;
each change of status is an event ("health_status: healthy").
"""

from __future__ import annotations

import asyncio
import time

from kobako.timestamps import now_rfc3339

NANO = 1_000_000_000
DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
MAX_LOG_ENTRIES = 5
MAX_OUTPUT = 4096


def probe_command(healthcheck: dict | None) -> list[str] | None:
    """The probe's argv, or None when there is no healthcheck (or it is disabled)."""
    test = (healthcheck or {}).get("Test") or []
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD":
        return list(test[1:]) or None
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(test[1:])]
    return list(test)  # a bare command, as older API clients send it


def _seconds(value, default: float) -> float:
    return value / NANO if value else default


class HealthMonitor:
    """Runs one container's probes while it runs; updates State.Health."""

    def __init__(self, service, container, healthcheck: dict):
        self.service = service
        self.container = container
        self.command = probe_command(healthcheck)
        self.interval = _seconds(healthcheck.get("Interval"), DEFAULT_INTERVAL)
        self.timeout = _seconds(healthcheck.get("Timeout"), DEFAULT_TIMEOUT)
        self.start_period = _seconds(healthcheck.get("StartPeriod"), 0.0)
        self.start_interval = _seconds(healthcheck.get("StartInterval"), self.interval)
        self.retries = healthcheck.get("Retries") or DEFAULT_RETRIES
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.container.state["Health"] = {"Status": "starting", "FailingStreak": 0, "Log": []}
        self.task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _run(self) -> None:
        started = time.monotonic()
        while self.container.running:
            in_start_period = time.monotonic() - started < self.start_period
            await asyncio.sleep(self.start_interval if in_start_period else self.interval)
            if not self.container.running:
                return
            if self.container.state.get("Paused"):
                continue
            in_start_period = time.monotonic() - started < self.start_period
            await self._probe_once(in_start_period)

    async def _probe_once(self, in_start_period: bool) -> None:
        start = now_rfc3339()
        try:
            exit_code, output = await self._exec()
        except Exception as err:  # noqa: BLE001 - a probe that cannot run is a failing probe
            exit_code, output = -1, str(err)
        health = self.container.state.setdefault(
            "Health", {"Status": "starting", "FailingStreak": 0, "Log": []})
        health["Log"] = (health.get("Log") or [])[-(MAX_LOG_ENTRIES - 1):] + [
            {"Start": start, "End": now_rfc3339(), "ExitCode": exit_code, "Output": output}]
        old = health["Status"]
        if exit_code == 0:
            health["FailingStreak"] = 0
            health["Status"] = "healthy"
        elif not in_start_period:
            health["FailingStreak"] = health.get("FailingStreak", 0) + 1
            if health["FailingStreak"] >= self.retries:
                health["Status"] = "unhealthy"
        self.service.store.update(self.container.doc)
        if health["Status"] != old:
            self.service._event(self.container, f"health_status: {health['Status']}")

    async def _exec(self) -> tuple[int, str]:
        execs = self.service.execs
        created = await execs.create(self.container, {
            "Cmd": self.command, "AttachStdout": True, "AttachStderr": True,
        })
        instance = execs.get(created["Id"])
        stream = await execs.start(instance.id, detach=False)
        chunks: list[bytes] = []

        async def collect() -> None:
            async for _stream, data in stream.output:
                if sum(map(len, chunks)) < MAX_OUTPUT:
                    chunks.append(data)

        try:
            await asyncio.wait_for(collect(), self.timeout)
        except TimeoutError:
            _kill(instance.pid)
            return -1, f"Health check exceeded timeout ({self.timeout:g}s)"
        finally:
            execs.forget(instance.id)
        output = b"".join(chunks)[:MAX_OUTPUT].decode(errors="replace")
        code = instance.exit_code
        return (code if code is not None else -1), output


def _kill(pid: int) -> None:
    import os
    import signal

    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
