"""Throttling failed logins, per source address and per agent name (pure, in memory).

Per process: with several gateway processes each one counts its own failures, so the
effective limit is the setting times the number of processes. The point is to make
guessing slow, and a token carries 256 random bits.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

WINDOW_SECONDS = 60.0
# Bound on the keys remembered, so that a flood of spoofed names cannot grow memory.
MAX_KEYS = 100_000


class LoginThrottle:
    """Counts failures in a sliding minute.

    >>> throttle = LoginThrottle(per_minute=3)
    >>> for _ in range(3): throttle.failed("10.0.0.1", "billing-bot")
    >>> throttle.blocked("10.0.0.1", "other-bot"), throttle.blocked("10.0.0.2", "billing-bot")
    (True, True)
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _count(self, key: str, now: float) -> int:
        window = self._failures.get(key)
        if window is None:
            return 0
        while window and window[0] <= now - WINDOW_SECONDS:
            window.popleft()
        if not window:
            del self._failures[key]
            return 0
        return len(window)

    def blocked(self, address: str, agent: str) -> bool:
        now = self.clock()
        return (
            self._count("addr:" + address, now) >= self.per_minute
            or self._count("agent:" + agent, now) >= self.per_minute
        )

    def failed(self, address: str, agent: str) -> None:
        now = self.clock()
        if len(self._failures) >= MAX_KEYS:
            self._prune(now)
        for key in ("addr:" + address, "agent:" + agent):
            self._failures.setdefault(key, deque()).append(now)

    def _prune(self, now: float) -> None:
        for key in list(self._failures):
            self._count(key, now)
        if len(self._failures) >= MAX_KEYS:
            # Still full of fresh failures: forget the oldest keys rather than grow.
            for key in list(self._failures)[: MAX_KEYS // 10]:
                del self._failures[key]
