"""Restart policies: no, always, unless-stopped, on-failure[:max], with Docker's back-off.

Docker's restart manager waits 100 ms before the first restart and doubles the wait
each time, up to a minute; a container that ran for 10 seconds or more starts over
at 100 ms.
"""

from __future__ import annotations

INITIAL_DELAY = 0.1
MAX_DELAY = 60.0
RESET_AFTER = 10.0  # seconds of running that reset the back-off


NAMES = ("no", "always", "on-failure", "unless-stopped")


class RestartPolicy:
    def __init__(self, policy: dict | None):
        policy = policy or {}
        self.name = policy.get("Name") or "no"
        self.max_retries = int(policy.get("MaximumRetryCount") or 0)

    @staticmethod
    def problem(policy: dict | None) -> str | None:
        """What dockerd (25+) says of a policy it refuses, else None. An empty name is
        "no" with any count (older clients sent that)."""
        name, count = (policy or {}).get("Name") or "", (policy or {}).get("MaximumRetryCount")
        count = count or 0
        if name == "on-failure" and count < 0:
            return "invalid restart policy: maximum retry count cannot be negative"
        if name in ("no", "always", "unless-stopped") and count != 0:
            return ("invalid restart policy: maximum retry count can only be used with "
                    "'on-failure'" + (" and cannot be negative" if count < 0 else ""))
        if name not in ("", *NAMES):
            return (f"invalid restart policy: unknown policy '{name}'; use one of "
                    + ", ".join(f"'{n}'" for n in NAMES[:-1]) + f", or '{NAMES[-1]}'")
        return None

    def should_restart(self, exit_code: int, restart_count: int, manually_stopped: bool) -> bool:
        """After an exit: whether to start the container again."""
        if manually_stopped:
            return False
        if self.name in ("always", "unless-stopped"):
            return True
        if self.name == "on-failure":
            return exit_code != 0 and (self.max_retries == 0 or restart_count < self.max_retries)
        return False

    def start_with_daemon(self, exit_code: int, restart_count: int,
                          manually_stopped: bool) -> bool:
        """At daemon start, for a container that is not running."""
        if self.name == "always":
            return True
        if self.name == "on-failure":  # a failure with retries left, as an exit would
            return self.should_restart(exit_code, restart_count, manually_stopped)
        return self.name == "unless-stopped" and not manually_stopped


def next_delay(previous: float, ran_for: float) -> float:
    if ran_for >= RESET_AFTER or previous <= 0:
        return INITIAL_DELAY
    return min(previous * 2, MAX_DELAY)
